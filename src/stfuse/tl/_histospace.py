"""``sf.tl.histospace``: predict spatial gene expression from the H&E image alone (HistoSPACE)."""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from .. import _keys as K
from .. import _logging as log
from .._docs import inject_docs
from .._errors import GeneMismatchError, InputError
from .._spots import Spots, _spot_meta, get_spots, is_spatialdata
from ..im import StainNormalizer
from ..im._patches import fit_stain, iter_patches, patch_side_px
from ..models._histospace import HistoSPACE

__all__ = ["histospace"]

#: normalisation of the targets (library size 1e4, then log1p), recorded in the model
NORMALISATION = {"target_sum": 1e4, "log1p": True}
_IMAGE_HINT = "HistoSPACE predicts expression from the H&E image; attach the section's image to the SpatialData."


def _stain_for(spots: Spots, side: float, px: int, stain: str | None) -> StainNormalizer | None:
    """One stain normaliser per slide (fitted on an even sample of its spots), or ``None``."""
    return None if stain is None else fit_stain(spots, side, stain, out_px=px)


def _tile_side(spots: Spots, tile: dict[str, Any]) -> float:
    """Tile side in level-0 pixels: the model's physical size when both sides know µm, else spot diameters."""
    if tile.get("size_um") and spots.microns_per_pixel:
        return patch_side_px(spots, size_um=tile["size_um"])
    return patch_side_px(spots, size=tile.get("size", 1.0))


def _block_split(centers: np.ndarray, spacing: float, fraction: float, rng: np.random.Generator) -> np.ndarray:
    """Validation mask: random square blocks of about 4 × 4 spots until ``fraction`` of the spots."""
    if fraction <= 0 or len(centers) < 10:
        return np.zeros(len(centers), bool)
    block = 4.0 * max(spacing, 1e-9)
    ids = np.floor((centers - centers.min(axis=0)) / block).astype(np.int64)
    _, inv, counts = np.unique(ids, axis=0, return_inverse=True, return_counts=True)
    inv = inv.ravel()
    val = np.zeros(len(centers), bool)
    total = 0
    for b in rng.permutation(len(counts)):
        if total >= fraction * len(centers):
            break
        if total + counts[b] > 0.5 * len(centers):
            continue
        val |= inv == b
        total += counts[b]
    return val


class _TileStore:
    """uint8 tiles of many spots: in memory below ``ram_gb``, else a memory-mapped temporary file."""

    def __init__(self, n: int, px: int, ram_gb: float, stack: contextlib.ExitStack, name: str) -> None:
        shape = (n, 3, px, px)
        if n * 3 * px * px > ram_gb * 2**30:
            folder = stack.enter_context(tempfile.TemporaryDirectory(prefix="stfuse-tiles-"))
            log.info(f"{name}: {n} tiles kept on disk ({n * 3 * px * px / 2**30:.2f} GiB > tile_ram_gb={ram_gb})")
            self.array = np.lib.format.open_memmap(Path(folder) / f"{name}.npy", mode="w+", dtype=np.uint8, shape=shape)
        else:
            self.array = np.empty(shape, np.uint8)


