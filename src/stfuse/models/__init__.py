"""Savable torch models: ``sf.models``."""

from ._base import BaseModel
from ._histospace import HistoSPACE, HistoSPACEModule
from ._senca import SENCA, SENCAModule
from ._spacrd import GMMThreshold, SpaCRD, SpaCRDModule, gmm_threshold

__all__ = ["SENCA", "BaseModel", "GMMThreshold", "HistoSPACE", "HistoSPACEModule", "SENCAModule", "SpaCRD",
           "SpaCRDModule", "gmm_threshold"]
