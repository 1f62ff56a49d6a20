"""Torch building blocks shared by the models: ``sf.nn`` (no AnnData/SpatialData here)."""

from ._attention import (
    NeighbourhoodCrossAttention,
    graph_mean,
    nbr_to_edges,
    neighbourhood_tokens,
    tokens_to_edges,
)
from ._blocks import ConvAutoencoder, ConvDecoder, ConvEncoder, mlp, pooled_maps
from ._cache import MapCache, map_cache, tile_digests
from ._losses import info_nce, nt_xent
from ._train import autocast_dtype, seeded, to_device, train
from ._vision import (
    ResNet50,
    TissueCNN,
    file_checksum,
    histospace_autoencoder,
    load_state_dict,
    shipped_weights,
    tissue_cnn,
)

__all__ = [
    "ConvAutoencoder",
    "ConvDecoder",
    "ConvEncoder",
    "MapCache",
    "NeighbourhoodCrossAttention",
    "ResNet50",
    "TissueCNN",
    "autocast_dtype",
    "file_checksum",
    "graph_mean",
    "histospace_autoencoder",
    "info_nce",
    "load_state_dict",
    "map_cache",
    "mlp",
    "nbr_to_edges",
    "neighbourhood_tokens",
    "nt_xent",
    "pooled_maps",
    "seeded",
    "shipped_weights",
    "tile_digests",
    "tissue_cnn",
    "to_device",
    "tokens_to_edges",
    "train",
]
