"""Tools: ``sf.tl`` (each writes its results into the user's table)."""

from ._senca import senca
from ._spacrd import spacrd
from ._stmic import stmic, stmic_markers

__all__ = ["senca", "spacrd", "stmic", "stmic_markers"]
