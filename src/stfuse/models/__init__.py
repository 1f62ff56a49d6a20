"""Savable torch models: ``sf.models``."""

from ._base import BaseModel

__all__ = ["BaseModel"]
