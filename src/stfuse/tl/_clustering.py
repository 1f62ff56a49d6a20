"""Ward clustering of embeddings, with the number of clusters read off the dendrogram when not given."""

from __future__ import annotations

from typing import Any

import numpy as np

from .._errors import InputError

__all__ = ["ward_clusters"]


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


def _by_size(labels: np.ndarray) -> np.ndarray:
    """Renumber clusters 0, 1, ... by decreasing size (ties by first occurrence)."""
    ids, first, counts = np.unique(labels, return_index=True, return_counts=True)
    order = np.lexsort((first, -counts))
    remap = np.empty(len(ids), np.int64)
    remap[order] = np.arange(len(ids))
    return remap[np.searchsorted(ids, labels)]


def ward_clusters(X: np.ndarray, n_clusters: int | None, *, k_range: tuple[int, int] = (3, 12),
                  max_spots: int = 10_000, random_state: int = 0) -> tuple[np.ndarray, int, dict[str, Any]]:
    """Agglomerative (Ward) clustering of the rows of ``X``.

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
