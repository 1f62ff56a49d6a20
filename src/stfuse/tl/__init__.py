"""Tools: ``sf.tl``."""

from ._spacrd import spacrd

__all__ = ["spacrd"]
