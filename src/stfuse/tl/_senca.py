"""``sf.tl.senca``: SENCA-st region identification (expression + H&E, or expression alone)."""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable
from typing import Any, get_args

import numpy as np
import pandas as pd

from .. import _check
from .. import _keys as K
from .. import _logging as log
from .._docs import inject_docs
from .._errors import InputError
from .._results import record
from .._spots import Spots, get_spots, selection
from ..data import Registry, SingleSection, prepare_section
from ..im import Encoder
from ..im._encoders import DEFAULT_ENCODER
from ..models import SENCA
from ._clustering import Method, cluster

__all__ = ["senca"]

_MODEL_KWARGS = tuple(
    k for k in inspect.signature(SENCA.__init__).parameters
    if k not in ("self", "n_genes", "n_image_features", "genes", "device", "random_state")
)
_CLUSTER_KWARGS = ("k_range", "max_ward_spots")


@inject_docs
def senca(
    sdata: Any,
    *,
    table_key: str | None = None,
    n_clusters: int | None = None,
    key_added: str = "senca",
    n_top_genes: int | None = 500,
    n_neighs: int = 4,
    connectivity_key: str | None = "spatial_connectivities",
    steps: int = 200,
    patience: int | None = None,
    lr: float = 5e-4,
    cluster_method: str = "kmeans",
    encoder: str | Encoder | Callable = DEFAULT_ENCODER,
    image: bool = True,
    image_rep: str | None = None,
    patch_spacings: float = 3.0,
    weights: str | os.PathLike | None = None,
    layer: str | None = None,
    min_counts: int = 10,
    shapes_key: str | None = None,
    image_key: str | None = None,
    library_id: str | None = None,
    library_key: str | None = None,
    coordinate_system: str | None = None,
    random_state: int = 0,
    device: str = "auto",
    copy: bool = False,
    return_model: bool = False,
    model: SENCA | None = None,
    **kwargs: Any,
) -> Any:
    """Identify tissue regions with SENCA-st (Liyanaarachchi et al., arXiv 2511.08573).

    SENCA-st fuses spatial transcriptomics with the H&E image: a transcriptomic branch (input
    masking, linear layer, propagation over the spot graph, a transformer block) and an image branch
    (patch features through a fully connected layer) meet in a shared encoder of neighbourhood
    cross-attention, trained with hierarchical NT-Xent (local windows + coarser pools) and a
    reconstruction loss; the shared embedding is clustered (k-means by default; the paper's Ward's
    method, a Gaussian mixture and Leiden/Louvain with ``cluster_method``). See
    :class:`stfuse.models.SENCA` for the architecture and the choices made where the paper is silent.

    Genes with fewer than ``min_counts`` total counts are dropped, counts are normalised and
    log-transformed, and the ``n_top_genes`` most variable genes by normalised dispersion (scanpy
    flavour ``"seurat"``) are kept. The spot graph is ``obsp[connectivity_key]`` when the table has
    one (e.g. from :func:`squidpy.gr.spatial_neighbors`), else every spot is linked to its
    ``n_neighs`` nearest spots.
    Image features are those of a square patch of ``patch_spacings`` spot spacings around each spot,
    reused from the embedding cache when the same encoder and patch were used before.

    Parameters
    ----------
    %(sdata)s
    %(table_key)s
    n_clusters
        Number of regions. ``None``: chosen in ``k_range`` (default 3–12) by the clusterer: the best
        silhouette (k-means), the lowest BIC (Gaussian mixture), the largest gap between merge
        heights (Ward), or Leiden/Louvain at resolution 1; the choice is logged and stored in
        ``uns[key_added]["clustering"]``.
    %(key_added)s
    n_top_genes
        Highly variable genes kept [500]; ``None`` keeps all genes.
    n_neighs
        Neighbours per spot when the spot graph is built here [4, the legacy ST lattice; 6 suits Visium].
    connectivity_key
        Spot graph to use from ``obsp`` (e.g. ``"spatial_connectivities"`` from
        :func:`squidpy.gr.spatial_neighbors` or :func:`stfuse.gr.spatial_graph`); when the table has no
        such key, every spot is linked to its ``n_neighs`` nearest spots. ``None`` always builds that
        graph.
    steps
        Adam steps, each on one mini-batch of spatial tiles (≤ ``batch_size`` spots, so a step is a
        full-batch epoch on sections of up to 4096 spots) [200: the toy section's regions are found
        from about 200 steps on, see ``benchmarks/RESULTS.md``]. The paper trains 40 epochs
        (``steps=40`` on such sections).
    patience
        Stop early when the loss of a pass through the section has not improved for this many passes
        (the best weights are kept); ``None`` trains all ``steps``. The steps taken are in
        ``uns[key_added]["history"]["steps"]``.
    lr
        Adam learning rate [5e-4].
    cluster_method
        How the shared embedding is clustered: ``"kmeans"`` (default; above Ward on the toy section
        and the HER2ST sections, see ``benchmarks/RESULTS.md``), ``"ward"`` (the paper's
        agglomerative clustering), ``"gmm"`` (Gaussian mixture, as mclust in
        STAGATE/GraphST), ``"leiden"`` or ``"louvain"`` (on a kNN graph of the embedding; resolution
        searched to give ``n_clusters``).
    encoder
        Image encoder (see :func:`stfuse.im.get_encoder`): ``"tissue"`` (default; shipped, offline),
        ``"histospace"`` (shipped), ``"resnet50"`` (the paper's), ``"timm:<name>"``, an :class:`stfuse.im.Encoder` or a module.
    image
        Use the H&E image. ``False`` runs the gene-only model (for sections without an image):
        the image branch is replaced by a second, independently masked view of the expression.
    image_rep
        Use image features already in ``obsm[image_rep]`` (e.g. from :func:`stfuse.im.embed` with
        any encoder) instead of encoding the image; the section then needs no image.
    patch_spacings
        Side of each spot's image patch in spot spacings (centre-to-centre distances) [3: the spot,
        its ring of neighbours and half-way to the next ring]; ``size`` of :func:`stfuse.im.embed`
        and :func:`stfuse.tl.stmic` counts spot diameters instead.
    weights
        Local weights file for a named encoder.
    layer
        Counts layer to use instead of ``X``.
    min_counts
        Genes with fewer total counts are dropped [10].
    %(shapes_key)s
    %(image_key)s
    %(library_id)s
    %(library_key)s
    %(coordinate_system)s
    %(random_state)s
    %(device)s
    %(copy)s
    return_model
        Also return the trained :class:`stfuse.models.SENCA` (to save it or apply it to other sections
        with ``model=``).
    model
        A :class:`stfuse.models.SENCA` trained by this tool (``return_model=True``, or
        :meth:`stfuse.models.SENCA.load` of one saved from it) to apply instead of training: the section
        is prepared as the model's training section was (its genes in its order, the same
        normalisation and ``min_counts``, the same spot graph settings, image features of the same
        encoder and patch size), embedded and clustered with ``n_clusters`` / ``cluster_method``.
        Preparation options left at their defaults take the model's values; a value that contradicts
        the model, a training option (``steps``, ``patience``, ``lr``) or a model parameter other than
        the model's raises :class:`~stfuse.InputError`; missing genes raise
        :class:`~stfuse.GeneMismatchError`. ``encoder`` must be the encoder the model was trained with.
        ``uns[key_added]["params"]["trained_here"]`` is ``False``.
    **kwargs
        Model parameters of :class:`stfuse.models.SENCA` (``hidden``, ``latent``, ``mask_rate``, ``contrast``,
        ``cross_attention``, ``hierarchical``, ``combine``, ``lam``, ``recon_image_weight``, ``batch_size``, ...) and
        clustering parameters ``k_range`` and ``max_ward_spots`` (Ward's tree is built on at most
        this many spots [10000]; the others join the nearest cluster mean).

    Returns
    -------
    ``None``; with ``copy=True`` the modified copy; with ``return_model=True`` the model (or
    ``(copy, model)`` when both). Writes ``obs[key_added]`` (categorical regions),
    ``obsm[f"X_{key_added}"]`` (shared embedding S) and ``uns[key_added]`` (``params``, per-epoch
    loss terms in ``history``, ``inputs``: the ``obsm`` key of the image features and the spot graph,
    ``n_clusters`` and how it was chosen; ``params["trained_here"]``: trained by this call, or
    ``False`` for ``model=``, whose training history is recorded); image features computed on the
    way are cached in ``obsm`` (provenance in ``uns["stfuse_embeddings"]``). The object is left
    unchanged if anything fails.

    Examples
    --------
    >>> import stfuse as sf
    >>> sdata = sf.datasets.toy(n_spots=400, image=False)
    >>> sf.tl.senca(sdata, image=False, n_clusters=3, steps=2, hidden=32, latent=16)
    >>> sdata.tables["table"].obs["senca"].cat.categories.tolist()
    ['0', '1', '2']

    Train on one section, save the model, apply it to another section (no training):

    >>> model = sf.tl.senca(sdata, image=False, n_clusters=3, steps=2, hidden=32, latent=16, return_model=True)
    >>> model.save("senca_model/")  # doctest: +SKIP
    >>> other = sf.datasets.toy(n_spots=400, seed=1, image=False)
    >>> sf.tl.senca(other, n_clusters=3, model=sf.models.SENCA.load("senca_model/"))  # doctest: +SKIP
    >>> sf.tl.senca(other, n_clusters=3, model=model)
    >>> other.tables["table"].uns["senca"]["params"]["trained_here"]
    False

    Compose with scanpy:

    >>> import scanpy as sc
    >>> adata = sdata.tables["table"]
    >>> sc.pp.neighbors(adata, use_rep="X_senca")
    >>> sc.tl.umap(adata)  # doctest: +SKIP
    """
    given = dict(locals())
    prep, kw, cluster_kw = _preparation(model, given, kwargs)
    spots = _resolve(sdata, selection(given), image=prep["image"], image_rep=prep["image_rep"])
    n = spots.n_obs
    _check.key_added(key_added)
    _check.n_neighs(prep["n_neighs"], n)
    _check.n_clusters(n_clusters, n)
    _check.positive_int("steps", steps)
    if patience is not None:
        _check.positive_int("patience", patience)
    _check.choice("cluster_method", cluster_method, get_args(Method))
    _check.positive("lr", lr)
    if prep["n_top_genes"] is not None:
        _check.positive_int("n_top_genes", prep["n_top_genes"], minimum=2)
    _check.positive("patch_spacings", prep["patch_spacings"])
    if prep["image_rep"] is not None:
        _check.obsm_key(spots.table, prep["image_rep"], fix="Embed the image first with sf.im.embed(sdata, ...), or "
                        "leave image_rep=None.")
    if model is not None:
        model.check_genes(spots.table.var_names, what=f"section {spots.name!r}")

    sec = prepare_section(spots, n_neighs=int(prep["n_neighs"]), connectivity_key=prep["connectivity_key"], layer=layer,
                          min_counts=int(prep["min_counts"]), n_top_genes=prep["n_top_genes"], genes=prep["genes"],
                          image=prep["image"], image_rep=prep["image_rep"], encoder=encoder,
                          patch_spacings=prep["patch_spacings"], weights=weights, device=device)
    X, F, nbr = sec.X, sec.F, sec.nbr
    trained_here = model is None
    if trained_here:
        model = SENCA(X.shape[1], None if F is None else F.shape[1], genes=sec.genes, device=device,
                      random_state=random_state, **kw)
        model.registry = _registry(sec, spots, prep, layer)
        log.info(f"SENCA on {n} spots x {X.shape[1]} genes" + (f" + {F.shape[1]} image features" if F is not None
                                                               else " (gene-only)"))
        history = model.fit(X, F, nbr, spots.centers, steps=int(steps), lr=float(lr), patience=patience)
        model.info["training"] = {"steps": int(steps), "patience": patience, "lr": float(lr)}
    else:
        if sec.features is not None:
            model.registry.require_encoder(sec.features.provenance, encoder)
        log.info(f"SENCA: applying a trained model to {n} spots (no training)")
        history = model.info.get("history", {})
    S = model.embed(X, F, nbr, spots.centers)
    opts = {"max_spots": int(cluster_kw.get("max_ward_spots", 10_000))} if cluster_method == "ward" else {}
    labels, k, how = cluster(S, n_clusters, method=cluster_method, k_range=tuple(cluster_kw.get("k_range", (3, 12))),
                             random_state=random_state, **opts)
    if n_clusters is None:
        log.info(f"SENCA: {k} clusters chosen by {cluster_method} ({how.get('chosen_from')})")

    params = {
        "n_clusters": None if n_clusters is None else int(n_clusters), "cluster_method": cluster_method,
        **_params(model, sec, prep, trained_here=trained_here), "layer": layer, "random_state": int(random_state),
        **cluster_kw,
    }
    cats = [str(i) for i in range(k)]
    out = record(spots, key_added, params=params, history=history, inputs=sec.inputs,
                 extra={"n_clusters": int(k), "clustering": how, "genes": np.asarray(sec.genes, dtype=object)},
                 obs={key_added: pd.Categorical(labels.astype(str), categories=cats)},
                 obsm={K.obsm(key_added): S}, embeddings=sec.new_embeddings, copy=copy)
    if return_model:
        return (out, model) if copy else model
    return out


