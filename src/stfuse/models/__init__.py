"""Savable torch models: ``sf.models``."""

from ._base import BaseModel
from ._histospace import HistoSPACE, HistoSPACEModule
from ._spacrd import GMMThreshold, SpaCRD, SpaCRDModule, gmm_threshold

__all__ = ["BaseModel", "GMMThreshold", "HistoSPACE", "HistoSPACEModule", "SpaCRD", "SpaCRDModule", "gmm_threshold"]
