"""stMIC: image-aware clustering (Song et al., PSB) — PCA of expression + PCA of image features, Louvain."""

from __future__ import annotations

import os
import time
import warnings
from collections.abc import Callable
from typing import Any, Literal, get_args

import numpy as np
import pandas as pd

from .. import _check
from .. import _keys as K
from .. import _logging as log
from .._docs import inject_docs
from .._errors import InputError, KeyNotFoundError
from .._results import record
from .._settings import start_numba_threads
from .._spots import get_spots, selection
from ..data import prepare_pcs
from ..im._encoders import DEFAULT_ENCODER
from ._clustering import Flavor, Method, cluster

__all__ = ["stmic", "stmic_markers"]

Modality = Literal["both", "expression", "image"]

NO_IMAGE_HINT = (
    "stMIC clusters expression together with the image and does not fall back to expression alone. For "
    "expression-only domains use sf.tl.senca(sdata, image=False), or scanpy (sc.pp.pca, sc.pp.neighbors, "
    "sc.tl.leiden); sf.tl.stmic(..., modality='expression') runs stMIC's expression branch on purpose."
)


def _stain_name(stain: Any) -> str:
    if stain is None:
        return "none"
    return stain if isinstance(stain, str) else type(stain).__name__


@inject_docs
def stmic(
    sdata: Any,
    *,
    table_key: str | None = None,
    n_pcs: int = 10,
    n_neighs: int = 39,
    resolution: float | None = None,
    n_clusters: int | None = None,
    modality: Modality = "both",
    encoder: str | Callable = DEFAULT_ENCODER,
    weights: str | os.PathLike | None = None,
    image_weight: float = 1.0,
    size: float = 1.0,
    stain: Literal["macenko", "reinhard"] | Any | None = None,
    cluster_method: Method = "louvain",
    flavor: Flavor | None = None,
    layer: str | None = None,
    max_steps: int = 30,
    key_added: str = "stmic",
    random_state: int = 0,
    device: str = "auto",
    batch_size: int = 64,
    shapes_key: str | None = None,
    image_key: str | None = None,
    library_id: str | None = None,
    library_key: str | None = None,
    coordinate_system: str | None = None,
    copy: bool = False,
) -> Any:
    """Image-aware clustering of spots with stMIC (Song et al., PSB).

    Expression: counts normalised to 10⁴ per spot, ``log1p``, every gene scaled to unit variance,
    PCA to ``n_pcs`` components. Image: features of a patch of ``size`` spot diameters around
    every spot (:func:`stfuse.im.image_features`, any ``sf.im`` encoder; the paper used an ImageNet
    ResNet-50), standardised, PCA to ``n_pcs``. The two blocks of PC scores are concatenated as they
    are, as in the paper (the image block multiplied by ``image_weight``; as the expression PCs
    summarise thousands of unit-variance genes, they usually carry more variance than the image PCs).
    The ``2 * n_pcs`` concatenation is clustered by Louvain (or Leiden) on its symmetric, unweighted
    ``n_neighs``-nearest-neighbour graph (exact Euclidean neighbours), or, with ``cluster_method``, by
    k-means, a Gaussian mixture or Ward's method on the concatenation itself.

    The paper tuned the Louvain resolution in a GUI whose scale runs opposite to scanpy's; its values
    (1.5–1.9) do not carry over. Give ``n_clusters`` instead (the resolution is searched, see below)
    or ``resolution`` in scanpy's convention (higher = more clusters; default 1.0).

    **Resolution search** (``n_clusters=``): deterministic geometric bisection. Starting from the
    bracket [0.1, 1], it widens ×/÷ 4 (within [10⁻³, 10³]) until the cluster counts enclose
    ``n_clusters``, then bisects in log-space until a run gives exactly ``n_clusters`` — at most
    ``max_steps`` Louvain runs, each seeded with ``random_state``. If no run gives the exact count, the
    closest run is kept and a warning names the count and resolution; every step is recorded in
    ``uns[key_added]["search"]``.

    Sections without an H&E image are refused (with ``modality="both"`` or ``"image"``) instead of
    silently clustering expression alone.

    Parameters
    ----------
    %(sdata)s
    %(table_key)s
    n_pcs
        Principal components per modality (10 in the paper).
    n_neighs
        Neighbours of the kNN graph (39 in the paper).
    resolution
        Louvain/Leiden resolution (scanpy's convention). Default 1.0 unless ``n_clusters`` is given.
    n_clusters
        Wanted number of clusters: the resolution is searched (see above). Exclusive with ``resolution``.
    modality
        ``"both"`` (stMIC), or the ablations ``"expression"`` (expression PCs only; no image needed) and
        ``"image"`` (image PCs only).
    encoder
        Image encoder: ``"tissue"`` (default, shipped weights), ``"histospace"`` (shipped), ``"resnet50"``
        (the paper's; ImageNet weights), ``"timm:<model>"``, an :class:`stfuse.im.Encoder` or a ``torch.nn.Module``.
    weights
        Local weights file for a named encoder.
    image_weight
        Factor on the image PC scores before concatenation (1 = the paper's plain concatenation; larger
        values give the image more say in the distances). Used with ``modality="both"`` only.
    size
        Image patch side in spot diameters (1 in the paper; ``size`` as in :func:`stfuse.im.embed`).
    stain
        Stain normalisation of the patches before encoding: ``None`` (the paper's), ``"macenko"``,
        ``"reinhard"`` or a fitted :class:`stfuse.im.StainNormalizer` (see :func:`stfuse.im.image_features`).
    cluster_method
        ``"louvain"`` (igraph multilevel, the paper's) or ``"leiden"`` (igraph, modularity) on the kNN
        graph above; or ``"kmeans"``, ``"gmm"`` (Gaussian mixture, mclust-style) or ``"ward"`` on the
        concatenated PCs (these need ``n_clusters``, or choose it from ``k_range`` 3–12 when both
        ``n_clusters`` and ``resolution`` are ``None``; they suit tissue where one region is most of
        the section, which a community search cuts into balanced pieces).
    flavor
        Deprecated name of ``cluster_method`` (``"louvain"`` or ``"leiden"``).
    layer
        Layer holding raw counts (default ``X``).
    max_steps
        Most clustering runs of the resolution search.
    %(key_added)s
    %(random_state)s
    %(device)s
    batch_size
        Image patches per encoder batch.
    %(shapes_key)s
    %(image_key)s
    %(library_id)s
    %(library_key)s
    %(coordinate_system)s
    %(copy)s

    %(returns_inplace)s
    Writes ``obs[key_added]`` (categorical clusters ``"0"``, ``"1"``, … largest first),
    ``obsm[f"X_{key_added}"]`` (the ``2 * n_pcs`` weighted concatenation; ``n_pcs`` columns for a single
    modality), ``uns[key_added]`` (``params``, ``inputs``, ``resolution``, ``n_clusters``, ``search``,
    explained variance, ``encoder`` provenance), and caches the image features in ``obsm`` (reused next time).

    Examples
    --------
    >>> import torch
    >>> import stfuse as sf
    >>> sdata = sf.datasets.toy(n_spots=400)
    >>> net = torch.nn.Sequential(torch.nn.Conv2d(3, 16, 5, stride=2), torch.nn.ReLU(),
    ...                           torch.nn.AdaptiveAvgPool2d(2), torch.nn.Flatten())
    >>> enc = sf.im.Encoder.from_module(net, name="tiny", input_px=32)
    >>> sf.tl.stmic(sdata, n_clusters=4, encoder=enc)
    >>> sdata.tables["table"].obs["stmic"].nunique()
    4
    >>> sdata.tables["table"].obsm["X_stmic"].shape
    (400, 20)
    """
    t0 = time.perf_counter()
    _check.choice("modality", modality, ("both", "expression", "image"))
    if flavor is not None:
        warnings.warn("sf.tl.stmic: flavor= is deprecated; use cluster_method=.", FutureWarning, stacklevel=2)
        _check.choice("flavor", flavor, ("louvain", "leiden"))
        cluster_method = flavor
    _check.choice("cluster_method", cluster_method, get_args(Method))
    community = cluster_method in ("louvain", "leiden")
    if resolution is not None and not community:
        raise InputError(f"resolution= applies to cluster_method='louvain' or 'leiden', not {cluster_method!r}; "
                         "pass n_clusters= instead.")
    if resolution is not None and n_clusters is not None:
        raise InputError("Give either resolution= or n_clusters= (the resolution is then searched), not both.")
    if resolution is not None:
        _check.positive("resolution", resolution)
    _check.key_added(key_added)
    n_pcs = _check.positive_int("n_pcs", n_pcs)
    _check.positive("image_weight", image_weight, zero=True)
    _check.positive("size (in spot diameters)", size)
    spots = get_spots(sdata, **selection(locals()))
    if modality != "expression":
        spots.require_image("sf.tl.stmic", fix=NO_IMAGE_HINT)
    n = spots.n_obs
    _check.n_neighs(n_neighs, n)
    _check.n_clusters(n_clusters, n, minimum=1)
    _check.layer(spots.table, layer)

    pcs = prepare_pcs(spots, n_pcs=n_pcs, modality=modality, layer=layer, encoder=encoder, size=size,
                      weights=weights, image_weight=image_weight, stain=stain, batch_size=batch_size, device=device,
                      random_state=random_state)
    opts = {"n_neighs": int(n_neighs), "resolution": resolution, "max_steps": max_steps} if community else {}
    labels, k, how = cluster(pcs.Z, n_clusters, method=cluster_method, random_state=random_state, **opts)
    used, exact, steps = how.get("resolution", float("nan")), how.get("exact", True), how.get("steps", [])
    if not exact:
        warnings.warn(
            f"sf.tl.stmic: no resolution gave exactly {n_clusters} clusters in {len(steps)} runs; kept "
            f"{k} clusters at resolution {used:.4g}. Try another random_state, n_neighs, or raise max_steps.",
            UserWarning,
            stacklevel=2,
        )
    log.info(f"stMIC ({modality}): {k} clusters by {cluster_method} in {time.perf_counter() - t0:.1f} s")

    cats = [str(i) for i in range(k)]
    params = {
        "n_pcs": n_pcs, "n_neighs": int(n_neighs), "resolution": None if resolution is None else float(resolution),
        "n_clusters": None if n_clusters is None else int(n_clusters), "modality": modality,
        "image_weight": float(image_weight), "size": float(size), "stain": _stain_name(stain),
        "cluster_method": cluster_method,
        "layer": layer, "random_state": int(random_state), "max_steps": int(max_steps),
    }
    extra: dict[str, Any] = {"n_clusters": k, "clustering": {k_: v for k_, v in how.items() if k_ != "steps"}}
    if community:
        extra.update(resolution=float(used), exact=bool(exact), search=np.array(steps, dtype=float).reshape(-1, 2))
    extra.update({f"variance_ratio_{b}": v for b, v in pcs.variance_ratio.items()})
    if pcs.features is not None:
        extra["encoder"] = {k_: v for k_, v in pcs.features.provenance.items() if v is not None}
        extra["image_obsm"] = pcs.features.obsm_key
    return record(spots, key_added, params=params, extra=extra,
                  inputs={**pcs.inputs, **({"graph": {"kind": "knn", "n_neighs": int(n_neighs), "on": K.obsm(key_added)}}
                                           if community else {})},
                  obs={key_added: pd.Categorical(np.array(cats, dtype=object)[labels], categories=cats)},
                  obsm={K.obsm(key_added): pcs.Z.astype(np.float32)}, embeddings=pcs.new_embeddings, copy=copy)


