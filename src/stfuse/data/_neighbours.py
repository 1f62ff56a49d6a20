"""Neighbour index arrays of sections, and their concatenation."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..gr import knn

__all__ = ["neighbour_index", "stack_neighbours"]


def neighbour_index(centers: np.ndarray, k: int) -> np.ndarray:
    """``(n, k)`` indices of each spot's ``k`` nearest other spots (``-1`` where a section has fewer).

    Examples
    --------
    >>> import numpy as np
    >>> from stfuse.data import neighbour_index
    >>> neighbour_index(np.array([[0.0, 0], [1, 0], [3, 0]]), 3).tolist()
    [[1, 2, -1], [0, 2, -1], [1, 0, -1]]
    """
    n = len(centers)
    if n < 2:
        return np.full((n, k), -1, np.int64)
    idx, _ = knn(centers, min(k, n - 1))
    if idx.shape[1] < k:
        idx = np.hstack([idx, np.full((len(idx), k - idx.shape[1]), -1, np.int64)])
    return idx


def stack_neighbours(neighbours: Sequence[np.ndarray]) -> np.ndarray:
    """Neighbour arrays of several sections stacked in order, indices shifted into the stacked rows.

    Neighbours stay within their own section; ``-1`` (none) stays ``-1``. Arrays of different widths
    (e.g. one section's ``obsp`` graph, another's kNN) are ``-1`` padded to the widest.

    Examples
    --------
    >>> import numpy as np
    >>> from stfuse.data import stack_neighbours
    >>> stack_neighbours([np.array([[1], [0]]), np.array([[1], [-1]])]).ravel().tolist()
    [1, 0, 3, -1]
    >>> stack_neighbours([np.array([[1], [0]]), np.array([[1, -1], [0, -1]])]).tolist()
    [[1, -1], [0, -1], [3, -1], [2, -1]]
    """
    offsets = np.cumsum([0] + [len(n) for n in neighbours])
    width = max((n.shape[1] for n in neighbours), default=0)
    return np.vstack([np.pad(np.where(n >= 0, n + o, -1), ((0, 0), (0, width - n.shape[1])), constant_values=-1)
                      for n, o in zip(neighbours, offsets[:-1])])
