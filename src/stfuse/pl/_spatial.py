"""``sf.pl.spots`` and ``sf.pl.compare``: spots over the H&E image, and domains next to a truth."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal

from .. import _keys as K
from .._docs import inject_docs
from .._errors import InputError
from . import _base

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = ["compare", "spots"]


def _titles(title: str | Sequence[str | None] | None, n: int) -> list[str | None]:
    if title is None or isinstance(title, str):
        return [title] * n
    t = list(title)
    if len(t) != n:
        raise InputError(f"title has {len(t)} entries for {n} panels; give one per panel or a single string.")
    return t


@inject_docs
def spots(
    sdata: Any,
    color: str | Sequence[str | None] | None = None,
    *,
    table_key: str = K.TABLE,
    shapes_key: str | None = None,
    image_key: str | None = None,
    library_id: str | None = None,
    layer: str | None = None,
    image: bool = True,
    level: int | Literal["auto"] = "auto",
    crop: bool | tuple[float, float, float, float] = True,
    size: float = 1.0,
    alpha: float = 1.0,
    img_alpha: float = 1.0,
    palette: str | Sequence[str] | Mapping[Any, str] | None = None,
    cmap: str = "viridis",
    vmin: float | str | None = None,
    vmax: float | str | None = None,
    na_color: str = _base.NA_COLOR,
    legend: bool = True,
    scalebar: bool = True,
    title: str | Sequence[str | None] | None = None,
    ncols: int = 3,
    panel_size: float = 4.0,
    dpi: float | None = None,
    ax: Axes | Sequence[Axes] | None = None,
    save: str | os.PathLike | None = None,
) -> Figure | Axes | list[Axes]:
    """Spots drawn as circles of their true size over the H&E image, coloured by obs columns or genes.

    Categorical values (categories, strings, booleans) get a palette and a legend; numbers get a
    colormap and a colorbar; spots without a value are grey. One panel per entry of ``color``;
    ``None`` in ``color`` draws the spot outlines over the image.

    Parameters
    ----------
    %(sdata)s
    color
        ``obs`` column(s) or gene name(s) to colour by; several give one panel each.
    %(pl_elements)s
    layer
        Layer to read gene values from (default ``X``).
    %(pl_spatial)s
    title
        Panel title(s); default the key (``"H&E"`` / ``"spots"`` for outlines).
    %(pl_figure)s

    %(pl_returns)s

    Examples
    --------
    >>> import stfuse as sf
    >>> sdata = sf.datasets.toy(n_spots=100)
    >>> fig = sf.pl.spots(sdata, color=["region", "G000"])
    >>> [a.get_title() for a in fig.axes if a.get_title()]
    ['region', 'G000']
    """
    sp = _base.get_plot_spots(sdata, table_key=table_key, shapes_key=shapes_key, image_key=image_key,
                              library_id=library_id)
    keys = [color] if color is None or isinstance(color, str) else list(color)
    if not keys:
        raise InputError("color is an empty list; give at least one obs column or gene (or None for outlines).")
    values = [None if k is None else _base.get_values(sp, k, layer=layer) for k in keys]
    default = "H&E" if image and sp.has_image else "spots"
    titles = [t if t is not None else (k if k is not None else default) for t, k in zip(_titles(title, len(keys)), keys)]
    box = _base.crop_box(sp, crop)
    p = _base.panels(len(keys), ax=ax, ncols=ncols, panel_size=panel_size, aspect=_base.box_aspect(box),
                     extra_width=[_base.legend_width(v, legend=legend) for v in values])
    for a, k, v, t in zip(p.axes, keys, values, titles):
        _base.spatial_panel(
            a, sp, v, title=t, image=image, level=level, box=box, img_alpha=img_alpha, with_scalebar=scalebar,
            dpi=dpi, palette=palette, uns_colors=sp.table.uns.get(f"{k}_colors") if k is not None else None,
            cmap=cmap, vmin=vmin, vmax=vmax, na_color=na_color, size=size, alpha=alpha, legend=legend,
            colorbar=legend,
        )
    return _base.finish(p, save=save, dpi=dpi)


@inject_docs
def compare(
    sdata: Any,
    keys: str | Sequence[str],
    *,
    truth: str | None = None,
    titles: Sequence[str] | None = None,
    image: bool = True,
    image_panel: bool = True,
    match_colors: bool = True,
    table_key: str = K.TABLE,
    shapes_key: str | None = None,
    image_key: str | None = None,
    library_id: str | None = None,
    level: int | Literal["auto"] = "auto",
    crop: bool | tuple[float, float, float, float] = True,
    size: float = 1.0,
    alpha: float = 1.0,
    img_alpha: float = 1.0,
    palette: str | Sequence[str] | Mapping[Any, str] | None = None,
    na_color: str = _base.NA_COLOR,
    legend: bool = True,
    scalebar: bool = True,
    ncols: int | None = None,
    panel_size: float = 4.0,
    dpi: float | None = None,
    ax: Axes | Sequence[Axes] | None = None,
    save: str | os.PathLike | None = None,
) -> Figure | Axes | list[Axes]:
    """Several methods' domains next to the ground truth, with the ARI of each in its title.

    This is also the body of the tool plots (``sf.pl.stmic``, ...): ``H&E | domains | truth``.

    Panels: the H&E image (when ``image`` and the section has one), one panel per key, then the
    truth (when given). The ARI is :func:`stfuse.metrics.ari` over spots whose truth is set and not
    "undetermined"/"unknown". Each key's clusters are drawn in the colour of the truth class they
    overlap most (``match_colors=False`` for independent palettes).

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
    image
        Draw the H&E image under the spots.
    image_panel
        Start with a panel of the H&E image alone (when ``image`` and the section has one).
    match_colors
        Colour each cluster like the truth class it overlaps most.
    %(pl_elements)s
    level, crop, size, alpha, img_alpha, palette, na_color, legend, scalebar
        As in :func:`stfuse.pl.spots` (``palette`` applies to every panel and turns off matching).
    %(pl_figure)s

    %(pl_returns)s

    Examples
    --------
    >>> import stfuse as sf
    >>> sdata = sf.datasets.toy(n_spots=100)
    >>> t = sdata.tables["table"]
    >>> t.obs["kmeans"] = (t.obsm["spatial"][:, 0] > 200).astype(str)
    >>> fig = sf.pl.compare(sdata, keys=["kmeans"], truth="region")
    >>> [a.get_title()[:13] for a in fig.axes if a.get_title()]
    ['H&E', 'kmeans  ARI 0', 'region (truth']
    """
    from ..metrics import ari

    if isinstance(keys, str):
        keys = [keys]
    sp = _base.get_plot_spots(sdata, table_key=table_key, shapes_key=shapes_key, image_key=image_key,
                              library_id=library_id)
    keys = list(keys)
    if not keys:
        raise InputError("keys is empty; give the obs columns holding the domains to show.")
    values = [_base.get_values(sp, k).astype("category") for k in keys]
    t_values = _base.get_values(sp, truth).astype("category") if truth is not None else None
    head = list(titles) if titles is not None else list(keys)
    if len(head) != len(keys):
        raise InputError(f"titles has {len(head)} entries for {len(keys)} keys.")
    if t_values is not None:
        usable = ~t_values.astype(str).str.strip().str.lower().isin([u.lower() for u in K.UNDETERMINED]) & t_values.notna()
        for i, v in enumerate(values):
            ok = usable.to_numpy() & v.notna().to_numpy()
            score = ari(t_values[ok], v[ok]) if ok.any() else float("nan")
            head[i] = f"{head[i]}{chr(10) if len(head[i]) > 24 else '  '}ARI {score:.3f}"  # long titles: 2 lines
    with_image = image and image_panel and sp.has_image
    n = len(keys) + int(with_image) + int(t_values is not None)
    box = _base.crop_box(sp, crop)
    shown = ([None] if with_image else []) + values + ([t_values] if t_values is not None else [])
    p = _base.panels(n, ax=ax, ncols=ncols or n, panel_size=panel_size, aspect=_base.box_aspect(box),
                     extra_width=[_base.legend_width(v, legend=legend) for v in shown])
    axes = list(p.axes)
    common = dict(image=image, level=level, box=box, img_alpha=img_alpha, dpi=dpi)
    if with_image:
        _base.spatial_panel(axes.pop(0), sp, None, title="H&E", show_spots=False, with_scalebar=False, **common)
    if scalebar:
        _base.scalebar(p.axes[0], sp)
    t_colors = None
    if t_values is not None:
        cats = list(t_values.cat.categories)
        t_colors = _base.category_colors(cats, palette=palette, uns_colors=sp.table.uns.get(f"{truth}_colors"))
    spot_kw = dict(na_color=na_color, size=size, alpha=alpha, legend=legend, kind="categorical")
    for a, k, v, t in zip(axes, keys, values, head):
        pal = palette
        if palette is None and match_colors and t_colors is not None:
            pal = _base.matched_colors(v, t_values, t_colors)
        _base.spatial_panel(a, sp, v, title=t, with_scalebar=False, palette=pal,
                            uns_colors=sp.table.uns.get(f"{k}_colors"), **common, **spot_kw)
    if t_values is not None:
        _base.spatial_panel(axes[len(keys)], sp, t_values, title=f"{truth} (truth)", with_scalebar=False,
                            palette=t_colors, **common, **spot_kw)
    return _base.finish(p, save=save, dpi=dpi)


