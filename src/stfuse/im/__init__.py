"""Image branch: patches, encoders, embeddings: ``sf.im``."""

from ._embed import ImageFeatures, embed, embedding_key, image_features
from ._encoders import Encoder, EncoderRegistry, encoders, get_encoder
from ._patches import PatchBatch, extract_patches, fit_stain, iter_patches, patch_side_px
from ._stain import StainNormalizer, normalize_stain

__all__ = [
    "Encoder",
    "EncoderRegistry",
    "ImageFeatures",
    "PatchBatch",
    "StainNormalizer",
    "embed",
    "embedding_key",
    "encoders",
    "extract_patches",
    "fit_stain",
    "get_encoder",
    "image_features",
    "iter_patches",
    "normalize_stain",
    "patch_side_px",
]
