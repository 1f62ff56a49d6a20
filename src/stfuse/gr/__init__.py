"""Spatial graphs (numba): ``sf.gr``.

Array kernels on points (:mod:`._kernels`) and on neighbour index arrays (:mod:`._neighbours`) import
nothing of the Spots view; :func:`spatial_graph` works on a section and writes to its table.
"""

from typing import Any

from ._kernels import detect_lattice, grid_cells, knn, radius_neighbors, spacing
from ._neighbours import adjacency, bfs_order, grow_mask, hop_tokens, neighbours_from_graph

__all__ = [
    "SpatialGraph",
    "adjacency",
    "bfs_order",
    "detect_lattice",
    "grid_cells",
    "grow_mask",
    "hop_tokens",
    "knn",
    "neighbours_from_graph",
    "radius_neighbors",
    "spacing",
    "spatial_graph",
]


def __getattr__(name: str) -> Any:
    # spatial_graph works on a section through the Spots view, which itself uses the kernels above: it is
    # imported on first use so that the package's kernels stay a floor below stfuse._spots
    if name in ("SpatialGraph", "spatial_graph"):
        from . import _graph

        return getattr(_graph, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