@inject_docs
def stmic_markers(
    sdata: Any,
    key: str = "stmic",
    *,
    table_key: str | None = None,
    layer: str | None = None,
    method: Literal["wilcoxon", "t-test", "t-test_overestim_var", "logreg"] = "wilcoxon",
    groups: str | list[str] = "all",
    reference: str = "rest",
    n_genes: int | None = None,
    key_added: str = "rank_genes_groups",
    shapes_key: str | None = None,
    image_key: str | None = None,
    library_id: str | None = None,
    library_key: str | None = None,
    coordinate_system: str | None = None,
    copy: bool = False,
    **kwargs: Any,
) -> Any:
    """Marker genes of every stMIC cluster (the paper's downstream analysis), via scanpy.

    Counts are normalised to 10⁴ per spot and ``log1p``-transformed on a private copy (the table's
    ``X`` is not changed), then :func:`scanpy.tl.rank_genes_groups` ranks genes per cluster against the
    rest. The result lands where scanpy puts it, ``uns[key_added]``, so :func:`scanpy.get.rank_genes_groups_df`
    reads it directly.

    Parameters
    ----------
    %(sdata)s
    key
        ``obs`` column with the clusters (``sf.tl.stmic``'s ``key_added``).
    %(table_key)s
    layer
        Layer holding raw counts (default ``X``).
    method
        Test of :func:`scanpy.tl.rank_genes_groups` (Wilcoxon rank-sum in the paper).
    groups, reference, n_genes
        As in :func:`scanpy.tl.rank_genes_groups` (``n_genes=None``: every gene). With
        ``groups="all"``, clusters of a single spot (which scanpy cannot test) are left out of the
        ranking with a warning; a single-spot ``reference`` raises :class:`~stfuse.InputError`.
    key_added
        ``uns`` key of the result (scanpy's default ``"rank_genes_groups"``).
    %(shapes_key)s
    %(image_key)s
    %(library_id)s
    %(library_key)s
    %(coordinate_system)s
    %(copy)s
    **kwargs
        Passed to :func:`scanpy.tl.rank_genes_groups`.

    %(returns_inplace)s

    Examples
    --------
    >>> import scanpy as sc
    >>> import stfuse as sf
    >>> sdata = sf.datasets.toy(n_spots=200)
    >>> t = sdata.tables["table"]
    >>> t.obs["stmic"] = t.obs["region"].astype(str).astype("category")  # e.g. from sf.tl.stmic
    >>> sf.tl.stmic_markers(sdata)
    >>> sc.get.rank_genes_groups_df(t, group="A").shape[0] == t.n_vars
    True
    """
    import anndata as ad
    import scanpy as sc

    from ..pp import check_counts

    spots = get_spots(sdata, **selection(locals()))
    table = spots.table
    if key not in table.obs.columns:
        raise KeyNotFoundError(
            f"No obs column {key!r} in the table; run sf.tl.stmic(sdata, key_added={key!r}) first or pass key=... "
            f"(obs columns: {list(table.obs.columns)})."
        )
    _check.layer(table, layer)
    check_counts(table, layer=layer)
    labels = table.obs[key]
    if labels.isna().any():
        raise InputError(f"obs[{key!r}] has {int(labels.isna().sum())} missing values; every spot needs a cluster.")
    groups_ = labels.astype(str).astype("category")
    if len(groups_.cat.categories) < 2:
        raise InputError(f"obs[{key!r}] has a single cluster; marker genes need at least two.")
    sizes = groups_.value_counts()
    single = sorted(sizes.index[sizes < 2])
    if reference in single:
        raise InputError(f"reference cluster {reference!r} of obs[{key!r}] holds a single spot; choose another.")
    if single and groups in (None, "all"):  # scanpy cannot test a group of one spot: rank the others
        groups = [g for g in groups_.cat.categories if g not in single]
        if not groups:
            raise InputError(f"every cluster of obs[{key!r}] holds a single spot; marker genes need clusters of "
                             "two or more spots.")
        warnings.warn(f"sf.tl.stmic_markers: cluster(s) {single} of obs[{key!r}] hold a single spot and are "
                      "left out of the ranking (they still count in 'rest').", UserWarning, stacklevel=2)
    X = table.X if layer is None else table.layers[layer]
    tmp = ad.AnnData(X=X.astype(np.float32, copy=True), obs=pd.DataFrame({key: groups_.to_numpy()},
                     index=table.obs_names), var=pd.DataFrame(index=table.var_names))
    tmp.obs[key] = tmp.obs[key].astype("category")
    start_numba_threads()
    sc.pp.normalize_total(tmp, target_sum=1e4)
    sc.pp.log1p(tmp)
    sc.tl.rank_genes_groups(tmp, groupby=key, method=method, groups=groups, reference=reference,
                            n_genes=n_genes, key_added=key_added, **kwargs)
    result = dict(tmp.uns[key_added])
    return spots.write(None, uns={key_added: result}, copy=copy)
