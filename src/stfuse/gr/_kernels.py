"""Array kernels on 2-D points (numba; no AnnData): kNN, radius neighbours, lattice, spacing, grid cells.

Points are bucketed into a uniform grid of square cells (a counting sort); each point then scans
rings of cells around its own until the k-th nearest distance is provably final. This is exact,
linear in the number of points for spatial data (bounded density) and runs in parallel over points.

This module imports nothing of the Spots view, so :mod:`stfuse._spots` can use it.
"""

from __future__ import annotations

from typing import Any, Literal

import numba
import numpy as np
from scipy import sparse

from .._errors import InputError
from .._settings import settings, start_numba_threads

__all__ = ["detect_lattice", "grid_cells", "knn", "radius_neighbors", "spacing"]


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
def _radius_pass(xy, radius, nx, ny, cell, starts, order, include_self, fill, indptr, indices, dists):
    """Neighbours within ``radius`` of every point: counted, or written and sorted.

    ``fill=False`` returns the counts; ``fill=True`` writes them into ``indices``/``dists`` at ``indptr``
    and sorts each row by (distance, index).
    """
    n = xy.shape[0]
    counts = np.zeros(n, np.int64)
    r2 = radius * radius
    for i in numba.prange(n):
        c = cell[i]
        cx = c % nx
        cy = c // nx
        lo = indptr[i] if fill else 0
        m = lo
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
                        if fill:
                            indices[m] = j
                            dists[m] = np.sqrt(d2)
                        m += 1
        counts[i] = m - lo
        if fill:  # insertion sort of this row: rows are short
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
    return counts


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
    start_numba_threads()
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
    _, _, _, nx, ny, cell, starts, order = _grid(xy, float(radius))
    indptr = np.zeros(n + 1, np.int64)
    none_i, none_d = np.empty(0, np.int64), np.empty(0, np.float64)
    counts = _radius_pass(xy, float(radius), nx, ny, cell, starts, order, include_self, False, indptr, none_i, none_d)
    np.cumsum(counts, out=indptr[1:])
    indices = np.empty(indptr[-1], np.int64)
    dists = np.empty(indptr[-1], np.float64)
    _radius_pass(xy, float(radius), nx, ny, cell, starts, order, include_self, True, indptr, indices, dists)
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
    if not ok.any():
        return None, float("nan")
    spacing = _median_positive(d1, float("nan"))
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


def _median_positive(d: np.ndarray, default: float) -> float:
    """Median of the positive entries of ``d`` (``default`` when there are none)."""
    d = d[d > 0]
    return float(np.median(d)) if len(d) else float(default)


def spacing(coords: Any, neighbours: Any = None, *, default: float = float("nan")) -> float:
    """Spot spacing: the median distance from each point to its nearest other point.

    Points at the same place as their nearest neighbour (distance 0) are left out, so duplicated
    centres do not pull the spacing to zero.

    Parameters
    ----------
    coords
        ``(n, 2)`` array of x, y.
    neighbours
        Optional ``(n, k)`` neighbour index array sorted by distance (``-1`` = none), e.g. from
        :func:`knn`: its first column is taken as each point's nearest neighbour, so no search is run.
        ``None``: exact nearest neighbours from :func:`knn`.
    default
        Returned when no point has a neighbour at a positive distance (fewer than two points, or
        all points at one place).

    Returns
    -------
    The spacing, in the units of ``coords``.

    Examples
    --------
    >>> import numpy as np
    >>> import stfuse as sf
    >>> xx, yy = np.meshgrid(np.arange(5.0), np.arange(5.0))
    >>> sf.gr.spacing(np.column_stack([xx.ravel(), yy.ravel()]) * 2.5)
    2.5
    >>> sf.gr.spacing(np.zeros((1, 2)), default=1.0)
    1.0
    """
    xy = _as_coords(coords)
    if neighbours is None:
        if len(xy) < 2:
            return float(default)
        _, dist = knn(xy, 1)
        return _median_positive(dist[:, 0], default)
    first = np.asarray(neighbours, dtype=np.int64)[:, :1]
    d = np.linalg.norm(xy[np.where(first >= 0, first, 0)[:, 0]] - xy, axis=1)
    return _median_positive(d[first[:, 0] >= 0], default)


def grid_cells(coords: Any, side: float) -> np.ndarray:
    """Id of the square cell of side ``side`` that holds each point, numbered ``0..`` in cell order.

    Cells are anchored at the lowest x and y of the points; ids are consecutive over the cells that
    hold at least one point, ordered row by row (y, then x).

    Parameters
    ----------
    coords
        ``(n, 2)`` array of x, y.
    side
        Cell side, in the units of ``coords``.

    Returns
    -------
    ``(n,)`` int64 cell ids.

    Examples
    --------
    >>> import numpy as np
    >>> import stfuse as sf
    >>> sf.gr.grid_cells(np.array([[0.0, 0.0], [0.5, 0.2], [3.0, 0.0], [0.0, 3.0]]), 2.0).tolist()
    [0, 0, 1, 2]
    """
    if not side > 0:
        raise InputError(f"side must be positive, got {side}.")
    xy = np.asarray(coords, dtype=np.float64)
    cell = np.floor((xy - xy.min(axis=0)) / side).astype(np.int64)
    key = cell[:, 1] * (int(cell[:, 0].max()) + 1) + cell[:, 0]
    _, ids = np.unique(key, return_inverse=True)
    return ids.astype(np.int64)
