"""Readers: ``sf.io``."""

from ._image import lazy_image
from ._st import read_st
from ._visium import read_visium

__all__ = ["lazy_image", "read_st", "read_visium"]
