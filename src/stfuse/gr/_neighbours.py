"""Helpers on neighbour index arrays (numpy/scipy; no AnnData, no torch at import).

A neighbour array is ``(n, k)`` int, row ``i`` holding the neighbours of point ``i`` (``-1`` = none),
as returned by :func:`stfuse.gr.knn` or :attr:`stfuse.gr.SpatialGraph.indices`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
from scipy import sparse

if TYPE_CHECKING:
    import torch

__all__ = ["adjacency", "bfs_order", "grow_mask", "hop_tokens", "neighbours_from_graph"]


def hop_tokens(neighbours: Any, hops: int) -> np.ndarray:
    """Each spot followed by every spot within ``hops`` graph hops (``-1`` padded), as ``(n, t)``.

    Parameters
    ----------
    neighbours
        ``(n, k)`` neighbour index array (``-1`` = no neighbour), e.g. from :func:`stfuse.gr.knn`.
    hops
        Graph hops: ``0`` gives each spot alone, ``1`` the spot and its neighbours, and so on.

    Returns
    -------
    ``(n, t)`` int64: column 0 is the spot itself, then the other spots it reaches in increasing
    index order, ``-1`` padded to the longest row.

    Examples
    --------
    >>> import numpy as np
    >>> import stfuse as sf
    >>> chain = np.array([[1, -1], [0, 2], [1, 3], [2, -1]])
    >>> sf.gr.hop_tokens(chain, 2).tolist()  # spot 1 reaches 0, 2 and 3; others are padded with -1
    [[0, 1, 2, -1], [1, 0, 2, 3], [2, 0, 1, 3], [3, 1, 2, -1]]
    """
    nbr = np.asarray(neighbours, dtype=np.int64)
    n = nbr.shape[0]
    own = np.arange(n, dtype=np.int64)[:, None]
    tokens = own
    for _ in range(int(hops)):
        safe = np.where(tokens >= 0, tokens, 0)
        reach = np.where((tokens >= 0)[:, :, None], nbr[safe], -1).reshape(n, -1)
        tokens = _row_unique(np.concatenate([tokens, reach], axis=1), first=own[:, 0])
    return tokens


def _row_unique(rows: np.ndarray, first: np.ndarray) -> np.ndarray:
    """Unique non-negative entries per row, ``first`` kept in column 0, ``-1`` padded, trimmed."""
    n = rows.shape[0]
    big = np.iinfo(np.int64).max
    r = np.where((rows >= 0) & (rows != first[:, None]), rows, big)
    r.sort(axis=1)
    dup = np.zeros_like(r, dtype=bool)
    dup[:, 1:] = r[:, 1:] == r[:, :-1]
    r[dup] = big
    r.sort(axis=1)
    width = int((r < big).sum(axis=1).max()) if n else 0
    out = np.full((n, width + 1), -1, np.int64)
    out[:, 0] = first
    body = r[:, :width]
    out[:, 1:] = np.where(body < big, body, -1)
    return out


def grow_mask(mask: np.ndarray, neighbours: np.ndarray, hops: int) -> np.ndarray:
    """Grow a boolean node mask by ``hops`` steps along the neighbour lists.

    Parameters
    ----------
    mask
        ``(n,)`` bool, the nodes to start from (not modified).
    neighbours
        ``(n, k)`` neighbour index array (``-1`` = none). Steps follow row ``i`` from node ``i``.
    hops
        Number of steps.

    Returns
    -------
    A new ``(n,)`` bool mask: the start nodes and every node reached within ``hops`` steps.

    Examples
    --------
    >>> import numpy as np
    >>> import stfuse as sf
    >>> chain = np.array([[1, -1], [0, 2], [1, 3], [2, -1]])
    >>> sf.gr.grow_mask(np.array([True, False, False, False]), chain, 2).tolist()
    [True, True, True, False]
    """
    mask = mask.copy()
    frontier = np.flatnonzero(mask)
    for _ in range(hops):
        reach = neighbours[frontier].ravel()
        reach = reach[reach >= 0]
        new = reach[~mask[reach]]
        if not len(new):
            break
        new = np.unique(new)
        mask[new] = True
        frontier = new
    return mask


def adjacency(neighbours: Any) -> sparse.csr_matrix:
    """Symmetric adjacency matrix of a neighbour index array.

    Parameters
    ----------
    neighbours
        ``(n, k)`` neighbour index array (``-1`` = none).

    Returns
    -------
    ``(n, n)`` int8 :class:`scipy.sparse.csr_matrix`, nonzero where ``i`` lists ``j`` or ``j`` lists
    ``i`` (``2`` where both do).

    Examples
    --------
    >>> import numpy as np
    >>> import stfuse as sf
    >>> sf.gr.adjacency(np.array([[1], [0], [1]])).toarray().tolist()
    [[0, 2, 0], [2, 0, 1], [0, 1, 0]]
    """
    nb = np.asarray(neighbours)
    n = len(nb)
    rows = np.repeat(np.arange(n), nb.shape[1])
    cols = nb.ravel()
    ok = cols >= 0
    a = sparse.csr_matrix((np.ones(int(ok.sum()), np.int8), (rows[ok], cols[ok])), shape=(n, n))
    return (a + a.T).tocsr()


def bfs_order(graph: sparse.spmatrix, generator: torch.Generator | None = None) -> np.ndarray:
    """Every node once, breadth first from one start per connected component.

    Parameters
    ----------
    graph
        ``(n, n)`` sparse adjacency (read as undirected), e.g. from :func:`adjacency`.
    generator
        ``None``: components in order of their lowest node, each started from that node. A seeded
        :class:`torch.Generator`: components in random order, each from a random node (reproducible
        for a seed; torch is imported only then).

    Returns
    -------
    ``(n,)`` node order: nodes that are close in the graph are close in the order.

    Examples
    --------
    >>> import numpy as np
    >>> import stfuse as sf
    >>> chain = np.array([[1, -1], [0, 2], [1, 3], [2, -1]])
    >>> sf.gr.bfs_order(sf.gr.adjacency(chain)).tolist()
    [0, 1, 2, 3]
    """
    from scipy.sparse.csgraph import breadth_first_order, connected_components

    n_comp, comp = connected_components(graph, directed=False)
    members = np.argsort(comp, kind="stable")
    bounds = np.searchsorted(comp[members], np.arange(n_comp + 1))
    if generator is None:
        comps = range(n_comp)
    else:
        import torch

        comps = torch.randperm(n_comp, generator=generator).tolist()
    parts = []
    for c in comps:
        nodes = members[bounds[c] : bounds[c + 1]]
        if generator is None:
            start = nodes[0]
        else:
            start = nodes[int(torch.randint(len(nodes), (1,), generator=generator))]
        parts.append(breadth_first_order(graph, int(start), directed=False, return_predecessors=False))
    return np.concatenate(parts) if parts else np.empty(0, np.int64)


def neighbours_from_graph(graph: Any) -> np.ndarray:
    """Neighbour index array of a sparse graph, e.g. ``obsp["spatial_connectivities"]`` from squidpy.

    Parameters
    ----------
    graph
        ``(n, n)`` sparse (or dense) matrix, nonzero where ``i`` and ``j`` are linked; the diagonal is
        ignored.

    Returns
    -------
    ``(n, k)`` int64, row ``i`` the nodes linked to ``i`` in increasing order, ``-1`` padded to the
    largest degree ``k`` (at least 1 column).

    Examples
    --------
    >>> import numpy as np
    >>> import stfuse as sf
    >>> sf.gr.neighbours_from_graph(np.array([[0, 1, 1], [1, 0, 0], [1, 0, 1]])).tolist()
    [[1, 2], [0, -1], [0, -1]]
    """
    g = sparse.csr_matrix(graph, copy=True)
    g.setdiag(0)
    g.eliminate_zeros()
    g.sort_indices()
    deg = np.diff(g.indptr)
    out = np.full((g.shape[0], max(int(deg.max()) if len(deg) else 0, 1)), -1, np.int64)
    rows = np.repeat(np.arange(g.shape[0]), deg)
    cols = np.arange(len(g.indices)) - np.repeat(g.indptr[:-1], deg)
    out[rows, cols] = g.indices
    return out
