"""Tools: ``sf.tl`` (each writes its results into the user's object)."""

from ._senca import senca

__all__ = ["senca"]
