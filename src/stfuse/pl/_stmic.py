"""``sf.pl.stmic``: H&E | stMIC domains | truth."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal

from .. import _keys as K
from .._docs import inject_docs
from .._errors import KeyNotFoundError
from . import _base
from ._spatial import compare

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = ["stmic"]


@inject_docs
def stmic(
    sdata: Any,
    key: str = "stmic",
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
    """Plot stMIC domains over the H&E image: panels ``H&E | stMIC | truth``.

    The stMIC panel's title gives the number of clusters, the resolution used and, with ``truth``,
    the ARI (:func:`stfuse.metrics.ari`, spots without a truth or "undetermined" left out). Clusters are
    drawn in the colour of the truth class they overlap most (``match_colors``).

    Parameters
    ----------
    %(sdata)s
    key
        ``key_added`` of :func:`stfuse.tl.stmic`.
    truth
        ``obs`` column with reference domains (e.g. ``"label"``, ``"cluster"``), shown last.
    image
        Start with a panel of the H&E image alone.
    match_colors
        Colour each cluster like the truth class it overlaps most.
    %(pl_elements)s
    level, crop, size, alpha, img_alpha, palette, na_color, legend, scalebar
        As in :func:`stfuse.pl.spots`.
    %(pl_figure)s

    %(pl_returns)s

    Examples
    --------
    >>> import torch
    >>> import stfuse as sf
    >>> sdata = sf.datasets.toy(n_spots=200)
    >>> net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 5, stride=2), torch.nn.AdaptiveAvgPool2d(2), torch.nn.Flatten())
    >>> sf.tl.stmic(sdata, n_clusters=4, encoder=sf.im.Encoder.from_module(net, input_px=32))
    >>> fig = sf.pl.stmic(sdata, truth="region")
    >>> [a.get_title().split(" ")[0] for a in fig.axes if a.get_title()]
    ['H&E', 'stMIC', 'region']
    """
    spots = _base.get_plot_spots(sdata, table_key=table_key, shapes_key=shapes_key, image_key=image_key,
                                 library_id=library_id)
    if key not in spots.table.obs.columns:
        raise KeyNotFoundError(
            f"No obs column {key!r}: run sf.tl.stmic(sdata, key_added={key!r}) first, or pass key=... "
            f"(obs columns: {list(spots.table.obs.columns)})."
        )
    info = spots.table.uns.get(key, {})
    head = "stMIC"
    if isinstance(info, Mapping) and "resolution" in info:
        head = f"stMIC ({spots.table.obs[key].nunique()} clusters, res. {float(info['resolution']):.3g})"
    return compare(
        sdata, [key], truth=truth, titles=[head], image=True, image_panel=image, match_colors=match_colors,
        table_key=table_key, shapes_key=shapes_key, image_key=image_key, library_id=library_id, level=level,
        crop=crop, size=size, alpha=alpha, img_alpha=img_alpha, palette=palette, na_color=na_color, legend=legend,
        scalebar=scalebar, ncols=ncols, panel_size=panel_size, dpi=dpi, ax=ax, save=save,
    )
