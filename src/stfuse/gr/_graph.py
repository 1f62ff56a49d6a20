"""Spatial neighbour graph of the spots of a section (:func:`spatial_graph`), as squidpy builds and writes it.

The array kernels (kNN, radius, lattice, spacing) are in :mod:`stfuse.gr._kernels`.
"""

from __future__ import annotations

import warnings
from typing import Any, Literal, NamedTuple

import numpy as np
import pandas as pd
from scipy import sparse

from .. import _keys as K
from .. import _logging as log
from .._docs import inject_docs
from .._errors import InputError
from .._spots import Spots, get_spots, is_spatialdata
from ._kernels import detect_lattice, knn, radius_neighbors

__all__ = ["SpatialGraph", "spatial_graph"]


class SpatialGraph(NamedTuple):
    """The graph returned by :func:`spatial_graph` with ``copy=True``.

    ``connectivities`` and ``distances`` are the sparse matrices squidpy's
    :class:`~squidpy.gr.SpatialNeighborsResult` holds (distances are Euclidean in level-0 image
    pixels in generic mode, ring indices in grid mode). ``indices[i]`` are the neighbours of spot
    ``i`` (itself left out), nearest first, padded with ``-1`` where a spot has fewer neighbours.
    """

    connectivities: sparse.csr_matrix
    distances: sparse.csr_matrix
    indices: np.ndarray


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