#: preparation options of :func:`senca` that a trained model fixes (read from its registry)
_PREP = ("n_top_genes", "min_counts", "n_neighs", "connectivity_key", "patch_spacings", "image")
#: options that only training uses
_TRAIN_ONLY = ("steps", "patience", "lr")


def _preparation(model: SENCA | None, given: dict[str, Any], kwargs: dict[str, Any]
                 ) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """How to prepare the section (the arguments, or what ``model`` was trained with), model and clustering kwargs.

    With a model, options left at their defaults take the model's values; options that contradict the
    model, training options and model parameters are refused.
    """
    _check.known_kwargs(kwargs, "sf.tl.senca", model=_MODEL_KWARGS, clustering=_CLUSTER_KWARGS)
    cluster_kw = {k: kwargs[k] for k in _CLUSTER_KWARGS if k in kwargs}
    kw = {k: v for k, v in kwargs.items() if k not in _CLUSTER_KWARGS}
    prep = {k: given[k] for k in (*_PREP, "image_rep")} | {"genes": None}
    if model is None:
        return prep, kw, cluster_kw
    if not isinstance(model, SENCA):
        raise InputError(f"model must be an sf.models.SENCA, got {type(model).__name__}.")
    reg = model.registry
    if not model.is_trained or reg is None or reg.tool != "senca" or reg.genes is None:
        raise InputError("model must be a SENCA model trained by sf.tl.senca (it records how its section was "
                         "prepared): train one with sf.tl.senca(sdata, ..., return_model=True), or load one saved "
                         "from it with sf.models.SENCA.load(path).")
    training = [k for k in _TRAIN_ONLY if given[k] != _DEFAULTS[k]]
    training += sorted(k for k, v in kw.items() if model.params.get(k) != v)  # model parameters other than its own
    if training:
        raise InputError(f"{training} only apply to training a new model; model= applies a trained model and does "
                         "not train. Leave them out, or pass model=None to train a new model.")
    norm, graph, tile, enc = reg.normalisation, reg.graph or {}, reg.tile or {}, reg.image_encoder or {}
    fixed = {"n_top_genes": norm.get("n_top_genes"), "min_counts": norm.get("min_counts", 0),
             "n_neighs": graph.get("n_neighs"), "connectivity_key": graph.get("connectivity_key"),
             "patch_spacings": tile.get("patch_spacings", _DEFAULTS["patch_spacings"]),
             "image": model.params["n_image_features"] is not None}
    for name, value in fixed.items():
        if given[name] != _DEFAULTS[name] and given[name] != value:
            raise InputError(f"{name}={given[name]!r} differs from the model's {name}={value!r}: a trained model "
                             f"prepares every section as it was trained. Leave {name} out, or pass model=None to "
                             "train a new model.")
    image_rep = given["image_rep"] if given["image_rep"] is not None else enc.get("obsm_key")
    if image_rep is not None and not fixed["image"]:
        raise InputError("This SENCA model is gene-only; it takes no image features (leave image_rep=None).")
    return {**fixed, "image_rep": image_rep, "genes": list(reg.genes)}, kw, cluster_kw


