"""``sf.tl.histospace``: predict spatial gene expression from the H&E image alone (HistoSPACE)."""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Sequence
from typing import Any, Literal

import numpy as np

from .. import _keys as K
from .. import _logging as log
from .. import data
from .._docs import inject_docs
from .._errors import InputError
from .._results import record, result_uns
from .._spots import Spots, get_spots, is_spatialdata, selection
from ..models import HistoSPACE

__all__ = ["histospace"]

#: normalisation of the targets (library size 1e4, then log1p), recorded in the model's registry
NORMALISATION = {"target_sum": 1e4, "log1p": True}
_IMAGE_HINT = "HistoSPACE predicts expression from the H&E image; attach the section's image to the SpatialData."


def _check_args(refs: list[Any], model: HistoSPACE | None, genes: Sequence[str] | None, **values: Any) -> None:
    """Refuse arguments no run can use, before anything is resolved."""
    if model is not None and refs:
        raise InputError("Give either reference (to train a model) or model (a trained one), not both.")
    if model is not None:
        if not isinstance(model, HistoSPACE):
            raise InputError(f"model must be an sf.models.HistoSPACE, got {type(model).__name__}.")
        if not model.is_trained:
            raise InputError("The HistoSPACE model is not trained; train it with sf.tl.histospace(..., reference=...).")
        if genes is not None and list(map(str, genes)) != model.genes:
            raise InputError("genes cannot be changed for a trained model; leave genes=None to predict its genes.")
    for name in ("epochs", "batch_size"):
        if not isinstance(values[name], int | np.integer) or values[name] < 1:
            raise InputError(f"{name} must be a positive integer, got {values[name]!r}.")
    if values["loss"] not in ("huber", "mse"):
        raise InputError(f"loss must be 'huber' or 'mse', got {values['loss']!r}.")
    if not (isinstance(values["lr"], int | float) and values["lr"] > 0):
        raise InputError(f"lr must be a positive number, got {values['lr']!r}.")
    if not isinstance(values["key_added"], str) or not values["key_added"]:
        raise InputError(f"key_added must be a non-empty string, got {values['key_added']!r}.")
    if not 0.0 <= values["val_fraction"] < 0.9:
        raise InputError(f"val_fraction must be in [0, 0.9), got {values['val_fraction']}.")
    if values["stain"] not in (None, "macenko", "reinhard"):
        raise InputError(f"stain must be None, 'macenko' or 'reinhard', got {values['stain']!r}.")
    if not values["size"] > 0:
        raise InputError(f"size must be positive (in spot diameters), got {values['size']}.")
    if values["validation"] not in ("section", "blocks", None):
        raise InputError(f"validation must be 'section', 'blocks' or None, got {values['validation']!r}.")
    if values["encoder"] not in ("tissue", "histospace"):
        raise InputError(f"encoder must be 'tissue' or 'histospace', got {values['encoder']!r}.")
    if values["head"] not in ("mlp", "conv", "ridge"):
        raise InputError(f"head must be 'mlp', 'conv' or 'ridge', got {values['head']!r}.")


def _validation_masks(refs: list[Spots], how: str | None, val_fraction: float,
                      rng: np.random.Generator) -> tuple[list[np.ndarray], str]:
    """Which reference spots model selection watches (one mask per reference) and what they are (for ``uns``).

    ``"section"``: every spot of one reference drawn with ``rng`` (with one reference: spatial blocks,
    with a warning). ``"blocks"``: spatial blocks of about 4 × 4 spots, ``val_fraction`` of each
    reference. ``None``: nothing.
    """
    if how is None or val_fraction == 0:
        return [np.zeros(s.n_obs, bool) for s in refs], "none"
    if how == "section":
        if len(refs) >= 2:
            i = int(rng.integers(len(refs)))
            return [np.full(s.n_obs, j == i) for j, s in enumerate(refs)], f"section {refs[i].name}"
        log.warning("validation='section' needs two or more reference sections; model selection watches spatial "
                    f"blocks of {val_fraction:.0%} of the reference spots instead, which cannot see how the model "
                    "transfers to a new section")
    masks = [data.block_split(s.centers, s.spacing(), val_fraction, rng) for s in refs]
    return masks, f"{int(sum(m.sum() for m in masks))} reference spots in spatial blocks"


