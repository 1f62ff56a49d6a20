"""``sf.tl.spacrd``: SpaCRD cancer-region detection, trained on labelled sections, applied to another."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any, Literal

import numpy as np
import pandas as pd

from .. import _keys as K
from .. import _logging as log
from .. import data
from .._docs import inject_docs
from .._errors import InputError
from .._results import record
from .._spots import Spots, get_spots, selection
from ..im._encoders import DEFAULT_ENCODER
from ..models import SpaCRD, gmm_threshold
from ..pp import check_counts

__all__ = ["spacrd"]

CANCER, NORMAL = "cancer", "normal"
#: expression preparation of SpaCRD (per section)
NORMALISATION = {"target_sum": 1e4, "log1p": True, "scale": "minmax", "scope": "per section"}
IMAGE_SCALING = "per-section z-score of each image feature"
_IMAGE_HINT = ("Attach the H&E image to the SpatialData, or run expression only with use_image=False "
               "(a model trained with images needs images on every section it scores).")


def _check_args(refs: list[Any], model: SpaCRD | None, label_key: str, **values: Any) -> tuple[bool, bool]:
    """Refuse arguments no run can use, before anything is resolved; the modalities used (image, genes)."""
    if model is not None and refs:
        raise InputError("Give either reference (labelled sections to train on) or model (a trained one), not both.")
    if model is None and not refs:
        raise InputError(
            "spacrd needs labelled reference sections to learn from: pass reference=<SpatialData/AnnData with "
            f"obs[{label_key!r}]> (one or a list), or model=<a trained sf.models.SpaCRD>."
        )
    if model is not None:
        if not isinstance(model, SpaCRD):
            raise InputError(f"model must be an sf.models.SpaCRD, got {type(model).__name__}.")
        if not model.is_trained:
            raise InputError("The SpaCRD model is not trained; train it with sf.tl.spacrd(target, reference, ...).")
        values["use_image"], values["use_genes"] = model.uses_image, model.uses_genes
    if not values["use_image"] and not values["use_genes"]:
        raise InputError("use_image=False and use_genes=False leave SpaCRD with no input; keep at least one.")
    if values["connectivity_key"] is not None and not isinstance(values["connectivity_key"], str):
        raise InputError(f"connectivity_key must be an obsp key or None, got {values['connectivity_key']!r}.")
    for name in ("epochs", "batch_size", "n_neighs", "n_top_genes", "validation_sections"):
        value = values[name]
        if not isinstance(value, int | np.integer) or value < 1:
            raise InputError(f"{name} must be a positive integer, got {value!r}.")
    if not isinstance(values["pretrain_epochs"], int | np.integer) or values["pretrain_epochs"] < 0:
        raise InputError(f"pretrain_epochs must be a non-negative integer, got {values['pretrain_epochs']!r}.")
    if values["schedule"] not in ("staged", "joint"):
        raise InputError(f"schedule must be 'staged' or 'joint', got {values['schedule']!r}.")
    if values["validation"] not in ("section", "spots", None):
        raise InputError(f"validation must be 'section', 'spots' or None, got {values['validation']!r}.")
    if not 0.0 <= values["val_fraction"] < 0.9:
        raise InputError(f"val_fraction must be in [0, 0.9), got {values['val_fraction']}.")
    return bool(values["use_image"]), bool(values["use_genes"])


def _validation(sections: list[data.Section], y: np.ndarray, how: str | None, val_fraction: float,
                seed: int, n_sections: int = 1) -> list[tuple[np.ndarray, str]]:
    """Rows of the stacked reference spots that early stopping watches, and what they are (for ``uns``).

    ``"section"``: every spot of a reference section, drawn with ``seed`` among the sections whose
    labels hold both classes while the others still do; ``n_sections`` such sections (as many as
    are eligible, one split each); with fewer than two references, or none eligible, the
    ``"spots"`` split is used and a warning says so. ``"spots"``: a stratified random
    ``val_fraction`` of the labelled spots. ``None``: nothing held out.
    """
    rng = np.random.default_rng(seed)
    if how is None or (val_fraction == 0 and how == "spots"):
        return [(np.empty(0, np.int64), "none")]
    if how == "section":
        def both_classes(labels: np.ndarray) -> bool:
            return bool((labels == 1).any() and (labels == 0).any())

        ends = np.cumsum([0] + [len(s.labels) for s in sections])
        eligible = [i for i, s in enumerate(sections)
                    if both_classes(s.labels) and both_classes(np.delete(y, np.arange(ends[i], ends[i + 1])))]
        if len(sections) >= 2 and eligible:
            # one section: the draw of earlier versions (same seed, same section)
            drawn = ([int(rng.choice(eligible))] if n_sections == 1
                     else [int(i) for i in rng.choice(eligible, min(n_sections, len(eligible)), replace=False)])
            return [(np.arange(ends[i], ends[i + 1]), f"section {sections[i].name}") for i in drawn]
        log.warning("validation='section' needs two or more reference sections with both classes; early stopping "
                    f"watches a random {val_fraction:.0%} of the reference spots instead, which cannot see how "
                    "the model transfers to a new section")
    _, val = data.stratified_split(y, val_fraction, rng)
    return [(val, f"{len(val)} random reference spots")]


def _registry(refs: list[data.Section], spots: Spots, *, use_genes: bool, use_image: bool, n_top_genes: int,
              layer: str | None, n_neighs: int, connectivity_key: str | None, label_key: str,
              positive: Any) -> data.Registry:
    """The data contract of a new model: genes, normalisation, neighbourhood, labels (image encoder set later).

    The graph rule (:func:`stfuse.data.graph_rule`) reads ``obsp[connectivity_key]`` when a reference or
    the target has it, else it is the kNN graph of ``n_neighs`` for every section, now and later.
    """
    genes = None
    if use_genes:
        genes = data.shared_variable_genes([r.spots.table for r in refs], spots.table, n_top_genes=n_top_genes,
                                           layer=layer, names=[r.name for r in refs],
                                           target_name=data.section_name(spots, "target"))
    return data.Registry(
        "spacrd", genes=genes, layer=layer, normalisation=dict(NORMALISATION),
        image_scaling=IMAGE_SCALING if use_image else None,
        graph=data.graph_rule([*(r.spots for r in refs), spots], n_neighs=n_neighs, connectivity_key=connectivity_key),
        labels={"label_key": label_key, "positive": list(positive) if isinstance(positive, list | tuple | set)
                else positive},
        references=[r.name for r in refs],
    )


def _inputs(reg: data.Registry, spots: Spots, feats: Any, k: int,
            layer: str | None) -> tuple[np.ndarray | None, np.ndarray | None, np.ndarray, dict[str, Any]]:
    """Expression, scaled image features, neighbour index of one section (prepared as ``reg`` says), graph used."""
    X = reg.expression(spots.table, layer=layer) if reg.genes is not None else None
    image = data.standardise(feats.X).astype(np.float32) if feats is not None else None
    return X, image, *reg.neighbours(spots, n_neighs=k)


def _by_name(names: list[str], values: list[Any]) -> dict[str, Any]:
    """``values`` keyed by section name (a repeated name gets `` (2)``, `` (3)``, ... in order)."""
    out: dict[str, Any] = {}
    for name, v in zip(names, values):
        key, i = name, 1
        while key in out:
            i += 1
            key = f"{name} ({i})"
        out[key] = v
    return out


def _params(model: SpaCRD, reg: data.Registry, feats: Any, *, label_key: str, n_top_genes: int, random_state: int,
            reused: bool) -> dict[str, Any]:
    p = model.params
    return {
        "label_key": (reg.labels or {}).get("label_key", label_key), "n_neighs": int(p["n_neighs"]),
        "connectivity_key": (reg.graph or {}).get("connectivity_key"),
        "n_top_genes": int(n_top_genes), "use_image": model.uses_image, "use_genes": model.uses_genes,
        "cross_attention": bool(p["cross_attention"]), "vae": bool(p["vae"]), "alignment": bool(p["alignment"]),
        "random_state": int(random_state), "encoder": feats.provenance.get("encoder") if feats is not None else None,
        "reused_model": reused, "model": repr(model), "validation": model.info.get("validation"),
        **{f"train_{a}": v for a, v in model.info.get("training", {}).items() if v is not None},
        **{a: p[a] for a in ("dim", "heads", "latent", "beta", "gamma", "temperature", "alpha")},
    }


def _train(reg: data.Registry, sections: list[data.Section], y: np.ndarray, features: Any, *, layer: str | None,
           epochs: int, patience: int | None, validation: str | None, refit: bool, validation_sections: int,
           model_kw: dict[str, Any], fit_kw: dict[str, Any]) -> tuple[SpaCRD, dict[str, Any]]:
    """Stack the references, train with early stopping on the held-out rows, then refit on every reference."""
    parts = [_inputs(reg, r.spots, features(r.spots), model_kw["n_neighs"], layer) for r in sections]
    use_genes, use_image = model_kw["use_genes"], model_kw["use_image"]
    Xg = np.vstack([p[0] for p in parts]) if use_genes else None
    Xi = np.vstack([p[1] for p in parts]) if use_image else None
    nb = data.stack_neighbours([p[2] for p in parts])
    ref_graphs = _by_name([r.name for r in sections], [p[3] for p in parts])
    del parts

    def fit(n_epochs: int, val: np.ndarray) -> SpaCRD:
        m = SpaCRD(n_genes=len(reg.genes) if use_genes else 0, n_image=Xi.shape[1] if use_image else 0,
                   genes=reg.genes, **model_kw)
        m.registry = reg
        return m.fit(Xg, Xi, nb, y, epochs=int(n_epochs), validation=val, patience=patience if len(val) else None,
                     **fit_kw)

    log.info(f"spacrd: training on {len(y)} spots of {len(sections)} reference section(s) "
             f"({int((y == 1).sum())} cancer, {int((y == 0).sum())} normal, {int((y < 0).sum())} unlabelled)")
    splits = _validation(sections, y, validation, fit_kw["val_fraction"], fit_kw["random_state"],
                         n_sections=validation_sections if refit else 1)
    val, held_out = splits[0]
    model = fit(epochs, val)
    best = model.info["history"].get("best_epoch")
    if refit and held_out.startswith("section") and best:
        histories, bests = [model.info["history"]], [int(best[0])]
        for val, _ in splits[1:]:  # one selection run per further held-out section
            h = fit(epochs, val).info["history"]
            histories.append(h)
            bests.append(int(h["best_epoch"][0]))
        chosen = max(1, round(float(np.median(bests))))
        chose = (f"{held_out} chose {chosen} epochs" if len(splits) == 1
                 else "sections " + ", ".join(d.removeprefix("section ") for _, d in splits)
                 + f" chose {', '.join(map(str, bests))} epochs (median {chosen})")
        log.info(f"spacrd: {chose}; refitting on every reference for {chosen} epochs")
        model = fit(chosen, np.empty(0, np.int64))
        model.info["selection"] = {"history": histories[0], "histories": histories, "best_epochs": bests,
                                   "sections": [d for _, d in splits], "best_epoch": chosen}
        held_out = f"{chose}, then refit on every reference"
    model.info["validation"] = held_out
    return model, ref_graphs


@inject_docs
def spacrd(
    target: Any,
    reference: Any | Sequence[Any] | None = None,
    *,
    label_key: str = K.CANCER,
    positive: Any = True,
    table_key: str | None = None,
    shapes_key: str | None = None,
    image_key: str | None = None,
    library_id: str | None = None,
    library_key: str | None = None,
    coordinate_system: str | None = None,
    key_added: str = "spacrd",
    encoder: str | Callable | Any = DEFAULT_ENCODER,
    weights: str | os.PathLike | None = None,
    n_neighs: int = 6,
    connectivity_key: str | None = "spatial_connectivities",
    n_top_genes: int = 3000,
    use_image: bool = True,
    use_genes: bool = True,
    cross_attention: bool = True,
    vae: bool = True,
    alignment: bool = True,
    schedule: Literal["staged", "joint"] = "staged",
    epochs: int = 100,
    pretrain_epochs: int = 20,
    lr: float = 1e-4,
    batch_size: int = 256,
    validation: Literal["section", "spots"] | None = "section",
    validation_sections: int = 1,
    val_fraction: float = 0.1,
    patience: int | None = 10,
    refit: bool = True,
    average_from: int | None = None,
    layer: str | None = None,
    random_state: int = 0,
    device: str = "auto",
    model: SpaCRD | None = None,
    return_model: bool = False,
    copy: bool = False,
    **model_kwargs: Any,
) -> Any:
    """Detect cancer regions with SpaCRD (Xue et al.): train on labelled sections, score the target.

    SpaCRD fuses each spot's expression and H&E features with those of its ``n_neighs`` nearest spots
    through bidirectional cross-attention, regularises the fused representation with a
    category-conditioned VAE, and classifies the VAE posterior (see :class:`stfuse.models.SpaCRD`).
    It is trained on the **reference** sections' labels and applied to ``target``; the binary call
    thresholds the target's scores where the two components of a Gaussian mixture fitted to them
    intersect (never using the target's labels).

    Data preparation, per section: genes shared by the references and the target, library size
    normalised to 1e4, ``log1p``, the ``n_top_genes`` most variable genes of the references
    (:func:`stfuse.pp.shared_hvg`), then each gene min–max scaled to [0, 1] within the section; image
    features (:func:`stfuse.im.image_features`, cached in the target's ``obsm``) z-scored within the
    section.

    Parameters
    ----------
    target
        The section to score: a :class:`spatialdata.SpatialData` with a table of counts (and an H&E
        image unless ``use_image=False``), or an AnnData with ``obsm["spatial"]`` (and squidpy-style
        ``uns["spatial"]`` for the image).
    reference
        One or several labelled sections (SpatialData / AnnData) to train on. Not modified.
        Leave ``None`` when ``model`` is given.
    label_key
        Column of the references' ``obs`` holding the annotation. Spots where it is missing (NaN)
        take part as neighbours but not in the supervised losses.
    positive
        The value(s) of ``obs[label_key]`` that mean cancer (e.g. ``True``, or
        ``["invasive cancer", "cancer in situ"]``); every other non-missing value is normal.
    %(table_key)s
        The same key is used for the references.
    %(shapes_key)s
        For the target (each reference's spots and image are inferred).
    %(image_key)s
        For the target.
    %(library_id)s
        For the target.
    %(library_key)s
        For the target.
    %(coordinate_system)s
        For the target.
    key_added
        Writes ``obs[f"{key_added}_score"]`` (cancer probability, 0..1), ``obs[key_added]``
        (categorical ``cancer``/``normal``) and ``uns[key_added]``.
    encoder
        Image encoder for the image features (``"tissue"``, default; ``"histospace"``, ``"resnet50"``, ``"timm:<model>"``, an
        :class:`stfuse.im.Encoder` or a torch module; see :func:`stfuse.im.get_encoder`). A reused
        ``model`` needs the encoder it was trained with.
    weights
        Local weights file of the encoder.
    n_neighs
        Nearest spots attended to by each spot (paper: 6), in sections without the graph below.
    connectivity_key
        ``obsp`` key of a spot graph (squidpy's ``sq.gr.spatial_neighbors`` or
        :func:`stfuse.gr.spatial_graph` write ``"spatial_connectivities"``): each section (target and
        every reference) whose table has it attends over its graph neighbours (all of them; spots have
        as many as the graph gives, ``-1`` padded, the attention masks the padding); a section without
        it uses its ``n_neighs`` nearest spots. ``None``: the kNN graph everywhere. The rule is saved
        with the model: a model trained without any ``obsp`` graph keeps kNN graphs on new sections,
        one trained with them reads ``obsp[connectivity_key]`` of new sections (both ignore this
        argument and ``n_neighs`` when given as ``model``). A graph of the wrong shape or without edges
        raises :class:`~stfuse.InputError`. What each section used is in
        ``uns[key_added]["inputs"]["graph"]``.
    n_top_genes
        Highly variable genes of the references (paper: 3000).
    use_image, use_genes, cross_attention, vae, alignment
        Ablations (paper Table 4): expression only (``use_image=False``, needs no image), image only,
        no neighbourhood cross-attention, no VAE, no InfoNCE alignment.
    schedule
        ``"staged"``: InfoNCE pre-training of the two encoders for ``pretrain_epochs``, then joint
        training of ``BCE + γ · L_fused``; ``"joint"``: joint from the start. Identical when there is
        nothing to align (one modality or ``alignment=False``).
    epochs, pretrain_epochs, lr, batch_size
        Training settings (Adam).
    validation
        What early stopping watches (the classification loss of held-out reference labels; the
        best epoch's weights are kept and ``uns[key_added]["params"]["validation"]`` says what was
        held out). ``"section"`` (default): one whole reference section, drawn with
        ``random_state`` among those that hold both classes; it is not trained on, so the stop is
        chosen by how the model does on a section it has never seen, as the target will be. Needs
        two or more references (otherwise ``"spots"``, with a warning). ``"spots"``: a stratified
        random ``val_fraction`` of the reference spots (these sit beside training spots of the same
        sections, so their loss keeps falling while the model memorises the references).
        ``None``: no validation, all ``epochs`` are run.
    validation_sections
        With ``validation="section"`` and ``refit=True``: how many reference sections (drawn with
        ``random_state``, at most every eligible one) each hold out in turn for a selection run;
        the refit trains for the median of their best epochs, so one unlike section (e.g. of
        another patient, or nearly all one class) cannot choose alone. Each costs one more training.
    val_fraction
        Fraction of the labelled reference spots held out with ``validation="spots"``.
    patience
        Early-stopping patience in epochs (``None``: run all ``epochs``).
    refit
        With ``validation="section"``: after the held-out section has chosen the number of epochs,
        train again on every reference (that section included) for that many epochs, so no labelled
        section is lost to validation (twice the training time). ``False`` keeps the early-stopped model.
    average_from
        Stochastic weight averaging: from this epoch on, the model is the mean of the weights at the
        end of every epoch since (validation and early stopping judge that mean; the refit averages
        the same epochs). ``None``: the weights of the chosen epoch.
    layer
        Counts layer instead of ``X`` (all sections).
    %(random_state)s
    %(device)s
    model
        A trained :class:`stfuse.models.SpaCRD` to apply instead of training; its genes must be in the
        target (:class:`~stfuse.GeneMismatchError` otherwise).
    return_model
        Also return the model (to :meth:`~stfuse.models.SpaCRD.save` and apply to other sections).
    %(copy)s
    **model_kwargs
        Passed to :class:`stfuse.models.SpaCRD` (``dim``, ``hidden``, ``heads``, ``beta``, ``gamma``, ...).

    Returns
    -------
    ``None`` (or the copy when ``copy=True``), and the model when ``return_model=True`` (as
    ``(copy, model)`` when both). ``uns[key_added]`` holds ``threshold`` (value, method — GMM
    intersection or midpoint fallback — and the mixture), ``params``, ``history``, ``references``
    and ``genes``.

    Examples
    --------
    >>> import stfuse as sf
    >>> ref = sf.datasets.toy(n_spots=400, seed=0)
    >>> new = sf.datasets.toy(n_spots=400, seed=1)
    >>> model = sf.tl.spacrd(new, ref, use_image=False, epochs=5, dim=32, hidden=(64,), heads=2,
    ...                      return_model=True)
    >>> new.tables["table"].obs["spacrd"].value_counts().index.tolist()  # doctest: +SKIP
    ['normal', 'cancer']
    >>> model.save("spacrd_model/")  # doctest: +SKIP
    >>> sf.tl.spacrd(sf.datasets.toy(n_spots=400, seed=2), model=sf.models.SpaCRD.load("spacrd_model/"))  # doctest: +SKIP
    """
    from ..im import image_features

    refs = data.as_list(reference)
    use_image, use_genes = _check_args(
        refs, model, label_key, use_image=use_image, use_genes=use_genes, epochs=epochs, batch_size=batch_size,
        n_neighs=n_neighs, connectivity_key=connectivity_key, n_top_genes=n_top_genes, pretrain_epochs=pretrain_epochs,
        schedule=schedule, validation=validation, val_fraction=val_fraction, validation_sections=validation_sections)

    # --- resolve every section before computing anything -------------------------------------
    spots = get_spots(target, **selection(locals()), need_image=use_image, image_hint=_IMAGE_HINT)
    tname = data.section_name(spots, "target")
    sections = data.reference_sections(refs, table_key=table_key, image_for="SpaCRD with images" if use_image else None,
                                       image_hint=_IMAGE_HINT, label_key=label_key, positive=positive)
    y = data.binary_labels(sections, label_key, positive) if sections else None
    if use_genes:  # counts checked up front (NaN, negative, empty spots), not after training
        check_counts(spots.table, layer=layer, name=f"table of the target {tname!r}")
        for r in sections:
            check_counts(r.spots.table, layer=layer, name=f"table of reference {r.name!r}")
        if model is not None:
            model.check_genes(spots.table.var_names, what=f"the target section {tname!r}")

    # --- prepare: the registry of a new model, or the one the model was trained with -------------
    def features(s: Spots) -> Any:
        return image_features(s, encoder, weights=weights, device=device) if use_image else None

    reg = (_registry(sections, spots, use_genes=use_genes, use_image=use_image, n_top_genes=n_top_genes, layer=layer,
                     n_neighs=n_neighs, connectivity_key=connectivity_key, label_key=label_key, positive=positive)
           if model is None
           else model.registry or data.Registry("spacrd", genes=model.genes, normalisation=dict(NORMALISATION)))
    feats = features(spots)
    if feats is not None and model is None:
        reg.image_encoder = dict(feats.provenance)
    elif feats is not None:
        reg.require_encoder(feats.provenance, encoder)
    k = n_neighs if model is None else int(model.params["n_neighs"])
    X, image, nb_t, graph = _inputs(reg, spots, feats, k, layer)  # the target's graph checked before training

    # --- train -----------------------------------------------------------------------------------
    if model is None:
        model_kw = {"n_neighs": n_neighs, "use_image": use_image, "use_genes": use_genes,
                    "cross_attention": cross_attention, "vae": vae, "alignment": alignment, "device": device,
                    "random_state": random_state, **model_kwargs}
        fit_kw = {"pretrain_epochs": int(pretrain_epochs), "schedule": schedule, "lr": lr,
                  "batch_size": int(batch_size), "val_fraction": val_fraction, "average_from": average_from,
                  "random_state": random_state}
        model, ref_graphs = _train(reg, sections, y, features, layer=layer, epochs=epochs, patience=patience,
                                   validation=validation, refit=refit, validation_sections=int(validation_sections),
                                   model_kw=model_kw, fit_kw=fit_kw)

    # --- score the target, write ----------------------------------------------------------------
    scores = model.predict(X, image, nb_t)
    thr = gmm_threshold(scores, random_state=random_state)
    calls = pd.Categorical(np.where(scores >= thr.threshold, CANCER, NORMAL), categories=[NORMAL, CANCER])
    log.info(f"spacrd: {int((scores >= thr.threshold).sum())} of {len(scores)} spots of {tname!r} called cancer "
             f"(threshold {thr.threshold:.3g}, {thr.method})")
    out = record(
        spots, key_added,
        params=_params(model, reg, feats, label_key=label_key, n_top_genes=n_top_genes, random_state=random_state,
                       reused=refs == []),
        history=model.info.get("history", {}),
        inputs={"table_key": spots.table_key, "layer": layer, "image_features": feats.obsm_key if feats is not None else None,
                "graph": {"rule": reg.graph or {"method": "knn", "n_neighs": k}, "target": graph,
                          **({"references": ref_graphs} if refs else {})}},
        extra={"threshold": thr.as_dict(), "normalisation": dict(reg.normalisation),
               "references": list(reg.references), "genes": list(model.genes or [])},
        obs={K.score(key_added): scores, key_added: calls},
        embeddings=[feats] if feats is not None and not feats.cached else [], copy=copy)
    if return_model:
        return (out, model) if copy else model
    return out