def _registry(sec: SingleSection, spots: Spots, prep: dict[str, Any], layer: str | None) -> Registry:
    """How the training section was prepared, saved with the model and re-applied by ``senca(model=...)``."""
    image = sec.F is not None
    return Registry(
        "senca", genes=list(sec.genes), layer=layer,
        normalisation={"target_sum": 1e4, "log1p": True, "min_counts": int(prep["min_counts"]),
                       "n_top_genes": prep["n_top_genes"], "flavor": "seurat", "scope": "per section"},
        image_encoder=(None if not image else dict(sec.features.provenance) if sec.features is not None
                       else {"obsm_key": prep["image_rep"]}),
        image_scaling="z-score with the training section's mean and sd (kept in the model)" if image else None,
        tile={"patch_spacings": float(prep["patch_spacings"])} if sec.features is not None else None,
        graph={"method": "knn", "n_neighs": int(prep["n_neighs"]), "connectivity_key": prep["connectivity_key"]},
        references=[str(spots.name)],
    )


def _params(model: SENCA, sec: SingleSection, prep: dict[str, Any], *, trained_here: bool) -> dict[str, Any]:
    """The parameters recorded in ``uns[key_added]["params"]``: preparation, training and model settings."""
    train = model.info.get("training", {})
    return {
        "n_top_genes": prep["n_top_genes"], "n_neighs": int(prep["n_neighs"]), "connectivity_key": prep["connectivity_key"],
        "steps": train.get("steps"), "patience": train.get("patience"), "lr": train.get("lr"),
        "image": sec.F is not None, "image_rep": prep["image_rep"],
        "encoder": None if sec.features is None else sec.features.provenance.get("encoder"),
        "image_features": sec.inputs["image_features"], "patch_spacings": float(prep["patch_spacings"]),
        "min_counts": int(prep["min_counts"]), "autocast": model.info.get("autocast"), "trained_here": trained_here,
        **({} if trained_here else {"model": repr(model), "trained_on": list(model.registry.references)}),
        **{k_: v for k_, v in model.params.items() if k_ in _MODEL_KWARGS},
    }


def _resolve(sdata: Any, select: dict[str, Any], *, image: bool, image_rep: str | None) -> Spots:
    """The Spots view, with an image unless gene-only or ``image_rep``."""
    spots = get_spots(sdata, **select)
    if image and image_rep is None:
        spots.require_image(
            "sf.tl.senca with image=True",
            fix="Pass image=False for the gene-only model, or image_rep='X_...' to use image features already in obsm.",
        )
    return spots


_DEFAULTS = {k: p.default for k, p in inspect.signature(senca).parameters.items()}