def _choice(model: HistoSPACE) -> tuple[dict[str, Any], str]:
    """What the validation chose, as keyword arguments of the refit, and in words."""
    train = model.info.get("train", {})
    if train.get("head") == "ridge":
        return {"ridge_alphas": [train["alpha"]]}, f"ridge alpha {train['alpha']:g}"
    best = model.info.get("history", {}).get("best_epoch") or [train.get("epochs_run", 1)]
    return {"epochs": int(best[0])}, f"{int(best[0])} epochs"


def _new_model(refs: list[Spots], genes: list[str], *, size: float, stain: str | None, layer: str | None,
               **kwargs: Any) -> HistoSPACE:
    """An untrained model with the data contract of ``refs`` (genes, normalisation, tiles) in its registry."""
    model = HistoSPACE(genes, **kwargs)
    model.registry = _registry(refs, genes, size=size, px=int(model.params["tile_px"]), stain=stain, layer=layer)
    return model


def _train(make: Callable[[], HistoSPACE], refs: list[Spots], *, validation: str | None, val_fraction: float,
           refit: bool, seed: int, tile_ram_gb: float, stack: contextlib.ExitStack, **fit: Any) -> HistoSPACE:
    """Cut the tiles once, train with model selection on the held-out spots, then refit on every reference."""
    model = make()
    reg = model.registry
    px, tile = int(model.params["tile_px"]), reg.tile
    Ys = [reg.expression(s.table, layer=reg.layer) for s in refs]
    # validation split first, then every tile goes straight to its store
    masks, held_out = _validation_masks(refs, validation, val_fraction, np.random.default_rng(seed))
    cut = {"size": tile["size"], "px": px, "stain": tile["stain"], "ram_gb": tile_ram_gb, "stack": stack}
    tt = data.training_tiles(refs, Ys, masks, **cut)
    log.info(f"histospace: training on {len(tt.Y)} spots of {len(refs)} section(s), validating on "
             f"{0 if tt.val_Y is None else len(tt.val_Y)} ({held_out}), {len(reg.genes)} genes")
    model.fit(tt.tiles, tt.Y, val_tiles=tt.val_tiles, val_Y=tt.val_Y, **fit)
    if refit and tt.val_Y is not None:
        first, (choice, chose) = model.info, _choice(model)
        model = make()
        model.fit(*data.all_training_tiles(refs, Ys, tt, **cut), **fit | {"patience": None} | choice)
        model.info["selection"] = {"history": first.get("history", {}), **first.get("train", {})}
        held_out = f"{held_out} chose {chose}, then refit on every reference"
    model.info["validation"] = held_out
    return model


def _registry(refs: list[Spots], genes: list[str], *, size: float, px: int, stain: str | None,
              layer: str | None) -> data.Registry:
    """The data contract of a new model: genes, normalisation, tiles (physical size when every section knows µm)."""
    mpps = [s.microns_per_pixel for s in refs]
    size_um = float(np.median([m * s.diameter * size for m, s in zip(mpps, refs)])) if all(mpps) else None
    return data.Registry("histospace", genes=genes, layer=layer, normalisation=dict(NORMALISATION),
                         tile={"size": float(size), "size_um": size_um, "out_px": px, "stain": stain},
                         references=[s.name for s in refs])


