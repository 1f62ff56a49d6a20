"""Shared parameter documentation, injected into docstrings with :func:`inject_docs`.

A docstring writes ``%(sdata)s`` on its own line (indented like the other parameters) and the
decorator replaces it with the shared text, so every tool documents ``sdata``, ``table_key``,
``key_added``, ``device``, ``random_state`` and ``copy`` the same way.
"""

from __future__ import annotations

import textwrap
from collections.abc import Callable
from typing import TypeVar

F = TypeVar("F", bound=Callable)

_PARAMS: dict[str, str] = {
    "sdata": """\
sdata
    A :class:`spatialdata.SpatialData` with a table annotating spot circles and an H&E image, or an
    :class:`anndata.AnnData` with ``obsm["spatial"]`` and squidpy-style ``uns["spatial"][library_id]``.""",
    "table_key": """\
table_key
    Key of the table in ``sdata.tables`` (ignored for an AnnData). ``None``: the only table, else
    ``"table"``.""",
    "shapes_key": """\
shapes_key
    Key of the spot circles in ``sdata.shapes``. Inferred when the table annotates exactly one element.""",
    "image_key": """\
image_key
    Key of the H&E image in ``sdata.images``. Inferred when exactly one image shares the spots'
    coordinate system; otherwise the error lists the candidates.""",
    "key_added": """\
key_added
    Results are written to ``obs[key_added]``, ``obsm[f"X_{key_added}"]`` and ``uns[key_added]``.
    Existing results under the same key are replaced (with a warning) only after success.""",
    "device": """\
device
    Torch device: ``"auto"`` (CUDA if available, else CPU; see :attr:`stfuse.settings`), ``"cpu"``,
    ``"cuda"``, ``"cuda:1"``, ...""",
    "random_state": """\
random_state
    Seed for every random choice (initialisation, dropout, batching). Same inputs and seed on CPU
    give the same result bit for bit.""",
    "copy": """\
copy
    Return a modified copy instead of writing into ``sdata``. Images and shapes are shared with the
    original (they are not modified); tables are copied.""",
    # --- shared by the plots in sf.pl -----------------------------------------------------------
    "pl_elements": """\
table_key, shapes_key, image_key, library_id
    Which table, spot circles and image to draw (SpatialData), or which ``uns["spatial"]`` library
    (AnnData); inferred when there is one candidate.""",
    "pl_spatial": """\
image
    Draw the H&E image under the spots (ignored, with spots alone, when the section has none).
level
    Image level to draw: ``"auto"`` (the coarsest level that keeps about one image pixel per screen
    pixel at ``dpi``) or an index into the levels (0 = full resolution).
crop
    ``True``: zoom on the spots (plus one spot spacing); ``False``: the whole image; or a box
    ``(x0, y0, x1, y1)`` in full-resolution pixels.
size
    Spot circle diameter as a fraction of the true spot diameter.
alpha, img_alpha
    Opacity of the spots and of the image.
palette
    Colours of categorical values: a colormap name, a list of colours, or ``{category: colour}``.
    Default: ``uns[f"{key}_colors"]`` when it has one colour per category, else scanpy's palettes.
cmap, vmin, vmax
    Colormap and limits of continuous values; limits are numbers or percentiles such as ``"p99"``.
na_color
    Colour of spots without a value.
legend
    Draw the legend (categorical) or colorbar (continuous).
scalebar
    Draw a scalebar in µm (skipped, with a log note, when the pixel size is unknown).""",
    "pl_figure": """\
ncols
    Panels per row.
panel_size
    Height of each panel in inches.
dpi
    Resolution of ``save`` and of ``level="auto"`` (default ``rcParams["savefig.dpi"]``).
ax
    Draw into these existing axes (one per panel) instead of a new figure.
save
    Write the figure to this path (format from the extension: ``.png``, ``.pdf``, ``.svg``).""",
    "pl_returns": """\
Returns
-------
The :class:`~matplotlib.figure.Figure` drawn, or the axes passed as ``ax=`` (one
:class:`~matplotlib.axes.Axes`, or a list for several panels). In Jupyter, end the line with ``;``
(or assign the result) so the returned figure is not shown a second time.""",
    "returns_inplace": """\
Returns
-------
``None``, or a copy of ``sdata`` when ``copy=True``. Results are written to the table as described
above; the object is left unchanged if the computation fails.""",
}


def inject_docs(func: F) -> F:
    """Replace ``%(name)s`` lines in ``func.__doc__`` by the shared parameter texts."""
    doc = func.__doc__
    if not doc:
        return func
    doc = textwrap.dedent(doc) if not doc.startswith("\n") else doc
    for name, text in _PARAMS.items():
        token = f"%({name})s"
        while token in doc:
            start = doc.index(token)
            line_start = doc.rfind("\n", 0, start) + 1
            indent = doc[line_start:start]
            doc = doc[:line_start] + textwrap.indent(text, indent) + doc[start + len(token) :]
    func.__doc__ = doc
    return func
