"""Plots over the H&E image: ``sf.pl``.

Every plot returns the :class:`~matplotlib.figure.Figure` it drew, or — when ``ax=`` is given — the
axes it drew into; ``save=path`` writes the figure. Spots are circles of their true size, in
full-resolution image pixels, over an image level chosen for the figure size (``level=`` to choose).
"""

from ._histospace import histospace
from ._senca import loss, senca
from ._spacrd import spacrd
from ._spatial import compare, spots
from ._stmic import stmic

__all__ = ["compare", "histospace", "loss", "senca", "spacrd", "spots", "stmic"]