def _extract_tiles(spots: Spots, side: float, rows: np.ndarray, store: np.ndarray,
                   stain: StainNormalizer | None, desc: str) -> None:
    """Write the tile of spot ``i`` of ``spots`` to ``store[rows[i]]`` (skipping spots with ``rows < 0``)."""
    index = np.flatnonzero(rows >= 0)
    n_batches = -(-len(index) // 64)
    for batch in log.progress(iter_patches(spots, side, out_px=store.shape[-1], batch_size=64, index=index,
                                           stain=stain), desc=desc, total=n_batches):
        store[rows[batch.index]] = batch.patches


def _as_list(reference: Any) -> list[Any]:
    if reference is None:
        return []
    if isinstance(reference, list | tuple):
        return list(reference)
    return [reference]


def _select_genes(tables: list[Any], genes: Sequence[str] | None, n_top_genes: int | None,
                  layer: str | None) -> list[str]:
    from ..pp import common_genes, prepare_expression

    if genes is not None:
        genes = [str(g) for g in genes]
        if len(set(genes)) != len(genes):
            raise InputError("genes contains duplicates; give each gene once.")
        if not genes:
            raise InputError("genes is empty; give at least one gene, or genes=None to choose variable genes.")
        for i, t in enumerate(tables):
            missing = [g for g in genes if g not in t.var_names]
            if missing:
                raise GeneMismatchError(
                    f"{len(missing)} of the {len(genes)} requested genes are not measured in reference {i} "
                    f"(first: {missing[:8]}). Pass genes measured in every reference, e.g. "
                    "sf.pp.common_genes(*tables)."
                )
        return genes
    import anndata as ad

    shared = common_genes(*tables)
    if not shared:
        raise GeneMismatchError("The references share no gene; they must be measured on overlapping gene panels.")
    if len(tables) == 1:
        merged = tables[0][:, shared] if len(shared) < tables[0].n_vars else tables[0]
    else:
        merged = ad.concat([t[:, shared] for t in tables], join="inner", index_unique="-")
    if n_top_genes is None or n_top_genes >= len(shared):
        return list(shared)
    return prepare_expression(merged, layer=layer, n_top_genes=int(n_top_genes)).genes


def _prediction_table(spots: Spots, pred: np.ndarray, genes: list[str], uns: dict[str, Any], key_added: str) -> Any:
    """A new table of the predictions: genes as variables, one row per spot, annotating the same circles."""
    import anndata as ad
    from spatialdata.models import TableModel, get_table_keys

    if spots.table_in_data:
        obs = spots.table.obs.copy()
        _, region_key, instance_key = get_table_keys(spots.table)
        instances = spots.table.obs[instance_key].to_numpy()
        obs = obs.drop(columns=[c for c in (region_key, instance_key) if c in obs.columns])
    else:
        obs = spots.table.obs.drop(columns=[K.REGION_KEY, K.INSTANCE_KEY])
        instances = spots.table.obs[K.INSTANCE_KEY].to_numpy()
    obs[K.REGION_KEY] = pd.Categorical([spots.shapes_key] * len(obs))
    obs[K.INSTANCE_KEY] = instances
    table = ad.AnnData(X=pred, obs=obs, var=pd.DataFrame(index=pd.Index(genes, dtype=object)))
    spatial = spots.table.obsm.get(K.SPATIAL) if spots.table_in_data else None
    table.obsm[K.SPATIAL] = np.asarray(spatial if spatial is not None else spots.centers, dtype=np.float64)
    meta = dict(_spot_meta(spots.data, spots.table, spots.shapes_key))
    if meta:
        table.uns[K.META] = {spots.shapes_key: meta}
    table.uns[key_added] = uns
    return TableModel.parse(table, region=spots.shapes_key, region_key=K.REGION_KEY, instance_key=K.INSTANCE_KEY)


@inject_docs
def histospace(
    target: Any,
    reference: Any | Sequence[Any] | None = None,
    *,
    genes: Sequence[str] | None = None,
    n_top_genes: int | None = 1000,
    table_key: str = K.TABLE,
    shapes_key: str | None = None,
    image_key: str | None = None,
    layer: str | None = None,
    key_added: str = "histospace",
    epochs: int = 50,
    batch_size: int = 32,
    lr: float = 1e-4,
    loss: Literal["huber", "mse"] = "huber",
    augment: bool = True,
    finetune_encoder: bool = False,
    stain: Literal["macenko", "reinhard"] | None = None,
    size: float = 1.0,
    val_fraction: float = 0.15,
    patience: int | None = 10,
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

    A tile of one spot diameter around every spot is resized to 128 px and passed through the
    HistoSPACE autoencoder's encoder (shipped weights; frozen unless ``finetune_encoder``), one
    convolution block and two fully connected layers that output the expression of ``genes``. The
    model is trained on the measured expression of ``reference`` (library-size normalised to 1e4,
    log1p) with the Huber loss; the epoch kept is the one with the lowest loss on a validation split
    of the *reference* spots (spatial blocks of about 4 × 4 spots, ``val_fraction`` of each
    section), never on ``target``. Then every spot of ``target`` is predicted, batch by batch, so
    memory does not grow with the slide.

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
    layer
        Counts layer of the references instead of ``X``.
    key_added
        Name of the new table of predictions (``sdata.tables[key_added]``, genes as variables); the
        target's own table, when it annotates the same spots, gets ``obsm[f"X_{key_added}_pred"]``
        and ``uns[key_added]``.
    epochs, batch_size, lr
        Adam settings (paper: 50, 32, 1e-4).
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
        Tile side in spot diameters (1). A model reused on a section whose spot size in µm is known
        extracts tiles of the physical size it was trained on.
    val_fraction
        Fraction of the reference spots held out for model selection (0: keep the last epoch).
    patience
        Stop after this many epochs without a lower validation loss (``None``: run all epochs).
    tta
        Average the predictions over the 8 rotations/flips of each tile (test-time augmentation, the
        counterpart of ``augment``; on HER2ST validation blocks it raised the mean per-gene r from 0.13
        to 0.15). Prediction costs 8× more; ``tta=False`` for very large slides on a CPU.
    tile_ram_gb
        Training tiles beyond this size (GiB; 48 KiB per 128 px tile) are kept in a temporary file
        instead of memory.
    cache_gb
        Memory for the frozen encoder's maps of the training tiles (float16, 64 KiB per tile and
        rotation/flip); above it they are recomputed batch by batch.
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
    from ..pp import prepare_expression

    refs = _as_list(reference)
    if model is not None and refs:
        raise InputError("Give either reference (to train a model) or model (a trained one), not both.")
    if model is not None:
        if not isinstance(model, HistoSPACE):
            raise InputError(f"model must be an sf.models.HistoSPACE, got {type(model).__name__}.")
        if not model.is_trained:
            raise InputError("The HistoSPACE model is not trained; train it with sf.tl.histospace(..., reference=...).")
        if genes is not None and list(map(str, genes)) != model.genes:
            raise InputError("genes cannot be changed for a trained model; leave genes=None to predict its genes.")
    for name, value in (("epochs", epochs), ("batch_size", batch_size)):
        if not isinstance(value, int | np.integer) or value < 1:
            raise InputError(f"{name} must be a positive integer, got {value!r}.")
    if loss not in ("huber", "mse"):
        raise InputError(f"loss must be 'huber' or 'mse', got {loss!r}.")
    if not (isinstance(lr, int | float) and lr > 0):
        raise InputError(f"lr must be a positive number, got {lr!r}.")
    if not isinstance(key_added, str) or not key_added:
        raise InputError(f"key_added must be a non-empty string, got {key_added!r}.")
    if not 0.0 <= val_fraction < 0.9:
        raise InputError(f"val_fraction must be in [0, 0.9), got {val_fraction}.")
    if stain not in (None, "macenko", "reinhard"):
        raise InputError(f"stain must be None, 'macenko' or 'reinhard', got {stain!r}.")
    if not size > 0:
        raise InputError(f"size must be positive (in spot diameters), got {size}.")

    spots = get_spots(target, table_key=table_key, shapes_key=shapes_key, image_key=image_key, need_image=True,
                      image_hint=_IMAGE_HINT, require_table=False)
    tables = list(getattr(target, "tables", {}))
    if model is None and not refs and tables and table_key not in tables:
        # nothing else to train on, so the table was meant to exist: refuse, naming the tables there are
        get_spots(target, table_key=table_key, shapes_key=shapes_key, image_key=image_key)
    if model is None and not refs:
        if not spots.table_in_data or spots.table.n_vars == 0:
            raise InputError(
                f"Section {spots.name!r} has no expression to train on. Pass reference=<sections with measured "
                "expression and an image>, or model=<a trained sf.models.HistoSPACE>."
            )
        log.info("histospace: no reference given; training on the target itself (in-sample predictions)")
        refs = [target]

    trained_here = model is None
    with contextlib.ExitStack() as stack:
        if model is None:
            ref_spots = []
            for i, r in enumerate(refs):
                s = get_spots(r, table_key=table_key, need_image=True,
                              image_hint=f"Reference {i} has no image; {_IMAGE_HINT}")
                if s.table.n_vars == 0:
                    raise InputError(f"Reference {i} ({s.name!r}) has no genes in table {table_key!r}.")
                ref_spots.append(s)
            chosen = _select_genes([s.table for s in ref_spots], genes, n_top_genes, layer)
            Ys = [prepare_expression(s.table, genes=chosen, layer=layer, **NORMALISATION).X for s in ref_spots]
            model = HistoSPACE(chosen, finetune_encoder=finetune_encoder, device=device, random_state=random_state,
                               **model_kwargs)
            mpps = [s.microns_per_pixel for s in ref_spots]
            size_um = float(np.median([m * s.diameter * size for m, s in zip(mpps, ref_spots)])) if all(mpps) else None
            px = int(model.params["tile_px"])
            tile = {"size": float(size), "size_um": size_um, "out_px": px, "stain": stain}
            # validation split first, then every tile goes straight to its store
            rng = np.random.default_rng(random_state)
            masks = [_block_split(s.centers, s.spacing(), val_fraction, rng) for s in ref_spots]
            n_val = int(sum(m.sum() for m in masks))
            n_tr = int(sum(len(m) for m in masks)) - n_val
            train_store = _TileStore(n_tr, px, tile_ram_gb, stack, "train").array
            val_store = _TileStore(n_val, px, tile_ram_gb, stack, "val").array if n_val else None
            Y_tr, Y_val = [], []
            o_tr = o_val = 0
            for i, (s, m, Y) in enumerate(zip(ref_spots, masks, Ys)):
                side = patch_side_px(s, size=size)
                norm = _stain_for(s, side, px, stain)
                rows = np.full(s.n_obs, -1, np.int64)
                rows[~m] = o_tr + np.arange(int((~m).sum()))
                _extract_tiles(s, side, rows, train_store, norm, f"tiles of reference {i}")
                if m.any():
                    rows = np.full(s.n_obs, -1, np.int64)
                    rows[m] = o_val + np.arange(int(m.sum()))
                    _extract_tiles(s, side, rows, val_store, norm, f"tiles of reference {i} (validation)")
                o_tr += int((~m).sum())
                o_val += int(m.sum())
                Y_tr.append(Y[~m])
                Y_val.append(Y[m])
            log.info(f"histospace: training on {n_tr} spots of {len(ref_spots)} section(s), validating on {n_val}, "
                     f"{len(chosen)} genes")
            model.info.update({"normalisation": dict(NORMALISATION), "tile": tile,
                               "references": [s.name for s in ref_spots], "layer": layer})
            model.fit(train_store, np.concatenate(Y_tr), val_tiles=val_store,
                      val_Y=np.concatenate(Y_val) if n_val else None, epochs=int(epochs), batch_size=int(batch_size),
                      lr=lr, loss=loss, augment=augment, patience=patience, cache_gb=cache_gb)
        tile = model.info.get("tile", {"size": 1.0, "size_um": None, "stain": None})
        px = int(model.params["tile_px"])

        # predict every target spot, one batch of tiles at a time
        side = _tile_side(spots, tile)
        norm = _stain_for(spots, side, px, tile.get("stain"))
        pred = np.empty((spots.n_obs, len(model.genes)), np.float32)
        n_batches = -(-spots.n_obs // 128)
        for batch in log.progress(iter_patches(spots, side, out_px=px, batch_size=128, stain=norm),
                                  desc="predicting", total=n_batches):
            pred[batch.index] = model.predict(batch.patches, tta=tta)

    log.info(f"histospace: predicted {len(model.genes)} genes for {spots.n_obs} spots of {spots.name!r}")
    params = {**model.params, **model.info.get("train", {}), **{f"tile_{k}": v for k, v in tile.items()},
              "n_genes": len(model.genes), "trained_here": trained_here, "val_fraction": float(val_fraction),
              "tta": bool(tta), "random_state": int(random_state), "tile_side_px": float(side),
              "encoder_checksum": model.info.get("encoder_checksum", "")}
    uns = {
        "params": {k: v for k, v in params.items() if v is not None},  # None cannot be written to zarr
        "normalisation": dict(model.info.get("normalisation", NORMALISATION)),
        "genes": list(model.genes),
        "history": {k: np.asarray(v, dtype=float) for k, v in model.info.get("history", {}).items()},
        "references": list(model.info.get("references", [])),
    }
    obsm_key = f"X_{key_added}_pred"
    if is_spatialdata(spots.data):
        tables = {key_added: _prediction_table(spots, pred, model.genes, uns, key_added)}
        if spots.table_in_data:
            out = spots.write(key_added, obsm={obsm_key: pred}, uns={key_added: uns}, tables=tables, copy=copy)
        else:
            out = spots.write(key_added, tables=tables, copy=copy)
    else:
        out = spots.write(key_added, obsm={obsm_key: pred}, uns={key_added: uns}, copy=copy)
    if return_model:
        return (out, model) if copy else model
    return out
