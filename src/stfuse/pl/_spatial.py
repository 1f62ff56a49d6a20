"""``sf.pl.spots`` and ``sf.pl.compare``: spots over the H&E image, and domains next to a truth."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from .. import _keys as K
from .._errors import InputError, KeyNotFoundError
from .._results import Result, read
from . import _base
from ._figure import Panel, PlotOptions, draw, plot_function

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = ["compare", "spots"]

#: options of the domain plots (categorical only; their titles carry the ARI)
DOMAIN_EXCLUDE = ("cmap", "vmin", "vmax", "title")


@plot_function(ncols=3)
def spots(
    sdata: Any, color: str | Sequence[str | None] | None = None, *, layer: str | None = None, opts: PlotOptions
) -> Figure | Axes | list[Axes] | None:
    """Spots drawn as circles of their true size over the H&E image, coloured by obs columns or genes.

    Categorical values (categories, strings, booleans) get a palette and a legend; numbers get a
    colormap and a colorbar; spots without a value are grey. One panel per entry of ``color``;
    ``None`` in ``color`` draws the spot outlines over the image. Default titles are the keys
    (``"H&E"`` / ``"spots"`` for outlines).

    Parameters
    ----------
    %(sdata)s
    color
        ``obs`` column(s) or gene name(s) to colour by; several give one panel each.
    layer
        Layer to read gene values from (default ``X``).

    Examples
    --------
    >>> import stfuse as sf
    >>> sdata = sf.datasets.toy(n_spots=100)
    >>> fig = sf.pl.spots(sdata, color=["region", "G000"], outline=True, show=False)
    >>> [a.get_title() for a in fig.axes if a.get_title()]
    ['region', 'G000']
    >>> list(sdata.tables["table"].uns["region_colors"])  # stored for the next plot
    ['#1f77b4', '#ff7f0e', '#279e68', '#d62728']
    """
    sp = opts.get_spots(sdata)
    keys = [color] if color is None or isinstance(color, str) else list(color)
    if not keys:
        raise InputError("color is an empty list; give at least one obs column or gene (or None for outlines).")
    default = "H&E" if opts.image and sp.has_image else "spots"
    panels = [Panel(None, default) if k is None else Panel(_base.get_values(sp, k, layer=layer), k, key=k)
              for k in keys]
    return draw(sp, panels, opts)


def domain_result(sdata: Any, key: str, tool: str, opts: PlotOptions) -> Result:
    """The result of ``sf.tl.<tool>`` under ``key`` (``uns[key]`` and the domains ``obs[key]``)."""
    res = read(sdata, key, table_key=opts.table_key, tool=tool)
    if res.obs() is None:
        raise KeyNotFoundError(
            f"No obs column {key!r}: run sf.tl.{tool}(sdata, key_added={key!r}) first, or pass key=... "
            f"(obs columns: {list(res.table.obs.columns)})."
        )
    return res


def domain_panels(sdata: Any, keys: str | Sequence[str], *, truth: str | None, titles: Sequence[str] | None,
                  image_panel: bool, match_colors: bool, opts: PlotOptions) -> Figure | Axes | list[Axes] | None:
    """The body of :func:`compare` (and of the tool plots): ``H&E | domains ... | truth``."""
    from ..metrics import ari

    sp = opts.get_spots(sdata)
    keys = [keys] if isinstance(keys, str) else list(keys)
    if not keys:
        raise InputError("keys is empty; give the obs columns holding the domains to show.")
    values = [_base.get_values(sp, k).astype("category") for k in keys]
    t_values = _base.get_values(sp, truth).astype("category") if truth is not None else None
    head = list(titles) if titles is not None else list(keys)
    if len(head) != len(keys):
        raise InputError(f"titles has {len(head)} entries for {len(keys)} keys.")
    t_colors = None
    if t_values is not None:
        usable = ~t_values.astype(str).str.strip().str.lower().isin([u.lower() for u in K.UNDETERMINED]) & t_values.notna()
        for i, v in enumerate(values):
            ok = usable.to_numpy() & v.notna().to_numpy()
            score = ari(t_values[ok], v[ok]) if ok.any() else float("nan")
            head[i] = f"{head[i]}{chr(10) if len(head[i]) > 24 else '  '}ARI {score:.3f}"  # long titles: 2 lines
        t_colors = _base.category_colors(list(t_values.cat.categories), palette=opts.palette,
                                         uns_colors=sp.table.uns.get(K.colors(truth)))
    panels = [Panel(None, "H&E", show_spots=False)] if opts.image and image_panel and sp.has_image else []
    for k, v, t in zip(keys, values, head):
        matched = opts.palette is None and match_colors and t_colors is not None
        pal = _base.matched_colors(v, t_values, t_colors) if matched else None
        panels.append(Panel(v, t, key=k, kind="categorical", palette=pal, scalebar=False))
    if t_values is not None:
        panels.append(Panel(t_values, f"{truth} (truth)", key=truth, kind="categorical", palette=t_colors,
                            scalebar=False))
    panels[0].scalebar = True  # one scalebar, on the first panel
    return draw(sp, panels, opts)


@plot_function(exclude=DOMAIN_EXCLUDE)
def compare(
    sdata: Any,
    keys: str | Sequence[str],
    *,
    truth: str | None = None,
    titles: Sequence[str] | None = None,
    image_panel: bool = True,
    match_colors: bool = True,
    opts: PlotOptions,
) -> Figure | Axes | list[Axes] | None:
    """Several methods' domains next to the ground truth, with the ARI of each in its title.

    This is also the body of the tool plots (``sf.pl.stmic``, ...): ``H&E | domains | truth``.

    Panels: the H&E image (when ``image`` and the section has one), one panel per key, then the
    truth (when given). The ARI is :func:`stfuse.metrics.ari` over spots whose truth is set and not
    "undetermined"/"unknown". Each key's clusters are drawn in the colour of the truth class they
    overlap most (``match_colors=False`` for independent palettes); the colours drawn are stored in
    ``uns[f"{key}_colors"]``, so :func:`stfuse.pl.spots` draws the key in them afterwards.

    Parameters
    ----------
    %(sdata)s
    keys
        ``obs`` columns with domain labels (e.g. ``["stmic", "senca", "leiden"]``).
    truth
        ``obs`` column with the ground truth (e.g. ``"label"`` or ``"cluster"``); without it, the
        domains are drawn without ARI.
    titles
        Panel titles of the keys (default the keys); the ARI is appended (on a new line after long titles).
    image_panel
        Start with a panel of the H&E image alone (when ``image`` and the section has one).
    match_colors
        Colour each cluster like the truth class it overlaps most (``palette`` turns matching off).

    Examples
    --------
    >>> import stfuse as sf
    >>> sdata = sf.datasets.toy(n_spots=100)
    >>> t = sdata.tables["table"]
    >>> t.obs["kmeans"] = (t.obsm["spatial"][:, 0] > 200).astype(str)
    >>> fig = sf.pl.compare(sdata, keys=["kmeans"], truth="region", show=False)
    >>> [a.get_title()[:13] for a in fig.axes if a.get_title()]
    ['H&E', 'kmeans  ARI 0', 'region (truth']
    """
    return domain_panels(sdata, keys, truth=truth, titles=titles, image_panel=image_panel, match_colors=match_colors,
                         opts=opts)
