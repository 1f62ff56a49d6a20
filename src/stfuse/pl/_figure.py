"""The one plot skeleton of ``sf.pl``: the shared parameters, the wrapper that adds them, the panel function.

squidpy's ``_wrap_signature`` idea: the parameters every plot shares are written once, as the fields
of :class:`PlotOptions` (documented once in ``_DOCS``). :func:`plot_function` adds them to a plot's
signature and docstring, collects them into one :class:`PlotOptions` and passes it to the plot body
as ``opts``. A body reads the results a tool wrote, describes its panels and hands them to
:func:`draw`, which lays out the figure, draws every panel, stores the categorical colours in
``uns[f"{key}_colors"]`` and saves / shows / returns as scanpy does:

.. code-block:: python

    @plot_function(exclude=("palette",), ncols=2)
    def my_plot(sdata, key: str = "x", *, opts: PlotOptions):
        \"\"\"One line. Parameters (own ones only) ... Examples ...\"\"\"
        spots = opts.get_spots(sdata)
        return draw(spots, [Panel(spots.table.obs[key], title=key, key=key)], opts)
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import os
import textwrap
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, TypeVar

import numpy as np
import pandas as pd

from .. import _keys as K
from .. import _logging as log
from .._docs import inject_docs
from .._errors import InputError
from .._spots import Spots, get_spots, selection
from . import _base

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.colors import Colormap
    from matplotlib.figure import Figure

__all__ = ["SPATIAL", "Panel", "PlotOptions", "draw", "finish", "plot_function"]

F = TypeVar("F", bound=Callable[..., Any])

#: matplotlib backends that cannot show a window (``show=None`` does not call ``plt.show()`` there)
_NON_INTERACTIVE = frozenset({"agg", "cairo", "pdf", "pgf", "ps", "svg", "template"})


@dataclass(frozen=True)
class PlotOptions:
    """The parameters every ``sf.pl`` plot shares (documented once, in ``_DOCS``)."""

    table_key: str | None = None
    shapes_key: str | None = None
    image_key: str | None = None
    library_id: str | None = None
    library_key: str | None = None
    coordinate_system: str | None = None
    image: bool = True
    level: int | Literal["auto"] = "auto"
    crop: bool | tuple[float, float, float, float] = True
    size: float = 1.0
    alpha: float = 1.0
    img_alpha: float = 1.0
    outline: bool | str = False
    palette: str | Sequence[str] | Mapping[Any, str] | None = None
    cmap: str | Colormap = "viridis"
    vmin: float | str | None = None
    vmax: float | str | None = None
    na_color: str = _base.NA_COLOR
    legend: bool = True
    scalebar: bool = True
    title: str | Sequence[str | None] | None = None
    ncols: int | None = None
    panel_size: float = 4.0
    dpi: float | None = None
    ax: Axes | Sequence[Axes] | None = None
    show: bool | None = None
    return_fig: bool = False
    save: str | os.PathLike | None = None

    def get_spots(self, sdata: Any, *, table_key: str | None = None) -> Spots:
        """The :class:`~stfuse._spots.Spots` view to draw (``table_key`` overrides the option)."""
        select = selection(vars(self))
        if table_key is not None:
            select["table_key"] = table_key
        return get_spots(sdata, **select)


_FIELDS = {f.name: f for f in dataclasses.fields(PlotOptions)}

#: the options that only mean something over the image (a plot of curves excludes them)
SPATIAL = ("shapes_key", "image_key", "library_id", "library_key", "coordinate_system", "image", "level", "crop",
           "size", "alpha", "img_alpha", "outline", "palette", "cmap", "vmin", "vmax", "na_color", "legend",
           "scalebar")

_DOCS: dict[str, str] = {
    "table_key": 'Table to read (a SpatialData), ignored for an AnnData. ``None``: the only table, else ``"table"``.',
    "shapes_key": "Spot circles to draw (a SpatialData); inferred when the table annotates one element.",
    "image_key": "Image to draw under the spots (a SpatialData); inferred when one image shares the spots' "
                 "coordinate system.",
    "library_id": 'Library of ``uns["spatial"]`` (a squidpy-style AnnData); inferred when there is one.',
    "library_key": "``obs`` column naming each spot's library (an AnnData concatenated from sections); all rows "
                   'must belong to one library, e.g. ``adata[adata.obs[library_key] == "A"]``.',
    "coordinate_system": "Coordinate system in which the spots are placed on the image (a SpatialData); "
                         'inferred from those the spots and the image share (``"global"`` first).',
    "image": "Draw the H&E image under the spots (ignored, with spots alone, when the section has none).",
    "level": 'Image level to draw: ``"auto"`` (the coarsest level that keeps about one image pixel per screen '
             "pixel at ``dpi``) or an index into the levels (0 = full resolution).",
    "crop": "``True``: zoom on the spots (plus one spot spacing); ``False``: the whole image; or a box "
            "``(x0, y0, x1, y1)`` in full-resolution pixels.",
    "size": "Spot circle diameter as a fraction of the true spot diameter.",
    "alpha": "Opacity of the spots.",
    "img_alpha": "Opacity of the image.",
    "outline": "Draw the edge of every spot circle: ``True`` in black, or a colour.",
    "palette": "Colours of categorical values: a colormap name, a list of colours, or ``{category: colour}``. "
               'Default: ``uns[f"{key}_colors"]`` when it has one colour per category, else scanpy\'s palettes. '
               'The colours used are stored in ``uns[f"{key}_colors"]`` (as scanpy does), so later plots reuse them.',
    "cmap": "Colormap of continuous values.",
    "vmin": 'Lower limit of continuous values: a number or a percentile such as ``"p1"``.',
    "vmax": 'Upper limit of continuous values: a number or a percentile such as ``"p99"``.',
    "na_color": "Colour of spots without a value.",
    "legend": "Draw the legend (categorical) or colorbar (continuous).",
    "scalebar": "Draw a scalebar in µm (skipped, with a log note, when the pixel size is unknown).",
    "title": "Panel title(s): one string for every panel, or one entry per panel (``None`` keeps the default).",
    "ncols": "Panels per row (default: this plot's layout).",
    "panel_size": "Height of each panel in inches.",
    "dpi": 'Resolution of ``save`` and of ``level="auto"`` (default ``rcParams["savefig.dpi"]``).',
    "ax": "Draw into these existing axes (one per panel) instead of a new figure.",
    "show": "Show the figure (``plt.show()``). ``None``: show unless ``save`` or ``ax`` is given or matplotlib's "
            "backend cannot show (``Agg`` in scripts and tests).",
    "return_fig": "Return the :class:`~matplotlib.figure.Figure`, also when it was shown or drawn into ``ax``.",
    "save": "Write the figure to this path (format from the extension: ``.png``, ``.pdf``, ``.svg``); the figure "
            "is then closed in pyplot (not shown again) unless ``show=True``.",
}

_RETURNS = """\
Returns
-------
``None`` when the figure was shown; otherwise the :class:`~matplotlib.figure.Figure` drawn, or the
axes passed as ``ax=`` (one :class:`~matplotlib.axes.Axes`, or a list for several panels);
the Figure whenever ``return_fig=True``."""


def _document(doc: str | None, names: Sequence[str]) -> str:
    """``doc`` with the shared parameters ``names`` appended to its Parameters and a Returns section."""
    doc = inspect.cleandoc(doc or "")
    head, sep, examples = doc.partition("\nExamples\n--------\n")
    if not sep or "\nParameters\n----------\n" not in head:
        raise ValueError("a plot's docstring needs a Parameters and an Examples section")
    shared = "\n".join(f"{n}\n" + textwrap.fill(_DOCS[n], 100, initial_indent="    ", subsequent_indent="    ")
                       for n in names)
    return f"{head.rstrip()}\n{shared}\n\n{_RETURNS}\n{sep}{examples}"


def plot_function(*, exclude: Sequence[str] = (), **defaults: Any) -> Callable[[F], F]:
    """Give a plot body ``f(..., *, opts)`` the shared parameters of :class:`PlotOptions`.

    The public function takes the body's own parameters and, keyword-only, every option not in
    ``exclude`` (with ``defaults`` instead of the class defaults); its docstring gets their shared
    text and the Returns section. The body receives them as one ``opts`` (excluded options keep
    their defaults, and passing one is an error like any unknown keyword).
    """
    unknown = sorted((set(exclude) | set(defaults)) - set(_FIELDS))
    if unknown:
        raise ValueError(f"no plot option(s) {unknown}")
    base = PlotOptions(**defaults)
    shared = [n for n in _FIELDS if n not in exclude]

    def wrap(body: F) -> F:
        sig = inspect.signature(body)
        own = [p for p in sig.parameters.values() if p.name != "opts"]
        clash = sorted({p.name for p in own} & set(shared))
        if clash or "opts" not in sig.parameters:
            raise ValueError(f"{body.__name__} must take opts and exclude the options it defines itself: {clash}")

        @functools.wraps(body)
        def plot(*args: Any, **kwargs: Any) -> Any:
            opts = dataclasses.replace(base, **{n: kwargs.pop(n) for n in shared if n in kwargs})
            return body(*args, opts=opts, **kwargs)

        params = own + [inspect.Parameter(n, inspect.Parameter.KEYWORD_ONLY, default=getattr(base, n),
                                          annotation=_FIELDS[n].type) for n in shared]
        plot.__signature__ = sig.replace(parameters=params)  # type: ignore[attr-defined]
        plot.__doc__ = _document(body.__doc__, shared)
        return inject_docs(plot)  # type: ignore[return-value]

    return wrap


# ------------------------------------------------------------------------------------------------
# the panel function
# ------------------------------------------------------------------------------------------------
@dataclass
class Panel:
    """One panel of a figure drawn by :func:`draw`.

    A spatial panel draws ``values`` (one per spot of ``spots``, default the figure's) over the
    image; ``None`` draws the spot outlines, or the image alone with ``show_spots=False``. ``key``
    names the ``obs`` column the values come from: categorical colours are then read from and
    stored in ``uns[f"{key}_colors"]``. ``palette`` overrides the ``palette`` option (matched
    colours), ``style`` overrides other arguments of :func:`~stfuse.pl._base.draw_spots`; ``then``
    draws on top (a contour). A panel with ``plot`` is not spatial: ``plot(ax)`` draws it (a curve,
    a histogram).
    """

    values: pd.Series | np.ndarray | None = None
    title: str | None = None
    key: str | None = None
    spots: Spots | None = None
    kind: _base.ValuesKind | None = None
    palette: str | Sequence[str] | Mapping[Any, str] | None = None
    show_spots: bool = True
    scalebar: bool = True
    style: Mapping[str, Any] = field(default_factory=dict)
    then: Callable[[Axes], Any] | None = None
    plot: Callable[[Axes], Any] | None = None


def _titles(title: str | Sequence[str | None] | None, n: int) -> list[str | None]:
    if title is None or isinstance(title, str):
        return [title] * n
    t = list(title)
    if len(t) != n:
        raise InputError(f"title has {len(t)} entries for {n} panels; give one per panel or a single string.")
    return t


def _same_colors(stored: Any, colors: list[str]) -> bool:
    from matplotlib.colors import to_hex

    try:
        return stored is not None and [to_hex(c) for c in stored] == colors
    except (TypeError, ValueError):
        return False


def draw(spots: Spots | None, panels: Sequence[Panel], opts: PlotOptions, *, ncols: int | None = None,
         aspect: float = 1.0) -> Figure | Axes | list[Axes] | None:
    """Draw ``panels`` of section ``spots`` (``None`` for plots without spatial panels) as ``opts`` say.

    Lays the panels out (``opts.ncols``, else ``ncols``, else all in one row; width per panel from
    the crop box, or ``aspect`` without spots), draws each, stores the categorical colours used in
    ``uns[K.colors(key)]`` of the table they belong to, then :func:`finish`.
    """
    box = _base.crop_box(spots, opts.crop) if spots is not None else None
    titles = _titles(opts.title, len(panels))
    p = _base.panels(len(panels), ax=opts.ax, ncols=opts.ncols or ncols or len(panels), panel_size=opts.panel_size,
                     aspect=_base.box_aspect(box) if box is not None else aspect,
                     extra_width=[0.0 if x.plot else _base.legend_width(x.values, legend=opts.legend) for x in panels])
    edge = {} if not opts.outline else {"edgecolor": "black" if opts.outline is True else opts.outline,
                                        "linewidth": 0.5}
    stored: dict[tuple[int, str], tuple[Spots, list[str]]] = {}
    for ax, panel, title in zip(p.axes, panels, titles):
        title = panel.title if title is None else title
        if panel.plot is not None:
            panel.plot(ax)
            if title is not None:
                ax.set_title(title)
            continue
        if spots is None:
            raise InputError("A spatial panel needs the spots of a section.")
        sp = panel.spots if panel.spots is not None else spots
        palette = panel.palette if panel.palette is not None else opts.palette
        kind = panel.kind or (None if panel.values is None else
                              "categorical" if _base.is_categorical(panel.values) else "continuous")
        if kind == "categorical" and panel.values is not None:
            cats = _base.category_order(panel.values)
            uns = sp.table.uns.get(K.colors(panel.key)) if panel.key is not None else None
            palette = _base.category_colors(cats, palette=palette, uns_colors=uns)
            if panel.key is not None and panel.key in sp.table.obs.columns and sp.table_in_data:
                stored[id(sp.table), panel.key] = (sp, [palette[c] for c in cats])
        kw = {"kind": kind, "palette": palette, "cmap": opts.cmap, "vmin": opts.vmin, "vmax": opts.vmax,
              "na_color": opts.na_color, "size": opts.size, "alpha": opts.alpha, "legend": opts.legend,
              "colorbar": opts.legend, **edge, **panel.style}
        _base.spatial_panel(ax, sp, panel.values, title=title, image=opts.image, level=opts.level, box=box,
                            img_alpha=opts.img_alpha, show_spots=panel.show_spots,
                            with_scalebar=opts.scalebar and panel.scalebar, dpi=opts.dpi, **kw)
        if panel.then is not None:
            panel.then(ax)
    for (_, key), (sp, colors) in stored.items():  # scanpy's {key}_colors, written once the figure is drawn
        if not _same_colors(sp.table.uns.get(K.colors(key)), colors):
            sp.table.uns[K.colors(key)] = colors
    return finish(p, opts)


def _can_show() -> bool:
    import matplotlib

    return str(matplotlib.get_backend()).lower() not in _NON_INTERACTIVE


def finish(p: _base.Panels, opts: PlotOptions) -> Figure | Axes | list[Axes] | None:
    """Save, show and return as scanpy does (``opts.save``, ``opts.show``, ``opts.return_fig``).

    ``save`` writes the figure first. ``show=None`` shows it unless it was saved, drawn into the
    user's ``ax``, or the backend cannot show. A figure saved and not shown is closed in pyplot (so
    Jupyter does not display it twice). Returns the Figure with ``return_fig``, else ``None`` when
    shown, else the Figure (or the user's axes).
    """
    import matplotlib.pyplot as plt

    if opts.save is not None:
        path = os.fspath(opts.save)
        parent = os.path.dirname(path)
        if parent:
            os.makedirs(parent, exist_ok=True)
        p.fig.savefig(path, dpi=opts.dpi, bbox_inches="tight")
        log.info(f"saved figure to {path!r}")
    show = opts.show if opts.show is not None else opts.save is None and not p.given and _can_show()
    if show:
        plt.show()
    elif opts.save is not None and not p.given:
        plt.close(p.fig)
    if opts.return_fig:
        return p.fig
    if show:
        return None
    if p.given:
        return p.axes[0] if len(p.axes) == 1 else p.axes
    return p.fig
