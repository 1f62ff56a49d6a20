"""Savable torch models: ``sf.models``."""

from ._base import BaseModel
from ._senca import SENCA, SENCAModule

__all__ = ["SENCA", "BaseModel", "SENCAModule"]
