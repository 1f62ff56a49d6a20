"""Torch building blocks shared by the models: ``sf.nn`` (no AnnData/SpatialData here)."""

from ._attention import NeighbourhoodCrossAttention, neighbourhood_tokens
from ._blocks import ConvAutoencoder, ConvDecoder, ConvEncoder, mlp
from ._losses import info_nce, nt_xent
from ._train import seeded, train

__all__ = [
    "ConvAutoencoder",
    "ConvDecoder",
    "ConvEncoder",
    "NeighbourhoodCrossAttention",
    "info_nce",
    "mlp",
    "neighbourhood_tokens",
    "nt_xent",
    "seeded",
    "train",
]
