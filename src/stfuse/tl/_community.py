"""Community detection on a neighbour graph (igraph Louvain / Leiden), with a search for a cluster count.

Array level (no AnnData): tools build the graph, call :func:`cluster` or :func:`cluster_n`, and write
the labels themselves.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from scipy import sparse

from .. import _logging as log
from .._errors import InputError

__all__ = ["Clustering", "cluster", "cluster_n", "knn_graph"]

Flavor = Literal["louvain", "leiden"]


def knn_graph(X: np.ndarray, n_neighbors: int) -> sparse.csr_matrix:
    """Symmetric, unweighted kNN graph of the rows of ``X`` (exact Euclidean neighbours).

    Spot ``i`` and ``j`` are joined when either is among the other's ``n_neighbors`` nearest
    neighbours (the spot itself excluded); every edge has weight 1.
    """
    from sklearn.neighbors import NearestNeighbors

    X = np.asarray(X, dtype=np.float64)
    n = X.shape[0]
    if not 1 <= n_neighbors < n:
        raise InputError(f"n_neighbors must be between 1 and the number of spots - 1 ({n - 1}), got {n_neighbors}.")
    k = int(n_neighbors)
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


def _relabel_by_size(membership: np.ndarray) -> np.ndarray:
    """Renumber clusters 0..k-1 by decreasing size (ties: first appearance), as scanpy does."""
    ids, first, counts = np.unique(membership, return_index=True, return_counts=True)
    order = np.lexsort((first, -counts))
    new = np.empty(len(ids), np.int64)
    new[order] = np.arange(len(ids))
    return new[np.searchsorted(ids, membership)]


def cluster(graph: Any, resolution: float, *, flavor: Flavor = "louvain", random_state: int = 0) -> np.ndarray:
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
    return _relabel_by_size(np.asarray(part.membership, dtype=np.int64))


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
        labels = cluster(graph, res, flavor=flavor, random_state=random_state)
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
