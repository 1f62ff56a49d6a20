"""Savable torch models: ``sf.models``."""

from ._base import BaseModel
from ._histospace import HistoSPACE, HistoSPACEModule

__all__ = ["BaseModel", "HistoSPACE", "HistoSPACEModule"]
