"""Spatial neighbour graphs on spot centres with numba.

Points are bucketed into a uniform grid of square cells (a counting sort); each point then scans
rings of cells around its own until the k-th nearest distance is provably final. This is exact,
linear in the number of points for spatial data (bounded density) and runs in parallel over points.
"""

from __future__ import annotations

from typing import Any, Literal, NamedTuple

import numba
import numpy as np
from scipy import sparse

from .. import _keys as K
from .. import _logging as log
from .._docs import inject_docs
from .._errors import InputError
from .._settings import settings
from .._spots import get_spots

__all__ = ["SpatialGraph", "detect_lattice", "knn", "radius_neighbors", "spatial_graph"]


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


# ------------------------------------------------------------------------------------------------
# numba kernels
# ------------------------------------------------------------------------------------------------
@numba.njit(cache=True)
def _bucket(xy: np.ndarray, x0: float, y0: float, h: float, nx: int, ny: int):
    """Counting sort of points into grid cells: returns (cell of each point, cell start, order)."""
    n = xy.shape[0]
    cell = np.empty(n, np.int64)
    counts = np.zeros(nx * ny + 1, np.int64)
    for i in range(n):
        cx = min(int((xy[i, 0] - x0) / h), nx - 1)
        cy = min(int((xy[i, 1] - y0) / h), ny - 1)
        c = cy * nx + cx
        cell[i] = c
        counts[c + 1] += 1
    for c in range(nx * ny):
        counts[c + 1] += counts[c]
    order = np.empty(n, np.int64)
    fill = counts[:-1].copy()
    for i in range(n):
        c = cell[i]
        order[fill[c]] = i
        fill[c] += 1
    return cell, counts, order


@numba.njit(inline="always")
def _insert(i_best: np.ndarray, d_best: np.ndarray, m: int, k: int, j: int, d: float) -> int:
    """Insert candidate (d, j) into the sorted best-k list of length m; ties broken by index."""
    if m == k and (d > d_best[k - 1] or (d == d_best[k - 1] and j > i_best[k - 1])):
        return m
    pos = m if m < k else k - 1
    while pos > 0 and (d_best[pos - 1] > d or (d_best[pos - 1] == d and i_best[pos - 1] > j)):
        if pos < k:
            d_best[pos] = d_best[pos - 1]
            i_best[pos] = i_best[pos - 1]
        pos -= 1
    d_best[pos] = d
    i_best[pos] = j
    return m + 1 if m < k else k


@numba.njit(parallel=True, cache=True)
def _knn_kernel(sx, sy, order, starts, x0, y0, h, nx, ny, k, include_self, out_i, out_d):
    """K nearest neighbours; points are visited in cell order (``sx``/``sy`` are sorted by cell).

    Rings of cells are scanned outward until the k-th distance is no larger than the distance
    from the point to the edge of the scanned square (sides touching the grid border do not count),
    so the result is exact.
    """
    n = sx.shape[0]
    max_ring = max(nx, ny)
    for t in numba.prange(n):
        px = sx[t]
        py = sy[t]
        cx = min(int((px - x0) / h), nx - 1)
        cy = min(int((py - y0) / h), ny - 1)
        i = order[t]
        i_best = out_i[i]
        d_best = out_d[i]
        m = 0
        for r in range(max_ring + 1):
            for gy in range(max(cy - r, 0), min(cy + r, ny - 1) + 1):
                edge_row = gy == cy - r or gy == cy + r
                gx = cx - r
                while gx <= cx + r:
                    if 0 <= gx < nx:
                        cc = gy * nx + gx
                        for u in range(starts[cc], starts[cc + 1]):
                            if u == t and not include_self:
                                continue
                            dx = sx[u] - px
                            dy = sy[u] - py
                            m = _insert(i_best, d_best, m, k, order[u], dx * dx + dy * dy)
                    if edge_row or r == 0:
                        gx += 1
                    else:
                        gx += 2 * r
            if m == k:
                b = np.inf
                if cx - r > 0:
                    b = min(b, px - (x0 + (cx - r) * h))
                if cx + r < nx - 1:
                    b = min(b, x0 + (cx + r + 1) * h - px)
                if cy - r > 0:
                    b = min(b, py - (y0 + (cy - r) * h))
                if cy + r < ny - 1:
                    b = min(b, y0 + (cy + r + 1) * h - py)
                if d_best[k - 1] <= b * b:
                    break
        for q in range(k):
            d_best[q] = np.sqrt(d_best[q])


