"""``sf.tl.spacrd``: SpaCRD cancer-region detection, trained on labelled sections, applied to another."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any, Literal

import numpy as np
import pandas as pd

from .. import _keys as K
from .. import _logging as log
from .._docs import inject_docs
from .._errors import GeneMismatchError, InputError, KeyNotFoundError
from .._spots import Spots, get_spots
from ..gr import knn
from ..models import SpaCRD, gmm_threshold
from ..pp import check_counts, common_genes, prepare_expression, shared_hvg

__all__ = ["spacrd"]

CANCER, NORMAL = "cancer", "normal"
#: expression preparation of SpaCRD (per section)
NORMALISATION = {"target_sum": 1e4, "log1p": True, "scale": "minmax", "scope": "per section"}
IMAGE_SCALING = "per-section z-score of each image feature"
_IMAGE_HINT = ("Attach the H&E image to the SpatialData, or run expression only with use_image=False "
               "(a model trained with images needs images on every section it scores).")


def _as_list(reference: Any) -> list[Any]:
    if reference is None:
        return []
    if isinstance(reference, list | tuple):
        return list(reference)
    return [reference]


def _section_name(spots: Spots, fallback: str) -> str:
    sec = spots.table.obs.get(K.SECTION)
    if sec is not None:
        values = pd.unique(sec.astype(str))
        if len(values) == 1:
            return str(values[0])
    return spots.name or fallback


def _labels(spots: Spots, label_key: str, positive: Any, name: str) -> np.ndarray:
    """1 / 0 / -1 (missing) per spot from ``obs[label_key]``; ``positive`` is a value or a list of values."""
    obs = spots.table.obs
    if label_key not in obs.columns:
        raise KeyNotFoundError(
            f"Reference {name!r} has no obs[{label_key!r}]; its labelled columns are {list(obs.columns)}. "
            "Pass label_key=<column with the cancer/normal annotation> (and positive=<its cancer value(s)>)."
        )
    col = obs[label_key]
    values = list(positive) if isinstance(positive, list | tuple | set | frozenset) else [positive]
    missing = col.isna().to_numpy()
    pos = col.isin(values).to_numpy() & ~missing
    if missing.all():
        raise InputError(f"obs[{label_key!r}] of reference {name!r} is missing (NaN) for every spot.")
    return np.where(missing, -1, pos.astype(np.int64))


def _neighbours(spots: Spots, k: int) -> np.ndarray:
    if spots.n_obs < 2:
        return np.full((spots.n_obs, k), -1, np.int64)
    idx, _ = knn(spots.centers, min(k, spots.n_obs - 1))
    if idx.shape[1] < k:
        idx = np.hstack([idx, np.full((len(idx), k - idx.shape[1]), -1, np.int64)])
    return idx


def _zscore(X: np.ndarray) -> np.ndarray:
    mu = X.mean(axis=0)
    sd = X.std(axis=0)
    sd[sd == 0] = 1.0
    return ((X - mu) / sd).astype(np.float32)


def _same_encoder(a: dict[str, Any], b: dict[str, Any]) -> bool:
    keys = ("encoder", "checksum", "input_px", "output_dim")
    return all(str(a.get(k)) == str(b.get(k)) for k in keys)


@inject_docs
def spacrd(
    target: Any,
    reference: Any | Sequence[Any] | None = None,
    *,
    label_key: str = K.CANCER,
    positive: Any = True,
    table_key: str = K.TABLE,
    shapes_key: str | None = None,
    image_key: str | None = None,
    key_added: str = "spacrd",
    encoder: str | Callable | Any = "histospace",
    encoder_weights: str | os.PathLike | None = None,
    n_neighs: int = 6,
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
    val_fraction: float = 0.1,
    patience: int | None = 10,
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
    key_added
        Writes ``obs[f"{key_added}_score"]`` (cancer probability, 0..1), ``obs[key_added]``
        (categorical ``cancer``/``normal``) and ``uns[key_added]``.
    encoder
        Image encoder for the image features (``"histospace"``, ``"resnet50"``, ``"timm:<model>"``, an
        :class:`stfuse.im.Encoder` or a torch module; see :func:`stfuse.im.get_encoder`). A reused
        ``model`` needs the encoder it was trained with.
    encoder_weights
        Local weights file of the encoder.
    n_neighs
        Nearest spots attended to by each spot (paper: 6).
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
    val_fraction
        Fraction of the labelled **reference** spots held out to monitor the loss (early stopping).
    patience
        Early-stopping patience in epochs (``None``: run all ``epochs``).
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

    refs = _as_list(reference)
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
        use_image, use_genes = model.uses_image, model.uses_genes
    if not use_image and not use_genes:
        raise InputError("use_image=False and use_genes=False leave SpaCRD with no input; keep at least one.")
    for name, value in (("epochs", epochs), ("batch_size", batch_size), ("n_neighs", n_neighs),
                        ("n_top_genes", n_top_genes)):
        if not isinstance(value, int | np.integer) or value < 1:
            raise InputError(f"{name} must be a positive integer, got {value!r}.")
    if not isinstance(pretrain_epochs, int | np.integer) or pretrain_epochs < 0:
        raise InputError(f"pretrain_epochs must be a non-negative integer, got {pretrain_epochs!r}.")
    if schedule not in ("staged", "joint"):
        raise InputError(f"schedule must be 'staged' or 'joint', got {schedule!r}.")
    if not 0.0 <= val_fraction < 0.9:
        raise InputError(f"val_fraction must be in [0, 0.9), got {val_fraction}.")

    # --- resolve every section before computing anything -------------------------------------
    spots = get_spots(target, table_key=table_key, shapes_key=shapes_key, image_key=image_key, need_image=use_image,
                      image_hint=_IMAGE_HINT)
    tname = _section_name(spots, "target")
    ref_spots, ref_names, ref_labels = [], [], []
    for i, r in enumerate(refs):
        s = get_spots(r, table_key=table_key)
        name = _section_name(s, f"reference {i}")
        if use_image:
            s.require_image(f"SpaCRD with images (reference {name!r})", fix=_IMAGE_HINT)
        ref_labels.append(_labels(s, label_key, positive, name))
        ref_spots.append(s)
        ref_names.append(name)
    if refs:
        y = np.concatenate(ref_labels)
        n_pos, n_neg = int((y == 1).sum()), int((y == 0).sum())
        if n_pos == 0 or n_neg == 0:
            present = sorted({str(v) for s in ref_spots for v in pd.unique(s.table.obs[label_key].dropna())})[:10]
            raise InputError(
                f"The reference labels hold a single class ({n_pos} cancer, {n_neg} normal spots; obs[{label_key!r}] "
                f"values: {present}, positive={positive!r}). SpaCRD needs cancer and normal spots: check label_key "
                "and positive, or add a reference with the missing class."
            )

    # --- genes ----------------------------------------------------------------------------------
    genes: list[str] | None = None
    if use_genes:  # counts checked up front (NaN, negative, empty spots), not after training
        check_counts(spots.table, layer=layer, name=f"table of the target {tname!r}")
        for s, name in zip(ref_spots, ref_names):
            check_counts(s.table, layer=layer, name=f"table of reference {name!r}")
        if model is not None:
            model.check_genes(spots.table.var_names, what=f"the target section {tname!r}")
            genes = list(model.genes)
        else:
            shared = common_genes(*[s.table for s in ref_spots], spots.table)
            if not shared:
                raise GeneMismatchError(
                    f"The references {ref_names} and the target {tname!r} share no gene name. Check that all use the "
                    "same gene identifiers (symbols vs Ensembl ids) in var_names."
                )
            genes = shared_hvg(*[s.table for s in ref_spots], genes=shared, n_top_genes=n_top_genes, layer=layer)
            log.info(f"spacrd: {len(shared)} genes shared by {len(ref_spots)} reference(s) and the target; "
                     f"{len(genes)} highly variable genes used")

    def expression(s: Spots) -> np.ndarray | None:
        if genes is None:
            return None
        return prepare_expression(s.table, genes=genes, layer=layer, target_sum=NORMALISATION["target_sum"],
                                  log1p=True, scale="minmax").X

    # --- image features -------------------------------------------------------------------------
    target_feats = None
    if use_image:
        target_feats = image_features(spots, encoder, weights=encoder_weights, device=device)
        if model is not None:
            trained = model.info.get("image_encoder", {})
            if not _same_encoder(trained, target_feats.provenance):
                raise InputError(
                    f"The model was trained on image features of encoder {trained.get('encoder')!r} (checksum "
                    f"{trained.get('checksum')}); encoder={encoder!r} gives {target_feats.provenance.get('encoder')!r} "
                    f"(checksum {target_feats.provenance.get('checksum')}). Pass the encoder the model was trained with."
                )

    # --- train -----------------------------------------------------------------------------------
    if model is None:
        Xg = [expression(s) for s in ref_spots]
        Xi = [_zscore(image_features(s, encoder, weights=encoder_weights, device=device).X) for s in ref_spots] \
            if use_image else None
        offsets = np.cumsum([0] + [s.n_obs for s in ref_spots])
        nb = np.vstack([np.where(n >= 0, n + o, -1) for n, o in
                        zip((_neighbours(s, n_neighs) for s in ref_spots), offsets[:-1])])
        model = SpaCRD(n_genes=len(genes) if genes else 0, n_image=Xi[0].shape[1] if Xi else 0, genes=genes,
                       n_neighs=n_neighs, use_image=use_image, use_genes=use_genes, cross_attention=cross_attention,
                       vae=vae, alignment=alignment, device=device, random_state=random_state, **model_kwargs)
        log.info(f"spacrd: training on {int(offsets[-1])} spots of {len(ref_spots)} reference section(s) "
                 f"({int((y == 1).sum())} cancer, {int((y == 0).sum())} normal, {int((y < 0).sum())} unlabelled)")
        model.info.update({
            "references": ref_names, "label_key": label_key,
            "positive": list(positive) if isinstance(positive, list | tuple | set) else positive,
            "normalisation": dict(NORMALISATION), "image_scaling": IMAGE_SCALING if use_image else None,
            "image_encoder": dict(target_feats.provenance) if target_feats is not None else None,
        })
        model.fit(np.vstack(Xg) if genes else None, np.vstack(Xi) if Xi else None, nb, y, epochs=int(epochs),
                  pretrain_epochs=int(pretrain_epochs), schedule=schedule, lr=lr, batch_size=int(batch_size),
                  val_fraction=val_fraction, patience=patience, random_state=random_state)
        del Xg, Xi

    # --- score the target -------------------------------------------------------------------
    k = int(model.params["n_neighs"])
    scores = model.predict(expression(spots), _zscore(target_feats.X) if target_feats is not None else None,
                           _neighbours(spots, k))
    thr = gmm_threshold(scores, random_state=random_state)
    calls = pd.Categorical(np.where(scores >= thr.threshold, CANCER, NORMAL), categories=[NORMAL, CANCER])
    log.info(f"spacrd: {int((scores >= thr.threshold).sum())} of {len(scores)} spots of {tname!r} called cancer "
             f"(threshold {thr.threshold:.3g}, {thr.method})")
    training = model.info.get("training", {})
    uns = {
        "threshold": thr.as_dict(),
        "params": {
            "label_key": model.info.get("label_key", label_key), "n_neighs": k,
            "n_top_genes": int(n_top_genes), "use_image": model.uses_image, "use_genes": model.uses_genes,
            "cross_attention": bool(model.params["cross_attention"]), "vae": bool(model.params["vae"]),
            "alignment": bool(model.params["alignment"]), "random_state": int(random_state),
            "encoder": (target_feats.provenance.get("encoder") if target_feats is not None else None),
            "reused_model": refs == [], "model": repr(model),
            **{f"train_{a}": v for a, v in training.items() if v is not None},
            **{a: model.params[a] for a in ("dim", "heads", "latent", "beta", "gamma", "temperature", "alpha")},
        },
        "normalisation": {a: v for a, v in model.info.get("normalisation", NORMALISATION).items()},
        "history": _history(model.info.get("history", {})),
        "references": list(model.info.get("references", [])),
        "genes": list(model.genes or []),
    }
    uns["params"] = {a: v for a, v in uns["params"].items() if v is not None}
    feats = [target_feats] if target_feats is not None and not target_feats.cached else []
    out = spots.write(key_added, obs={K.score(key_added): scores, key_added: calls}, uns={key_added: uns},
                      embeddings=feats, copy=copy)
    if return_model:
        return (out, model) if copy else model
    return out


def _history(h: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in h.items():
        out[k] = _history(v) if isinstance(v, dict) else np.asarray(v, dtype=float)
    return out
