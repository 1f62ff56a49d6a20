"""Tools: ``sf.tl`` (each writes its results into the user's table)."""

from ._histospace import histospace
from ._senca import senca
from ._spacrd import spacrd
from ._stmic import stmic, stmic_markers
from ._tissue import tile_tissue

__all__ = ["histospace", "senca", "spacrd", "stmic", "stmic_markers", "tile_tissue"]