@numba.njit(parallel=True, cache=True)
def _radius_count(xy, radius, x0, y0, h, nx, ny, cell, starts, order, include_self):
    n = xy.shape[0]
    counts = np.zeros(n, np.int64)
    r2 = radius * radius
    for i in numba.prange(n):
        c = cell[i]
        cx = c % nx
        cy = c // nx
        m = 0
        for gy in range(max(cy - 1, 0), min(cy + 2, ny)):
            for gx in range(max(cx - 1, 0), min(cx + 2, nx)):
                cc = gy * nx + gx
                for t in range(starts[cc], starts[cc + 1]):
                    j = order[t]
                    if j == i and not include_self:
                        continue
                    dx = xy[j, 0] - xy[i, 0]
                    dy = xy[j, 1] - xy[i, 1]
                    if dx * dx + dy * dy <= r2:
                        m += 1
        counts[i] = m
    return counts


@numba.njit(parallel=True, cache=True)
def _radius_fill(xy, radius, x0, y0, h, nx, ny, cell, starts, order, include_self, indptr, indices, dists):
    n = xy.shape[0]
    r2 = radius * radius
    for i in numba.prange(n):
        c = cell[i]
        cx = c % nx
        cy = c // nx
        m = indptr[i]
        for gy in range(max(cy - 1, 0), min(cy + 2, ny)):
            for gx in range(max(cx - 1, 0), min(cx + 2, nx)):
                cc = gy * nx + gx
                for t in range(starts[cc], starts[cc + 1]):
                    j = order[t]
                    if j == i and not include_self:
                        continue
                    dx = xy[j, 0] - xy[i, 0]
                    dy = xy[j, 1] - xy[i, 1]
                    d2 = dx * dx + dy * dy
                    if d2 <= r2:
                        indices[m] = j
                        dists[m] = np.sqrt(d2)
                        m += 1
        # sort this row by (distance, index) — rows are short
        lo = indptr[i]
        for a in range(lo + 1, m):
            dj = dists[a]
            ij = indices[a]
            b = a
            while b > lo and (dists[b - 1] > dj or (dists[b - 1] == dj and indices[b - 1] > ij)):
                dists[b] = dists[b - 1]
                indices[b] = indices[b - 1]
                b -= 1
            dists[b] = dj
            indices[b] = ij


# ------------------------------------------------------------------------------------------------
# array API (used by the models; no AnnData here)
# ------------------------------------------------------------------------------------------------
def _as_coords(coords: Any) -> np.ndarray:
    xy = np.ascontiguousarray(np.asarray(coords, dtype=np.float64))
    if xy.ndim != 2 or xy.shape[1] != 2:
        raise InputError(f"Coordinates must be an (n, 2) array of x, y; got shape {xy.shape}.")
    if not np.all(np.isfinite(xy)):
        raise InputError("Coordinates contain NaN or infinite values; drop those spots first.")
    return xy


def _grid(xy: np.ndarray, h: float | None, per_cell: float = 2.0):
    x0, y0 = xy.min(axis=0)
    x1, y1 = xy.max(axis=0)
    w, ht = max(x1 - x0, 0.0), max(y1 - y0, 0.0)
    n = len(xy)
    if h is None:
        area = max(w * ht, (max(w, ht) ** 2) / max(n, 1))
        h = float(np.sqrt(area * per_cell / n)) if area > 0 else 1.0
    h = max(h, 1e-12 * max(w, ht, 1.0))
    nx = min(int(w / h) + 1, 1 << 15)
    ny = min(int(ht / h) + 1, 1 << 15)
    h = max(h, w / nx, ht / ny) * (1 + 1e-12)
    cell, starts, order = _bucket(xy, x0, y0, h, nx, ny)
    return x0, y0, h, nx, ny, cell, starts, order


def _set_threads() -> None:
    if settings.n_jobs is not None:
        numba.set_num_threads(max(1, min(int(settings.n_jobs), numba.config.NUMBA_NUM_THREADS)))


