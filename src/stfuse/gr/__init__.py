"""Spatial graphs (numba): ``sf.gr``."""

from ._graph import SpatialGraph, detect_lattice, knn, radius_neighbors, spatial_graph

__all__ = ["SpatialGraph", "detect_lattice", "knn", "radius_neighbors", "spatial_graph"]