@inject_docs
def histospace(
    target: Any,
    reference: Any | Sequence[Any] | None = None,
    *,
    genes: Sequence[str] | None = None,
    n_top_genes: int | None = 1000,
    table_key: str | None = None,
    shapes_key: str | None = None,
    image_key: str | None = None,
    library_id: str | None = None,
    library_key: str | None = None,
    coordinate_system: str | None = None,
    layer: str | None = None,
    key_added: str = "histospace",
    epochs: int = 150,
    batch_size: int = 64,
    lr: float = 3e-4,
    weight_decay: float = 0.0,
    loss: Literal["huber", "mse"] = "huber",
    augment: bool = True,
    finetune_encoder: bool = False,
    stain: Literal["macenko", "reinhard"] | None = None,
    size: float = 2.0,
    encoder: Literal["tissue", "histospace"] = "tissue",
    head: Literal["mlp", "conv", "ridge"] = "mlp",
    validation: Literal["section", "blocks"] | None = "section",
    refit: bool = True,
    val_fraction: float = 0.15,
    patience: int | None = 20,
    tta: bool = True,
    tile_ram_gb: float = 2.0,
    cache_gb: float = 2.0,
    random_state: int = 0,
    device: str = "auto",
    model: HistoSPACE | None = None,
    return_model: bool = False,
    copy: bool = False,
    **model_kwargs: Any,
) -> Any:
    """Predict spatial gene expression from the H&E image alone (HistoSPACE, Kumar & Chatterjee 2024).

    A tile of ``size`` spot diameters around every spot is passed through a frozen image encoder
    (``encoder``: stfuse's tissue CNN at 160 px by default, or the paper's HistoSPACE autoencoder
    encoder at 128 px) and a regressor on its maps that outputs the expression of ``genes``
    (``head``: by default the per-channel mean and sd of the maps through two fully connected layers
    with strong dropout; ``"conv"``: the paper's convolution block and two fully connected layers).
    The model is trained on the measured expression of ``reference`` (library-size normalised to 1e4,
    log1p) with the Huber loss; the number of epochs is chosen on a whole reference section held out
    of training (``validation``), never on ``target``, and the model is then trained again on every
    reference for that many epochs (``refit``). Then every spot of ``target`` is predicted, batch by
    batch, so memory does not grow with the slide. ``head="ridge"`` replaces the regressor by
    ridge regression on the pooled maps of the same frozen encoder (same tiles, same targets), the
    baseline to compare with in one call.

    The defaults differ from the paper's where HER2ST sections showed it (encoder, head, tile size,
    schedule; chosen on C2 + C3 + C4 -> C5): ``encoder="histospace", head="conv", size=1,
    epochs=50, batch_size=32, lr=1e-4`` is the paper's configuration.

    ``target`` needs no expression: spot circles over its image suffice (e.g. the grid of
    :func:`stfuse.tl.tile_tissue`), and a table is created for them.

    Parameters
    ----------
    target
        The section to predict: a :class:`spatialdata.SpatialData` with an H&E image and spot circles
        (with or without a table of expression), or an AnnData with squidpy-style ``uns["spatial"]``.
    reference
        One or several sections (SpatialData / AnnData) with measured expression and an image to
        train on. ``None`` with ``model=None``: train on ``target`` itself (in-sample predictions).
    genes
        Genes to predict (all must be measured in every reference). Default: the ``n_top_genes`` most
        variable genes shared by the references (or the genes of ``model``).
    n_top_genes
        Number of highly variable genes when ``genes`` is not given (``None``: all shared genes).
    %(table_key)s
        The same key is used for the references.
    shapes_key
        Spot circles of ``target`` to predict (inferred when there is one candidate). Circles that no
        table annotates are accepted.
    %(image_key)s
    %(library_id)s
        For the target (and for training on it when ``reference`` and ``model`` are ``None``).
    %(library_key)s
        As ``library_id``.
    %(coordinate_system)s
        As ``library_id``.
    layer
        Counts layer instead of ``X``: of the references, and of the target for the measured
        expression written beside the predictions.
    key_added
        Name of the new table of predictions (``sdata.tables[key_added]``, genes as variables); the
        target's own table, when it annotates the same spots, gets ``obsm[f"X_{key_added}_pred"]``
        and ``uns[key_added]``.
    epochs, batch_size, lr, weight_decay
        Adam settings: at most ``epochs`` (the validation chooses how many), batch 64, lr 3e-4, chosen for the
        ``"mlp"`` head on a split of HER2ST training sections (C2 + C3 + C4 → C5). Paper (``"conv"`` head):
        50, 32, 1e-4, 0.
    loss
        ``"huber"`` (δ = 1, paper) or ``"mse"``.
    augment
        Train on random rotations by 90° and flips of the tiles.
    finetune_encoder
        Train the encoder as well (paper: frozen).
    stain
        Stain normalisation of the tiles before the encoder (``"macenko"`` or ``"reinhard"``; see
        :class:`stfuse.im.StainNormalizer`): one normaliser per slide, fitted on its spots, maps every
        slide to the same reference stain. Recorded in the model and applied again when it is reused.
    size
        Tile side in spot diameters (2: the spot and its surroundings; paper: 1). On HER2ST (C2 + C3 + C4 → C5,
        ridge on tissue-encoder features) tiles of 2 diameters scored a mean per-gene r of 0.139, 1
        diameter 0.125 and 4 diameters 0.131. A model reused on a section whose spot size in µm is known
        extracts tiles of the physical size it was trained on.
    encoder
        ``"tissue"`` (stfuse's default image encoder, :class:`stfuse.nn.TissueCNN`, 160 px tiles) or
        ``"histospace"`` (the paper's autoencoder encoder, 128 px tiles). Frozen unless ``finetune_encoder``.
    head
        ``"mlp"`` (default: the per-channel mean and sd of the encoder's maps, standardised, dropout 0.5,
        FC 512, GELU, dropout 0.8, FC), ``"conv"`` (paper: convolution block + two FC layers) or ``"ridge"``
        (ridge regression on the same pooled maps, penalty chosen by the validation spots' mean per-gene
        r; seconds). See :class:`stfuse.models.HistoSPACE`.
    validation
        What model selection (epoch, or ridge penalty) watches: ``"section"`` (default) every spot of
        one reference section drawn with ``random_state`` and not trained on, so the choice reflects
        transfer to a new section; ``"blocks"``: spatial blocks of about 4 × 4 spots, ``val_fraction``
        of each reference (neighbours of training spots: optimistic); ``None``: keep the last epoch.
        ``uns[key_added]["params"]["validation"]`` records what was held out.
    refit
        After the validation has chosen the epochs (or penalty), train again on every reference for
        that many epochs (or with that penalty), so no reference is lost to validation.
    val_fraction
        Fraction of each reference's spots held out with ``validation="blocks"``.
    patience
        Stop after this many epochs without a lower validation loss (``None``: run all epochs).
    tta
        Average the predictions over the 8 rotations/flips of each tile (test-time augmentation, the
        counterpart of ``augment``; on HER2ST validation blocks it raised the mean per-gene r from 0.13
        to 0.15). Prediction costs 8× more; ``tta=False`` for very large slides on a CPU.
    tile_ram_gb
        Training tiles beyond this size (GiB; 75 KiB per 160 px tile) are kept in a temporary file
        instead of memory.
    cache_gb
        Memory for the frozen encoder's maps of the training tiles (float16; 37.5 KiB per tile and
        rotation/flip for the tissue encoder, 64 KiB for the histospace one); above it they are
        recomputed batch by batch. Maps stay in the process-wide
        :data:`stfuse.nn.map_cache` (at most ``sf.nn.map_cache.max_gb``, 2 GiB), so another call on
        the same tiles (another fold, the refit, test-time augmentation) does not encode them again;
        ``sf.nn.map_cache.clear()`` frees that memory.
    %(random_state)s
    %(device)s
    model
        A trained :class:`stfuse.models.HistoSPACE` to apply instead of training (genes, tile size,
        stain normalisation come from it); ``reference`` must then be ``None``.
    return_model
        Also return the model (to :meth:`~stfuse.models.HistoSPACE.save` and apply to other slides).
    %(copy)s
    **model_kwargs
        Passed to :class:`stfuse.models.HistoSPACE` (``hidden``, ``fc_activation``, ``dropout``,
        ``encoder_weights``, ...).

    Returns
    -------
    ``None`` (or the copy when ``copy=True``), and the model when ``return_model=True`` (as
    ``(copy, model)`` when both). Writes ``sdata.tables[key_added]`` (predicted log1p expression,
    genes as variables, ``obsm["spatial"]``, annotating the target's circles) and, when the target's
    table annotates the same spots, ``obsm[f"X_{key_added}_pred"]`` and ``uns[key_added]`` there. For
    an AnnData target the predictions go to its ``obsm`` and the genes to ``uns[key_added]["genes"]``.
    When the target measures every predicted gene, its measured expression, normalised exactly like
    the training targets, is written beside the predictions (layer ``"measured"`` of the table of
    predictions; ``obsm[f"X_{key_added}_measured"]`` of an AnnData target): plots and metrics
    compare with it and never normalise again.

    Examples
    --------
    >>> import stfuse as sf
    >>> ref = sf.datasets.toy(n_spots=400, seed=0)
    >>> new = sf.datasets.toy(n_spots=400, seed=1)
    >>> model = sf.tl.histospace(new, ref, n_top_genes=50, epochs=2, return_model=True)  # doctest: +SKIP
    >>> new.tables["histospace"]  # doctest: +SKIP
    AnnData object with n_obs × n_vars = 400 × 50 ...
    >>> model.save("histospace_model/")  # doctest: +SKIP
    >>> slide = sf.tl.tile_tissue(sf.datasets.toy(n_spots=400, seed=2), size_um=55, copy=True)  # doctest: +SKIP
    >>> sf.tl.histospace(slide, model=model, shapes_key="tissue_tiles")  # doctest: +SKIP
    """
    refs = data.as_list(reference)
    _check_args(refs, model, genes, epochs=epochs, batch_size=batch_size, loss=loss, lr=lr, key_added=key_added,
                val_fraction=val_fraction, stain=stain, size=size, validation=validation, head=head,
                encoder=encoder)
    select = selection(locals())
    spots = get_spots(target, **select, need_image=True, image_hint=_IMAGE_HINT, require_table=False)
    tables = list(getattr(target, "tables", {}))
    if model is None and not refs and tables and table_key is not None and table_key not in tables:
        # nothing else to train on, so the named table was meant to exist: refuse, naming the tables there are
        get_spots(target, **select)
    if model is None and not refs:
        if not spots.table_in_data or spots.table.n_vars == 0:
            raise InputError(
                f"Section {spots.name!r} has no expression to train on. Pass reference=<sections with measured "
                "expression and an image>, or model=<a trained sf.models.HistoSPACE>."
            )
        log.info("histospace: no reference given; training on the target itself (in-sample predictions)")
        refs = [target]
    else:  # the references are whole objects: only the table is chosen in them
        select = {"table_key": table_key}

    trained_here = model is None
    with contextlib.ExitStack() as stack:  # owns the temporary tile files
        if model is None:
            ref_spots = [r.spots for r in data.reference_sections(refs, **select, image_for="HistoSPACE",
                                                                  image_hint=_IMAGE_HINT, need_genes=True)]
            chosen = data.select_genes([s.table for s in ref_spots], genes, n_top_genes=n_top_genes, layer=layer)
            make = functools.partial(_new_model, ref_spots, chosen, finetune_encoder=finetune_encoder, head=head,
                                     encoder=encoder,
                                     device=device, random_state=random_state, size=size, stain=stain, layer=layer,
                                     **model_kwargs)
            fit = {"epochs": int(epochs), "batch_size": int(batch_size), "lr": lr, "weight_decay": float(weight_decay),
                   "loss": loss, "augment": augment, "cache_gb": cache_gb, "patience": patience}
            model = _train(make, ref_spots, validation=validation, val_fraction=val_fraction, refit=refit,
                           seed=random_state, tile_ram_gb=tile_ram_gb, stack=stack, **fit)
        reg = model.registry or data.Registry("histospace", genes=model.genes, normalisation=dict(NORMALISATION))
        tile, px = reg.tile_spec, int(model.params["tile_px"])
        # predict every target spot, one batch of tiles at a time
        pred = np.empty((spots.n_obs, len(model.genes)), np.float32)
        for index, tiles in data.tile_batches(spots, tile, px, desc="predicting"):
            pred[index] = model.predict(tiles, tta=tta)
    measured = data.measured_expression(spots, reg, layer=layer)
    log.info(f"histospace: predicted {len(model.genes)} genes for {spots.n_obs} spots of {spots.name!r}")

    params = {**model.params, **model.info.get("train", {}), **{f"tile_{k}": v for k, v in tile.items()},
              "validation": model.info.get("validation"), "refit": bool(refit),
              "n_genes": len(model.genes), "trained_here": trained_here, "val_fraction": float(val_fraction),
              "tta": bool(tta), "random_state": int(random_state), "tile_side_px": data.tile_side(spots, tile),
              "encoder_checksum": model.info.get("encoder_checksum", "")}
    history = dict(model.info.get("history", {}))
    if model.info.get("selection", {}).get("history"):  # the run that chose the epochs, beside the refit's
        history["selection"] = model.info["selection"]["history"]
    result = {"params": params, "history": history,
              "inputs": {"table_key": spots.table_key if spots.table_in_data else None, "shapes_key": spots.shapes_key,
                         "image_key": spots.image_key, "layer": layer},
              "extra": {"normalisation": dict(reg.normalisation), "genes": list(model.genes),
                        "references": list(reg.references)}}
    obsm = {K.pred(key_added): pred} if spots.table_in_data else None
    tables = None
    if is_spatialdata(spots.data):
        uns = result_uns(params=params, history=result["history"], inputs=result["inputs"], **result["extra"])
        tables = {key_added: data.prediction_table(spots, pred, model.genes, uns, key_added, measured=measured)}
    elif measured is not None:
        obsm[K.measured(key_added)] = measured
    out = record(spots, key_added, **result, obsm=obsm, tables=tables, copy=copy)
    if return_model:
        return (out, model) if copy else model
    return out