def knn(coords: Any, k: int, *, include_self: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Exact k nearest neighbours of 2-D points.

    Parameters
    ----------
    coords
        ``(n, 2)`` array of x, y.
    k
        Number of neighbours per point.
    include_self
        Count each point as its own first neighbour.

    Returns
    -------
    ``indices`` ``(n, k)`` int64 and ``distances`` ``(n, k)`` float64, sorted by distance (ties by
    index). Where ``k`` exceeds the available points, slots are ``-1`` / ``inf``.

    Examples
    --------
    >>> import numpy as np
    >>> import stfuse as sf
    >>> idx, dist = sf.gr.knn(np.array([[0.0, 0.0], [1.0, 0.0], [3.0, 0.0]]), 1)
    >>> idx.ravel().tolist(), dist.ravel().tolist()
    ([1, 0, 1], [1.0, 1.0, 2.0])
    """
    xy = _as_coords(coords)
    if int(k) < 1:
        raise InputError(f"k must be at least 1, got {k}.")
    if len(xy) == 0:
        return np.empty((0, int(k)), np.int64), np.empty((0, int(k)))
    _set_threads()
    k = int(k)
    x0, y0, h, nx, ny, _, starts, order = _grid(xy, None, per_cell=max(2.0, k / 2.0))
    out_i = np.full((len(xy), k), -1, np.int64)
    out_d = np.full((len(xy), k), np.inf, np.float64)
    sx = np.ascontiguousarray(xy[order, 0])
    sy = np.ascontiguousarray(xy[order, 1])
    _knn_kernel(sx, sy, order, starts, x0, y0, h, nx, ny, k, include_self, out_i, out_d)
    return out_i, out_d


def radius_neighbors(coords: Any, radius: float, *, include_self: bool = False) -> sparse.csr_matrix:
    """All pairs of points within ``radius``, as a CSR distance matrix (rows sorted by distance).

    Parameters
    ----------
    coords
        ``(n, 2)`` array of x, y.
    radius
        Maximum distance (inclusive), in the units of ``coords``.
    include_self
        Keep each point as its own neighbour (distance 0, stored explicitly).

    Returns
    -------
    ``(n, n)`` :class:`scipy.sparse.csr_matrix` of distances.

    Examples
    --------
    >>> import numpy as np
    >>> import stfuse as sf
    >>> d = sf.gr.radius_neighbors(np.array([[0.0, 0.0], [1.0, 0.0], [3.0, 0.0]]), 1.5)
    >>> d.nnz
    2
    """
    xy = _as_coords(coords)
    if not radius > 0:
        raise InputError(f"radius must be positive, got {radius}.")
    n = len(xy)
    _set_threads()
    x0, y0, h, nx, ny, cell, starts, order = _grid(xy, float(radius))
    counts = _radius_count(xy, float(radius), x0, y0, h, nx, ny, cell, starts, order, include_self)
    indptr = np.zeros(n + 1, np.int64)
    np.cumsum(counts, out=indptr[1:])
    indices = np.empty(indptr[-1], np.int64)
    dists = np.empty(indptr[-1], np.float64)
    _radius_fill(xy, float(radius), x0, y0, h, nx, ny, cell, starts, order, include_self, indptr, indices, dists)
    return sparse.csr_matrix((dists, indices, indptr), shape=(n, n))


def detect_lattice(coords: Any) -> tuple[Literal["square", "hex"] | None, float]:
    """Detect whether spots sit on a square (legacy ST) or hexagonal (Visium) lattice.

    Parameters
    ----------
    coords
        ``(n, 2)`` spot centres.

    Returns
    -------
    ``("square" | "hex" | None, spacing)``: the lattice kind (``None`` for irregular points) and the
    median nearest-neighbour distance.

    Examples
    --------
    >>> import numpy as np
    >>> import stfuse as sf
    >>> xx, yy = np.meshgrid(np.arange(10.0), np.arange(10.0))
    >>> sf.gr.detect_lattice(np.column_stack([xx.ravel(), yy.ravel()]))
    ('square', 1.0)
    """
    xy = _as_coords(coords)
    if len(xy) < 8:
        return None, float("nan")
    _, d = knn(xy, 7)
    d1 = d[:, 0]
    ok = d1 > 0
    spacing = float(np.median(d1[ok])) if ok.any() else float("nan")
    if not ok.any():
        return None, spacing
    r = d[ok] / spacing
    # interior spots: 4 neighbours at the spacing then a gap (square) or 6 (hex)
    near = (r < 1.15).sum(axis=1)
    sq = np.mean((near == 4) & (r[:, 4] > 1.3))
    hx = np.mean(near == 6)
    if hx >= 0.3 and hx > sq:
        return "hex", spacing
    if sq >= 0.3:
        return "square", spacing
    return None, spacing


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
