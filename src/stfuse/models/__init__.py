"""Savable torch models: ``sf.models``."""

from ._base import BaseModel
from ._spacrd import GMMThreshold, SpaCRD, SpaCRDModule, gmm_threshold

__all__ = ["BaseModel", "GMMThreshold", "SpaCRD", "SpaCRDModule", "gmm_threshold"]
