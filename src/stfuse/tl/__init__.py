"""Tools: ``sf.tl``."""

from ._tissue import tile_tissue
from .histospace import histospace

__all__ = ["histospace", "tile_tissue"]
