"""``sf.pl.senca`` (H&E | SENCA domains | truth) and ``sf.pl.loss`` (per-epoch loss terms of any tool)."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from .. import _keys as K
from .._docs import inject_docs
from .._errors import InputError, KeyNotFoundError
from . import _base
from ._spatial import compare

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = ["loss", "senca"]


@inject_docs
def senca(
    sdata: Any,
    key: str = "senca",
    *,
    truth: str | None = None,
    image: bool = True,
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
    """Plot SENCA-st regions over the H&E image, next to the image alone: panels ``H&E | SENCA | truth``.

    The SENCA panel's title gives the number of regions and whether the image was used (``gene-only``
    for ``image=False`` runs); with ``truth``, also the ARI (:func:`stfuse.metrics.ari`, spots without a
    truth or "undetermined" left out). A section without an image is drawn as spots alone, without
    the H&E panel.

    Parameters
    ----------
    %(sdata)s
    key
        ``key_added`` of :func:`stfuse.tl.senca`.
    truth
        ``obs`` column with reference regions (e.g. ``"label"``, ``"cluster"``), shown last.
    image
        Start with a panel of the H&E image alone (when the section has one).
    match_colors
        Colour each region like the truth class it overlaps most.
    %(pl_elements)s
    level, crop, size, alpha, img_alpha, palette, na_color, legend, scalebar
        As in :func:`stfuse.pl.spots`.
    %(pl_figure)s

    %(pl_returns)s

    Examples
    --------
    >>> import stfuse as sf
    >>> sdata = sf.datasets.toy(n_spots=200)
    >>> sf.tl.senca(sdata, image=False, n_clusters=4, epochs=2, hidden=16, latent=8)
    >>> fig = sf.pl.senca(sdata, truth="region")
    >>> [a.get_title().split(" ")[0] for a in fig.axes if a.get_title()]
    ['H&E', 'SENCA', 'region']
    """
    spots = _base.get_plot_spots(sdata, table_key=table_key, shapes_key=shapes_key, image_key=image_key,
                                 library_id=library_id)
    if key not in spots.table.obs.columns:
        raise KeyNotFoundError(
            f"No obs column {key!r}: run sf.tl.senca(sdata, key_added={key!r}) first, or pass key=... "
            f"(obs columns: {list(spots.table.obs.columns)})."
        )
    info = spots.table.uns.get(key, {})
    head = "SENCA"
    if isinstance(info, Mapping) and "params" in info:
        used = bool(info["params"].get("image", True))
        head = f"SENCA ({spots.table.obs[key].nunique()} regions{'' if used else ', gene-only'})"
    return compare(
        sdata, [key], truth=truth, titles=[head], image=True, image_panel=image, match_colors=match_colors,
        table_key=table_key, shapes_key=shapes_key, image_key=image_key, library_id=library_id, level=level,
        crop=crop, size=size, alpha=alpha, img_alpha=img_alpha, palette=palette, na_color=na_color, legend=legend,
        scalebar=scalebar, ncols=ncols, panel_size=panel_size, dpi=dpi, ax=ax, save=save,
    )


def _uns_table(sdata: Any, table_key: str) -> Any:
    """The AnnData whose ``uns`` holds tool results: the table of a SpatialData, or the AnnData itself."""
    tables = getattr(sdata, "tables", None)
    if tables is None:
        if not hasattr(sdata, "uns"):
            raise InputError(f"Expected a SpatialData or AnnData object, got {type(sdata).__name__}.")
        return sdata
    if table_key not in tables:
        raise KeyNotFoundError(f"No table {table_key!r} in the SpatialData; tables: {list(tables)}. Pass table_key=...")
    return tables[table_key]


def loss(
    sdata: Any,
    key: str,
    *,
    terms: Sequence[str] | None = None,
    loss_key: str = K.HISTORY,
    table_key: str = K.TABLE,
    logy: bool = False,
    ncols: int = 4,
    panel_size: float = 2.5,
    ax: Axes | Sequence[Axes] | None = None,
    save: str | os.PathLike | None = None,
) -> Figure | Axes | list[Axes]:
    """Plot the per-epoch loss terms a tool stored in ``uns[key][loss_key]``, one panel per term.

    Generic: any tool that stores a mapping ``{term: per-epoch values}`` under ``uns[key]["history"]``
    (as :func:`stfuse.tl.senca` does) can be plotted.

    Parameters
    ----------
    sdata
        SpatialData or AnnData holding the results.
    key
        ``key_added`` of the tool (``uns`` key), e.g. ``"senca"``.
    terms
        Terms to draw (default all, total ``"loss"`` first).
    loss_key
        Key of the loss mapping inside ``uns[key]``.
    table_key
        Table of a SpatialData.
    logy
        Logarithmic y axis (for positive terms).
    ncols, panel_size
        Panels per row and panel height (inches).
    ax
        Existing axes, one per term.
    save
        Write the figure to this path.

    Returns
    -------
    The :class:`~matplotlib.figure.Figure`, or the axes passed as ``ax=``.

    Examples
    --------
    >>> import stfuse as sf
    >>> sdata = sf.datasets.toy(n_spots=200, image=False)
    >>> sf.tl.senca(sdata, image=False, n_clusters=4, epochs=3, hidden=16, latent=8)
    >>> fig = sf.pl.loss(sdata, "senca")
    >>> [a.get_title() for a in fig.axes]
    ['loss', 'nt_xent_windowed', 'nt_xent_pooled', 'mse']
    """
    table = _uns_table(sdata, table_key)
    if key not in table.uns:
        raise KeyNotFoundError(f"No uns[{key!r}]: run the tool with key_added={key!r} first (uns keys: {list(table.uns)}).")
    info = table.uns[key]
    if not isinstance(info, Mapping) or loss_key not in info or not isinstance(info[loss_key], Mapping):
        raise KeyNotFoundError(
            f"uns[{key!r}] holds no per-epoch losses under {loss_key!r}; this tool did not store a training "
            "history (pass loss_key=... if it uses another key)."
        )
    hist = {str(k): np.asarray(v, dtype=float).ravel() for k, v in info[loss_key].items()}
    if not hist:
        raise InputError(f"uns[{key!r}][{loss_key!r}] is empty.")
    names = list(terms) if terms is not None else sorted(hist, key=lambda t: t != "loss")
    missing = [t for t in names if t not in hist]
    if missing:
        raise KeyNotFoundError(f"No loss term(s) {missing} in uns[{key!r}][{loss_key!r}]; terms: {list(hist)}.")
    p = _base.panels(len(names), ax=ax, ncols=ncols, panel_size=panel_size, aspect=1.3)
    for a, name in zip(p.axes, names):
        y = hist[name]
        a.plot(np.arange(1, len(y) + 1), y, marker="o" if len(y) <= 30 else None, ms=3)
        a.set_title(name)
        a.set_xlabel("epoch")
        if logy and (y > 0).all():
            a.set_yscale("log")
    return _base.finish(p, save=save)
