"""Spatial neighbour graph of the spots of a section (:func:`spatial_graph`), written where squidpy does.

The array kernels (kNN, radius, lattice, spacing) are in :mod:`stfuse.gr._kernels`.
"""

from __future__ import annotations

from typing import Any, Literal, NamedTuple

import numpy as np
from scipy import sparse

from .. import _keys as K
from .. import _logging as log
from .._docs import inject_docs
from .._errors import InputError
from ._kernels import detect_lattice, knn, radius_neighbors

__all__ = ["SpatialGraph", "spatial_graph"]


class SpatialGraph(NamedTuple):
    """Neighbour arrays returned by :func:`spatial_graph`.

    ``indices[i]`` are the neighbours of spot ``i`` sorted by distance, padded with ``-1`` where a
    spot has fewer neighbours (grid mode at tissue borders, radius mode); ``distances`` likewise
    (``inf`` in padded slots). ``connectivities``/``distance_matrix`` are the sparse matrices that
    were written to ``obsp``.
    """

    indices: np.ndarray
    distances: np.ndarray
    connectivities: sparse.csr_matrix
    distance_matrix: sparse.csr_matrix


def _to_csr(indices: np.ndarray, distances: np.ndarray, n: int) -> tuple[sparse.csr_matrix, sparse.csr_matrix]:
    """Connectivity (float32 ones) and distance CSR matrices from padded neighbour arrays (rows sorted)."""
    valid = indices >= 0
    counts = valid.sum(axis=1)
    indptr = np.zeros(n + 1, np.int64)
    np.cumsum(counts, out=indptr[1:])
    if valid.all():
        cols = indices.reshape(-1)
        dist = distances.reshape(-1)
    else:
        cols = indices[valid]
        dist = distances[valid]
    idx_dtype = np.int32 if n < 2**31 - 1 else np.int64
    cols = cols.astype(idx_dtype)
    indptr = indptr.astype(idx_dtype)
    conn = sparse.csr_matrix((np.ones(len(cols), np.float32), cols, indptr), shape=(n, n))
    dst = sparse.csr_matrix((dist.copy(), cols.copy(), indptr.copy()), shape=(n, n))  # no shared buffers
    conn.has_sorted_indices = False
    dst.has_sorted_indices = False
    return conn, dst


def _from_csr(dst: sparse.csr_matrix) -> tuple[np.ndarray, np.ndarray]:
    counts = np.diff(dst.indptr)
    k = int(counts.max()) if len(counts) else 0
    n = dst.shape[0]
    idx = np.full((n, k), -1, np.int64)
    dd = np.full((n, k), np.inf)
    pos = np.arange(dst.nnz) - np.repeat(dst.indptr[:-1], counts)
    rows = np.repeat(np.arange(n), counts)
    idx[rows, pos] = dst.indices
    dd[rows, pos] = dst.data
    return idx, dd


@inject_docs
def spatial_graph(
    sdata: Any,
    *,
    n_neighs: int | None = None,
    radius: float | None = None,
    coord_type: Literal["grid", "generic"] | None = None,
    symmetrize: bool = False,
    table_key: str = K.TABLE,
    shapes_key: str | None = None,
    key_added: str = K.GRAPH_KEY,
    inplace: bool = True,
) -> SpatialGraph:
    """Build a spatial neighbour graph of the spots (numba; exact).

    Writes the graph where :func:`squidpy.gr.spatial_neighbors` does, so squidpy functions such as
    :func:`squidpy.gr.nhood_enrichment` read it unchanged.

    Parameters
    ----------
    %(sdata)s
    n_neighs
        Neighbours per spot. ``None``: 4 on a square lattice (legacy ST), 6 on a hexagonal lattice
        (Visium) or for irregular spots.
    radius
        Connect every pair of spots closer than this (level-0 image pixels) instead of kNN.
    coord_type
        ``"grid"``: neighbours on the lattice only — the ``n_neighs`` nearest spots no farther than
        1.3 lattice spacings, so border spots get fewer neighbours (squidpy's grid mode).
        ``"generic"``: plain kNN (or radius) graph. ``None``: ``"grid"`` when the spots form a square
        or hexagonal lattice, else ``"generic"``.
    symmetrize
        Make the connectivities symmetric (``A or Aᵀ``). squidpy's kNN graph is directed; default
        ``False`` keeps exactly its neighbour sets.
    %(table_key)s
    %(shapes_key)s
    key_added
        Writes ``obsp[f"{key_added}_connectivities"]``, ``obsp[f"{key_added}_distances"]`` and
        ``uns[f"{key_added}_neighbors"]`` (squidpy's names).
    inplace
        Write to the table; ``False`` only returns the graph.

    Returns
    -------
    A :class:`SpatialGraph` with neighbour index/distance arrays (``-1``/``inf`` padded) and the
    sparse matrices. Distances are in level-0 image pixels.

    Examples
    --------
    >>> import stfuse as sf
    >>> sdata = sf.datasets.toy(n_spots=400)
    >>> g = sf.gr.spatial_graph(sdata)
    >>> g.indices.shape
    (400, 6)
    >>> "spatial_connectivities" in sdata.tables["table"].obsp
    True
    """
    from .._spots import get_spots  # the Spots view is a floor above the kernels (and imports them)

    spots = get_spots(sdata, table_key=table_key, shapes_key=shapes_key)
    xy = spots.centers
    n = len(xy)
    lattice, spacing = detect_lattice(xy) if n >= 8 else (None, float("nan"))
    if coord_type is None:
        coord_type = "grid" if lattice is not None and radius is None else "generic"
    if coord_type not in ("grid", "generic"):
        raise InputError(f"coord_type must be 'grid', 'generic' or None, got {coord_type!r}.")
    if coord_type == "grid" and lattice is None:
        raise InputError("coord_type='grid' but the spots do not form a square or hexagonal lattice; use 'generic'.")
    if n_neighs is None:
        n_neighs = 4 if lattice == "square" and coord_type == "grid" else 6
    if radius is None and int(n_neighs) >= n:
        raise InputError(f"n_neighs={n_neighs} needs more spots than the {n} in this section; lower n_neighs.")

    if radius is not None:
        dst = radius_neighbors(xy, float(radius))
        idx, dd = _from_csr(dst)
        conn = dst.copy()
        conn.data = np.ones_like(conn.data, dtype=np.float32)
        conn = conn.astype(np.float32)
    else:
        idx, dd = knn(xy, int(n_neighs))
        if coord_type == "grid":
            far = dd > 1.3 * spacing
            idx[far] = -1
            dd[far] = np.inf
        conn, dst = _to_csr(idx, dd, n)
    if symmetrize:
        conn = conn.maximum(conn.T).tocsr()
        dst = dst.maximum(dst.T).tocsr()
    params = {
        "n_neighbors": int(n_neighs) if radius is None else None,
        "coord_type": coord_type,
        "radius": radius,
        "lattice": lattice,
        "symmetrize": bool(symmetrize),
        "transform": None,
    }
    params = {k: v for k, v in params.items() if v is not None}
    log.info(f"spatial graph ({coord_type}, {params.get('n_neighbors', radius)}) on {n} spots: {conn.nnz} edges")
    if inplace:
        spots.write(
            key_added,
            obsp={K.connectivities(key_added): conn, K.distances(key_added): dst},
            uns={
                K.neighbors_uns(key_added): {
                    "connectivities_key": K.connectivities(key_added),
                    "distances_key": K.distances(key_added),
                    "params": params,
                }
            },
        )
    return SpatialGraph(idx, dd, conn, dst)
