"""Clustering of spot embeddings, shared by the tools: one entry point, :func:`cluster`.

Array level (no AnnData): tools compute an embedding, call :func:`cluster`, and write the labels
themselves. Methods:

- ``"ward"``: agglomerative Ward tree; with ``n_clusters=None`` the number of clusters is read off
  the dendrogram (largest gap between merge heights in ``k_range``).
- ``"louvain"`` / ``"leiden"``: community detection (igraph) on the symmetric, unweighted kNN graph
  of the rows; with ``n_clusters`` the resolution is searched (:func:`cluster_n`), else ``resolution``
  (default 1.0) is used.
- ``"kmeans"``: scikit-learn's k-means (``n_init=10``); with ``n_clusters=None`` the ``k`` in
  ``k_range`` with the best silhouette.
- ``"gmm"``: a Gaussian mixture (scikit-learn), as mclust is used by STAGATE and GraphST; with
  ``n_clusters=None`` the ``k`` in ``k_range`` with the lowest BIC.

Labels are ``0..k-1`` numbered by decreasing cluster size (ties: first appearance), as scanpy does.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

import numpy as np
from scipy import sparse

from .. import _logging as log
from .._errors import InputError

__all__ = ["Clustering", "Method", "cluster", "cluster_n", "community", "knn_graph", "ward_clusters"]

Method = Literal["ward", "kmeans", "gmm", "leiden", "louvain"]
Flavor = Literal["louvain", "leiden"]
Covariance = Literal["full", "tied", "diag", "spherical"]

_OPTIONS: dict[str, tuple[str, ...]] = {
    "ward": ("max_spots",),
    "kmeans": ("n_init", "silhouette_spots"),
    "gmm": ("covariance_type", "n_init"),
    "louvain": ("n_neighs", "resolution", "max_steps"),
    "leiden": ("n_neighs", "resolution", "max_steps"),
}


def cluster(
    X: Any,
    n_clusters: int | None,
    *,
    method: Method = "ward",
    random_state: int = 0,
    k_range: tuple[int, int] = (3, 12),
    **kwargs: Any,
) -> tuple[np.ndarray, int, dict[str, Any]]:
    """Cluster the rows of ``X`` into ``n_clusters`` groups (or choose the number).

    Parameters
    ----------
    X
        ``(n, d)`` embedding, one row per spot.
    n_clusters
        Number of clusters, or ``None`` to choose it (see the module text for each method; for
        ``"louvain"``/``"leiden"`` ``None`` means: use ``resolution``).
    method
        ``"ward"``, ``"kmeans"``, ``"gmm"``, ``"leiden"`` or ``"louvain"``.
    random_state
        Seed: the same input and seed give the same labels.
    k_range
        ``(low, high)`` numbers of clusters tried when ``n_clusters=None`` (ward, kmeans, gmm).
    **kwargs
        Options of the method. ward: ``max_spots`` (10 000; the tree is built on a random subsample
        beyond it and every row joins the nearest cluster mean). kmeans: ``n_init`` (10),
        ``silhouette_spots`` (5 000; rows sampled to score each ``k``). gmm: ``covariance_type``
        (``None``: ``"full"`` when the data hold at least ten rows per free covariance parameter,
        else ``"diag"``), ``n_init`` (1). louvain/leiden: ``n_neighs`` (15), ``resolution`` (1.0;
        exclusive with ``n_clusters``), ``max_steps`` (30 runs of the resolution search).

    Returns
    -------
    Labels ``0..k-1`` numbered by decreasing cluster size, the number of clusters ``k``, and a dict
    describing the choice (``"method"``, ``"chosen_from"`` and the method's details).

    Examples
    --------
    >>> import numpy as np
    >>> from stfuse.tl._clustering import cluster
    >>> rng = np.random.default_rng(0)
    >>> X = np.concatenate([rng.normal(c, 0.3, (30, 2)) for c in (0, 5, 10)])
    >>> labels, k, info = cluster(X, 3, method="kmeans")
    >>> k, np.bincount(labels).tolist()
    (3, [30, 30, 30])
    """
    if method not in _OPTIONS:
        raise InputError(f"method must be one of {list(get_args(Method))}, got {method!r}.")
    unknown = sorted(set(kwargs) - set(_OPTIONS[method]))
    if unknown:
        raise InputError(f"Unknown option(s) {unknown} for method={method!r}; it takes {list(_OPTIONS[method])}.")
    X = np.asarray(X, dtype=np.float64)
    n = X.shape[0]
    if n_clusters is not None and not 1 <= int(n_clusters) <= n:
        raise InputError(f"n_clusters must be between 1 and the number of spots ({n}), got {n_clusters}.")
    if method == "ward":
        return ward_clusters(X, n_clusters, k_range=k_range, max_spots=int(kwargs.get("max_spots", 10_000)),
                             random_state=random_state)
    if method in ("louvain", "leiden"):
        return _community_labels(X, n_clusters, flavor=method, random_state=random_state, **kwargs)
    ks = _k_candidates(n, n_clusters, k_range)
    if method == "kmeans":
        return _kmeans(X, ks, random_state=random_state, n_init=int(kwargs.get("n_init", 10)),
                       sample=int(kwargs.get("silhouette_spots", 5000)), k_range=k_range)
    return _gmm(X, ks, random_state=random_state, covariance_type=kwargs.get("covariance_type"),
                n_init=int(kwargs.get("n_init", 1)), k_range=k_range)


def _by_size(labels: np.ndarray) -> np.ndarray:
    """Renumber clusters 0, 1, ... by decreasing size (ties by first occurrence)."""
    ids, first, counts = np.unique(labels, return_index=True, return_counts=True)
    order = np.lexsort((first, -counts))
    remap = np.empty(len(ids), np.int64)
    remap[order] = np.arange(len(ids))
    return remap[np.searchsorted(ids, labels)]


def _k_candidates(n: int, n_clusters: int | None, k_range: tuple[int, int]) -> list[int]:
    if n_clusters is not None:
        return [int(n_clusters)]
    lo, hi = int(k_range[0]), int(k_range[1])
    if not 2 <= lo <= hi:
        raise InputError(f"k_range must be (low, high) with 2 <= low <= high, got {k_range}.")
    ks = list(range(lo, min(hi, n - 1) + 1))
    if not ks:
        raise InputError(f"Too few spots ({n}) to choose a number of clusters in {k_range}; pass n_clusters.")
    return ks


# ------------------------------------------------------------------------------------------------
# Ward
# ------------------------------------------------------------------------------------------------
def _labels_from_linkage(Z: np.ndarray, n: int, k: int) -> np.ndarray:
    """Flat clusters after the first ``n - k`` merges of linkage ``Z`` (exact, union-find)."""
    parent = np.arange(2 * n - 1)

    def find(i: int) -> int:
        root = i
        while parent[root] != root:
            root = parent[root]
        while parent[i] != root:
            parent[i], i = root, parent[i]
        return root

    for m in range(n - k):
        a, b = int(Z[m, 0]), int(Z[m, 1])
        parent[find(a)] = n + m
        parent[find(b)] = n + m
    roots = np.array([find(i) for i in range(n)])
    _, labels = np.unique(roots, return_inverse=True)
    return labels


def ward_clusters(X: np.ndarray, n_clusters: int | None, *, k_range: tuple[int, int] = (3, 12),
                  max_spots: int = 10_000, random_state: int = 0) -> tuple[np.ndarray, int, dict[str, Any]]:
    """Agglomerative (Ward) clustering of the rows of ``X`` (``cluster(..., method="ward")``).

    With ``n_clusters=None`` the number of clusters is the ``k`` in ``k_range`` whose cut of the
    dendrogram sits in the largest gap between consecutive merge heights (the merge that would take
    ``k`` clusters to ``k - 1`` is the most costly step up relative to the merge before it).
    Beyond ``max_spots`` rows, the tree is built on a random subsample of ``max_spots`` rows and
    every row goes to the cluster with the nearest mean (Ward's tree needs memory quadratic in rows).

    Returns
    -------
    Labels ``0..k-1`` numbered by decreasing cluster size, the number of clusters, and a dict
    describing the choice (``{"method", "k_range", "gaps"}`` when chosen from the dendrogram).
    """
    from scipy.cluster.hierarchy import linkage

    X = np.asarray(X, dtype=np.float64)
    n = X.shape[0]
    lo, hi = int(k_range[0]), int(k_range[1])
    if n_clusters is not None:
        if not 1 <= int(n_clusters) <= n:
            raise InputError(f"n_clusters must be between 1 and the number of spots ({n}), got {n_clusters}.")
    elif not 2 <= lo <= hi:
        raise InputError(f"k_range must be (low, high) with 2 <= low <= high, got {k_range}.")
    sub = np.arange(n)
    if n > max_spots:
        sub = np.sort(np.random.default_rng(random_state).choice(n, max_spots, replace=False))
    Z = linkage(X[sub], method="ward")
    m = len(sub)
    info: dict[str, Any] = {"method": "ward", "n_tree_spots": int(m)}
    if n_clusters is None:
        heights = Z[:, 2]
        ks = np.arange(max(lo, 2), min(hi, m - 1) + 1)
        if not len(ks):
            raise InputError(f"Too few spots ({n}) to choose a number of clusters in {k_range}; pass n_clusters.")
        # heights[m - k] takes k clusters to k - 1; heights[m - k - 1] made the k clusters
        gaps = heights[m - ks] - heights[m - ks - 1]
        k = int(ks[int(np.argmax(gaps))])
        info.update(chosen_from="dendrogram", k_range=[lo, hi],
                    gaps={str(int(a)): float(b) for a, b in zip(ks, gaps)})
    else:
        k = int(n_clusters)
        info["chosen_from"] = "n_clusters"
    labels_sub = _labels_from_linkage(Z, m, k)
    if m < n:
        means = np.stack([X[sub][labels_sub == c].mean(0) for c in range(k)])
        d = np.stack([((X - mu) ** 2).sum(1) for mu in means], 1)
        labels = d.argmin(1)
        labels[sub] = labels_sub
    else:
        labels = labels_sub
    return _by_size(labels), k, info


# ------------------------------------------------------------------------------------------------
# k-means and Gaussian mixture (scikit-learn)
# ------------------------------------------------------------------------------------------------
def _kmeans(X: np.ndarray, ks: list[int], *, random_state: int, n_init: int, sample: int,
            k_range: tuple[int, int]) -> tuple[np.ndarray, int, dict[str, Any]]:
    from sklearn.cluster import KMeans
    from sklearn.metrics import silhouette_score

    info: dict[str, Any] = {"method": "kmeans", "n_init": n_init}
    fits = {k: KMeans(n_clusters=k, n_init=n_init, random_state=random_state).fit(X).labels_ for k in ks}
    if len(ks) == 1:
        k = ks[0]
        info["chosen_from"] = "n_clusters"
    else:
        size = min(int(sample), X.shape[0])
        scores = {k: float(silhouette_score(X, fits[k], sample_size=size, random_state=random_state))
                  if len(np.unique(fits[k])) > 1 else -1.0 for k in ks}
        k = max(ks, key=lambda k_: (scores[k_], -k_))
        info.update(chosen_from="silhouette", k_range=[int(k_range[0]), int(k_range[1])],
                    silhouette={str(k_): s for k_, s in scores.items()})
    labels = _by_size(fits[k])
    return labels, int(labels.max()) + 1, info


def _gmm(X: np.ndarray, ks: list[int], *, random_state: int, covariance_type: Covariance | None, n_init: int,
         k_range: tuple[int, int]) -> tuple[np.ndarray, int, dict[str, Any]]:
    from sklearn.mixture import GaussianMixture

    choices = get_args(Covariance)
    if covariance_type is not None and covariance_type not in choices:
        raise InputError(f"covariance_type must be one of {list(choices)} or None, got {covariance_type!r}.")
    n, d = X.shape
    if covariance_type is None:  # full covariances only with ten rows per free parameter, else diagonal
        covariance_type = "full" if n >= 10 * max(ks) * d * (d + 1) // 2 else "diag"
    info: dict[str, Any] = {"method": "gmm", "covariance_type": covariance_type}
    models = {k: GaussianMixture(n_components=k, covariance_type=covariance_type, n_init=n_init,
                                 random_state=random_state).fit(X) for k in ks}
    if len(ks) == 1:
        k = ks[0]
        info["chosen_from"] = "n_clusters"
    else:
        bic = {k: float(models[k].bic(X)) for k in ks}
        k = min(ks, key=lambda k_: (bic[k_], k_))
        info.update(chosen_from="bic", k_range=[int(k_range[0]), int(k_range[1])], bic={str(k_): b for k_, b in bic.items()})
    info["n_components"] = int(k)
    labels = _by_size(models[k].predict(X))
    return labels, int(labels.max()) + 1, info


# ------------------------------------------------------------------------------------------------
# Louvain / Leiden on a kNN graph (igraph)
# ------------------------------------------------------------------------------------------------
def _community_labels(X: np.ndarray, n_clusters: int | None, *, flavor: Flavor, random_state: int,
                      n_neighs: int = 15, resolution: float | None = None,
                      max_steps: int = 30) -> tuple[np.ndarray, int, dict[str, Any]]:
    if resolution is not None and n_clusters is not None:
        raise InputError("Give either resolution= or n_clusters= (the resolution is then searched), not both.")
    graph = knn_graph(X, int(n_neighs))
    info: dict[str, Any] = {"method": flavor, "n_neighs": int(n_neighs)}
    if n_clusters is not None:
        res = cluster_n(graph, int(n_clusters), flavor=flavor, random_state=random_state, max_steps=max_steps)
        labels = res.labels
        info.update(chosen_from="n_clusters", resolution=res.resolution, exact=res.exact, steps=res.steps)
    else:
        used = 1.0 if resolution is None else float(resolution)
        labels = community(graph, used, flavor=flavor, random_state=random_state)
        info.update(chosen_from="resolution", resolution=used, exact=True, steps=[])
    return labels, int(labels.max()) + 1, info


def knn_graph(X: np.ndarray, n_neighs: int) -> sparse.csr_matrix:
    """Symmetric, unweighted kNN graph of the rows of ``X`` (exact Euclidean neighbours).

    Spot ``i`` and ``j`` are joined when either is among the other's ``n_neighs`` nearest
    neighbours (the spot itself excluded); every edge has weight 1.
    """
    from sklearn.neighbors import NearestNeighbors

    X = np.asarray(X, dtype=np.float64)
    n = X.shape[0]
    if not 1 <= n_neighs < n:
        raise InputError(f"n_neighs must be between 1 and the number of spots - 1 ({n - 1}), got {n_neighs}.")
    k = int(n_neighs)
    idx = NearestNeighbors(n_neighbors=k, algorithm="brute").fit(X).kneighbors(return_distance=False)
    A = sparse.csr_matrix((np.ones(idx.size), (np.repeat(np.arange(n), k), idx.ravel())), shape=(n, n))
    return A.maximum(A.T).tocsr()


@contextmanager
def _igraph_seed(seed: int) -> Iterator[None]:
    """Seed igraph's random number generator for one call, then restore Python's default generator."""
    import igraph as ig

    ig.set_random_number_generator(random.Random(int(seed)))
    try:
        yield
    finally:
        ig.set_random_number_generator(random)


def _as_igraph(graph: sparse.spmatrix):
    import igraph as ig

    g = sparse.triu(sparse.csr_matrix(graph), k=1).tocoo()
    G = ig.Graph(n=graph.shape[0], edges=np.column_stack([g.row, g.col]).tolist(), directed=False)
    G.es["weight"] = g.data.astype(float).tolist()
    return G


def community(graph: Any, resolution: float, *, flavor: Flavor = "louvain", random_state: int = 0) -> np.ndarray:
    """Cluster labels ``0..k-1`` (largest first) of a weighted undirected graph.

    ``"louvain"``: igraph's multilevel modularity optimisation; ``"leiden"``: igraph's Leiden on
    modularity, iterated until stable. Higher ``resolution``, more clusters (scanpy's convention).
    Seeded: the same graph, resolution and ``random_state`` give the same labels.
    """
    if not resolution > 0:
        raise InputError(f"resolution must be positive, got {resolution}.")
    G = graph if not sparse.issparse(graph) else _as_igraph(graph)
    with _igraph_seed(random_state):
        if flavor == "louvain":
            part = G.community_multilevel(weights="weight", resolution=float(resolution))
        elif flavor == "leiden":
            part = G.community_leiden(objective_function="modularity", weights="weight",
                                      resolution=float(resolution), n_iterations=-1)
        else:
            raise InputError(f"flavor must be 'louvain' or 'leiden', got {flavor!r}.")
    return _by_size(np.asarray(part.membership, dtype=np.int64))


@dataclass
class Clustering:
    """Result of :func:`cluster_n`: labels, the resolution used and every step of the search."""

    labels: np.ndarray
    resolution: float
    n_clusters: int
    exact: bool
    steps: list[tuple[float, int]] = field(default_factory=list)


def cluster_n(
    graph: Any,
    n_clusters: int,
    *,
    flavor: Flavor = "louvain",
    random_state: int = 0,
    max_steps: int = 30,
    lo: float = 0.1,
    hi: float = 1.0,
    bounds: tuple[float, float] = (1e-3, 1e3),
) -> Clustering:
    """Search the resolution that gives ``n_clusters`` clusters.

    The search is deterministic: every run uses ``random_state``. Starting from ``[lo, hi]``, the
    bracket is widened geometrically (×/÷ 4, within ``bounds``) until the count at ``lo`` is at most
    and at ``hi`` at least ``n_clusters``, then halved in log-space (geometric bisection) until a run
    gives exactly ``n_clusters``, at most ``max_steps`` runs in all. When no run hits the count
    exactly, the run closest to it (fewest extra clusters on ties, then the lower resolution) is
    returned with ``exact=False``.
    """
    if sparse.issparse(graph):
        graph = _as_igraph(graph)
    n = graph.vcount()
    if not 1 <= n_clusters <= n:
        raise InputError(f"n_clusters must be between 1 and the number of spots ({n}), got {n_clusters}.")
    if max_steps < 1:
        raise InputError(f"max_steps must be at least 1, got {max_steps}.")
    steps: list[tuple[float, int]] = []
    runs: dict[float, np.ndarray] = {}

    def run(res: float) -> int:
        labels = community(graph, res, flavor=flavor, random_state=random_state)
        runs[res] = labels
        k = int(labels.max()) + 1
        steps.append((float(res), k))
        log.debug(f"    resolution {res:.4g}: {k} clusters")
        return k

    def left() -> bool:
        return len(steps) < max_steps and steps[-1][1] != n_clusters

    k_lo = run(lo)
    k_hi = None
    if k_lo > n_clusters:  # too many clusters already: lower the resolution
        while left() and k_lo > n_clusters and lo > bounds[0]:
            hi, k_hi = lo, k_lo
            lo = max(lo / 4.0, bounds[0])
            k_lo = run(lo)
    elif k_lo < n_clusters:
        k_hi = run(hi)
        while left() and k_hi < n_clusters and hi < bounds[1]:
            lo, k_lo = hi, k_hi
            hi = min(hi * 4.0, bounds[1])
            k_hi = run(hi)
    # now k_lo < n_clusters < k_hi: geometric bisection
    while left() and k_hi is not None and k_lo < n_clusters < k_hi and hi / lo > 1.0001:
        mid = float(np.sqrt(lo * hi))
        k = run(mid)
        if k < n_clusters:
            lo, k_lo = mid, k
        else:
            hi, k_hi = mid, k
    best_res, best_k = min(steps, key=lambda s: (abs(s[1] - n_clusters), s[1] > n_clusters, s[0]))
    return Clustering(runs[best_res], best_res, best_k, best_k == n_clusters, steps)