@inject_docs
def spatial_graph(
    sdata: Any,
    *,
    n_neighs: int | None = None,
    radius: float | None = None,
    coord_type: Literal["grid", "generic"] | None = None,
    n_rings: int = 1,
    transform: Literal["spectral", "cosine"] | None = None,
    set_diag: bool = False,
    symmetrize: bool = False,
    table_key: str | None = None,
    shapes_key: str | None = None,
    library_id: str | None = None,
    library_key: str | None = None,
    coordinate_system: str | None = None,
    key_added: str = K.GRAPH_KEY,
    copy: bool = False,
) -> SpatialGraph | None:
    """Build a spatial neighbour graph of the spots (numba; exact), as :func:`squidpy.gr.spatial_neighbors` does.

    The graph is written where squidpy writes it, with the same values: squidpy functions such as
    :func:`squidpy.gr.nhood_enrichment` read it unchanged, and where the parameter names match
    squidpy's, the edges, the stored distances and ``uns[...]["params"]`` match squidpy's too.

    Parameters
    ----------
    %(sdata)s
    n_neighs
        Neighbours per spot (``"grid"``: candidate neighbours, see ``coord_type``). ``None``: 4 on a
        square lattice (legacy ST) in grid mode, else 6 (squidpy's default; Visium's hexagonal lattice).
    radius
        ``"generic"`` only: connect every pair of spots no farther apart than this (level-0 image
        pixels) instead of kNN. Ignored, with a warning, in grid mode (as in squidpy).
    coord_type
        ``"grid"``: squidpy's grid mode — each spot's ``n_neighs`` nearest spots, keeping those closer
        than 1.3 times the median of all these candidate distances, so border spots get fewer
        neighbours; distances are ring indices (1 for direct neighbours). ``"generic"``: plain kNN
        (or radius) graph with Euclidean distances. ``None``: ``"grid"`` when the spots form a square
        or hexagonal lattice (:func:`stfuse.gr.detect_lattice`) and ``radius`` is not given, else
        ``"generic"`` (squidpy decides by the presence of ``uns["spatial"]`` instead).
    n_rings
        ``"grid"`` only: also connect spots up to this many lattice hops apart; their distance is the
        hop count (squidpy's ``n_rings``).
    transform
        Transform of the connectivities: ``None``, ``"spectral"`` (:math:`D^{-1/2} A D^{-1/2}`) or
        ``"cosine"`` (cosine similarity of the rows of :math:`A`), as in squidpy.
    set_diag
        Set the diagonal of the connectivities to 1 (each spot its own neighbour), as in squidpy.
    symmetrize
        Make the graph symmetric (``A or Aᵀ``) before ``transform`` (stfuse only; squidpy's kNN graph
        is directed, and the default ``False`` keeps exactly its neighbour sets).
    %(table_key)s
    %(shapes_key)s
    library_id, coordinate_system
        Passed to :func:`stfuse._spots.get_spots`: the ``uns["spatial"]`` library of an AnnData, the
        coordinate system of a SpatialData.
    library_key
        For an AnnData concatenated from several sections: the ``obs`` column naming each spot's
        library. One graph is built per library on ``obsm["spatial"]``, with no edges between
        libraries (squidpy's ``library_key``).
    key_added
        Writes ``obsp[f"{key_added}_connectivities"]``, ``obsp[f"{key_added}_distances"]`` and
        ``uns[f"{key_added}_neighbors"]`` (squidpy's names).
    copy
        Return the graph instead of writing it (as in squidpy); the data are not modified.

    Returns
    -------
    With ``copy=True``, a :class:`SpatialGraph`: ``connectivities`` and ``distances`` as squidpy's
    :class:`~squidpy.gr.SpatialNeighborsResult`, plus ``indices``, each spot's neighbours as a
    ``-1``-padded array. Otherwise ``None``; the graph is written to the table.

    Examples
    --------
    >>> import stfuse as sf
    >>> sdata = sf.datasets.toy(n_spots=400)
    >>> sf.gr.spatial_graph(sdata)
    >>> sdata.tables["table"].uns["spatial_neighbors"]["params"]["coord_type"]
    'grid'
    >>> g = sf.gr.spatial_graph(sdata, coord_type="generic", copy=True)
    >>> g.indices.shape
    (400, 6)
    """
    spots, groups = _spots_and_libraries(sdata, table_key=table_key, shapes_key=shapes_key, library_id=library_id,
                                         library_key=library_key, coordinate_system=coordinate_system)
    xy = spots.centers
    n = len(xy)
    kinds = {detect_lattice(xy[g])[0] if len(g) >= 8 else None for g in groups}
    lattice = kinds.pop() if len(kinds) == 1 else None
    if coord_type is None:
        coord_type = "grid" if lattice is not None and radius is None else "generic"
    if coord_type not in ("grid", "generic"):
        raise InputError(f"coord_type must be 'grid', 'generic' or None, got {coord_type!r}.")
    if transform not in (None, "spectral", "cosine"):
        raise InputError(f"transform must be None, 'spectral' or 'cosine', got {transform!r}.")
    if int(n_rings) < 1:
        raise InputError(f"n_rings must be at least 1, got {n_rings}.")
    if coord_type == "grid" and radius is not None:
        log.warning(f"radius={radius} is ignored in grid mode (as in squidpy); use coord_type='generic'.")
        radius = None
    if n_neighs is None:
        n_neighs = 4 if lattice == "square" and coord_type == "grid" else 6
    if int(n_neighs) < 1:
        raise InputError(f"n_neighs must be at least 1, got {n_neighs}.")
    smallest = min(len(g) for g in groups)
    if radius is None and int(n_neighs) >= smallest:
        where = "this section" if len(groups) == 1 else "the smallest library"
        raise InputError(f"n_neighs={n_neighs} needs more spots than the {smallest} in {where}; lower n_neighs.")

    if coord_type == "grid":
        params: dict[str, Any] = {"coord_type": "grid", "n_neighbors": int(n_neighs), "n_rings": int(n_rings),
                                  "delaunay": False, "transform": transform}
    elif radius is not None:
        params = {"coord_type": "generic", "radius": radius, "transform": transform}
    else:
        params = {"coord_type": "generic", "n_neighbors": int(n_neighs), "transform": transform}
    parts = [_build(xy[g], coord_type, int(n_neighs), radius, int(n_rings), bool(set_diag)) for g in groups]
    if len(parts) == 1:
        conn, dst = parts[0]
    else:  # one graph per library, no edges between them (squidpy's library_key)
        order = np.argsort(np.concatenate(groups), kind="stable")
        conn = sparse.block_diag([c for c, _ in parts], format="csr")[order][:, order].tocsr()
        dst = sparse.block_diag([d for _, d in parts], format="csr")[order][:, order].tocsr()
    params.update(lattice=lattice, symmetrize=bool(symmetrize))  # stfuse's additions
    if symmetrize:
        conn = conn.maximum(conn.T).tocsr()
        dst = dst.maximum(dst.T).tocsr()
    conn.eliminate_zeros()
    dst.eliminate_zeros()
    indices = _neighbour_array(conn, xy)
    conn = _transform(conn, transform)
    log.info(f"spatial graph ({coord_type}, {params.get('n_neighbors', radius)}) on {n} spots: {conn.nnz} edges")
    if copy:
        return SpatialGraph(conn, dst, indices)
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
    return None


def _build(xy: np.ndarray, coord_type: str, n_neighs: int, radius: float | None, n_rings: int, set_diag: bool
           ) -> tuple[sparse.csr_matrix, sparse.csr_matrix]:
    """Connectivities and distances of one section's spots."""
    if coord_type == "grid":
        return _grid_graph(xy, n_neighs, n_rings, set_diag)
    if radius is not None:
        dst = radius_neighbors(xy, float(radius))
        conn = dst.copy().astype(np.float32)
        conn.data[:] = 1.0
    else:
        conn, dst = _to_csr(*knn(xy, n_neighs), len(xy))
    if set_diag:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", sparse.SparseEfficiencyWarning)
            conn.setdiag(1.0)
    return conn, dst


