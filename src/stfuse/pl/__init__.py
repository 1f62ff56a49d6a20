"""Plots over the H&E image: ``sf.pl``.

Every plot shares one set of parameters (image, level, crop, colours, layout, ``show`` /
``return_fig`` / ``save`` as in scanpy) and returns the :class:`~matplotlib.figure.Figure` it drew
(``None`` when shown, the axes when ``ax=`` is given). Spots are circles of their true size, in
full-resolution image pixels, over an image level chosen for the figure size (``level=`` to choose).
Categorical colours are stored in ``uns[f"{key}_colors"]`` and reused, as in scanpy.
"""

from ._histospace import histospace
from ._senca import loss, senca
from ._spacrd import spacrd
from ._spatial import compare, spots
from ._stmic import stmic

__all__ = ["compare", "histospace", "loss", "senca", "spacrd", "spots", "stmic"]
