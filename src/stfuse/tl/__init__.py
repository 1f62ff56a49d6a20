"""Tools: ``sf.tl`` (each writes its results into the user's table)."""

from ._stmic import stmic, stmic_markers

__all__ = ["stmic", "stmic_markers"]