def _spots_and_libraries(sdata: Any, *, table_key: str | None, shapes_key: str | None, library_id: str | None,
                         library_key: str | None, coordinate_system: str | None) -> tuple[Any, list[np.ndarray]]:
    """The Spots view and the rows of each library (one group of all rows without ``library_key``)."""
    if library_key is None:
        spots = get_spots(sdata, table_key=table_key, shapes_key=shapes_key, library_id=library_id,
                          coordinate_system=coordinate_system)
        return spots, [np.arange(spots.n_obs)]
    if is_spatialdata(sdata):
        raise InputError(
            "library_key is for an AnnData concatenated from several sections; a SpatialData table holds one "
            "section (choose it with table_key=...)."
        )
    if K.SPATIAL not in getattr(sdata, "obsm", {}):
        return get_spots(sdata), []  # get_spots raises the error that explains what is missing
    if library_key not in sdata.obs:
        raise InputError(f"No column {library_key!r} in obs (library_key); obs columns: {list(sdata.obs)}.")
    codes = pd.Categorical(sdata.obs[library_key]).codes
    if (codes < 0).any():
        raise InputError(f"obs[{library_key!r}] is missing for {int((codes < 0).sum())} spots; every spot needs a library.")
    groups = [np.flatnonzero(codes == c) for c in range(codes.max() + 1)]
    xy = np.asarray(sdata.obsm[K.SPATIAL], dtype=np.float64)[:, :2]  # squidpy's coordinates, per library
    return Spots(data=sdata, table=sdata, centers=xy, diameter=0.0), [g for g in groups if len(g)]


def _grid_graph(xy: np.ndarray, n_neighs: int, n_rings: int, set_diag: bool) -> tuple[sparse.csr_matrix,
                                                                                       sparse.csr_matrix]:
    """Grid graph as squidpy builds it: kNN cut at 1.3 x the median candidate distance; distances are ring indices."""
    n = len(xy)
    idx, dd = knn(xy, n_neighs)
    ok = idx >= 0
    keep = ok & (dd < 1.3 * np.median(dd[ok]))
    rows = np.repeat(np.arange(n), n_neighs)[keep.ravel()]
    adj = sparse.csr_matrix((np.ones(len(rows), np.float32), (rows, idx[keep])), shape=(n, n))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", sparse.SparseEfficiencyWarning)
        if n_rings > 1:
            adj.setdiag(1.0)
            res, walk = adj, adj
            for i in range(n_rings - 1):  # spots first reached after i + 2 hops
                walk = walk @ adj
                walk[res.nonzero()] = 0.0
                walk.eliminate_zeros()
                walk.data[:] = i + 2.0
                res = res + walk
            adj = res
            adj.setdiag(float(set_diag))
            adj.eliminate_zeros()
            dst = adj.copy()
            adj.data[:] = 1.0
        else:
            if set_diag:
                adj.setdiag(1.0)
            dst = adj.copy()
        dst.setdiag(0.0)
    return adj.tocsr(), dst.tocsr()


def _transform(conn: sparse.csr_matrix, transform: str | None) -> sparse.csr_matrix:
    """The connectivity transforms of squidpy: ``"spectral"`` (D^-1/2 A D^-1/2) or ``"cosine"``."""
    if transform == "spectral" and conn.nnz:
        d = np.sqrt(1.0 / np.asarray(conn.sum(axis=0)).ravel())
        rows = np.repeat(np.arange(conn.shape[0]), np.diff(conn.indptr))
        return sparse.csr_matrix((d[rows] * conn.data * d[conn.indices], conn.indices, conn.indptr),
                                 shape=conn.shape)
    if transform == "cosine":
        from sklearn.metrics.pairwise import cosine_similarity

        return sparse.csr_matrix(cosine_similarity(conn, dense_output=False))
    return conn


def _neighbour_array(conn: sparse.csr_matrix, xy: np.ndarray) -> np.ndarray:
    """``(n, k)`` neighbours of each spot (itself left out), nearest first, ties by index; ``-1`` padded."""
    coo = conn.tocoo()
    other = coo.row != coo.col
    r, c = coo.row[other], coo.col[other]
    length = np.linalg.norm(xy[c] - xy[r], axis=1)
    order = np.lexsort((c, length, r))
    r, c = r[order], c[order]
    counts = np.bincount(r, minlength=conn.shape[0])
    out = np.full((conn.shape[0], int(counts.max()) if len(counts) and len(r) else 0), -1, np.int64)
    starts = np.zeros(len(counts) + 1, np.int64)
    np.cumsum(counts, out=starts[1:])
    out[r, np.arange(len(r)) - starts[r]] = c
    return out
