"""Savable torch models: ``sf.models``."""

from ._base import BaseModel
from ._senca import SENCA, SENCAModule
from ._spacrd import GMMThreshold, SpaCRD, SpaCRDModule, gmm_threshold

__all__ = ["SENCA", "BaseModel", "GMMThreshold", "SENCAModule", "SpaCRD", "SpaCRDModule", "gmm_threshold"]
