"""Spatial graphs (numba): ``sf.gr``.

Array kernels on points (:mod:`._kernels`) and on neighbour index arrays (:mod:`._neighbours`) import
nothing of the Spots view; :func:`spatial_graph` works on a section and writes to its table.
"""

from ._graph import SpatialGraph, spatial_graph
from ._kernels import detect_lattice, grid_cells, knn, radius_neighbors, spacing
from ._neighbours import adjacency, bfs_order, grow_mask, hop_tokens

__all__ = [
    "SpatialGraph",
    "adjacency",
    "bfs_order",
    "detect_lattice",
    "grid_cells",
    "grow_mask",
    "hop_tokens",
    "knn",
    "radius_neighbors",
    "spacing",
    "spatial_graph",
]
