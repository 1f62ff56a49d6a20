"""``sf.pl.stmic``: H&E | stMIC domains | truth."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._figure import PlotOptions, plot_function
from ._spatial import DOMAIN_EXCLUDE, domain_panels, domain_result

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = ["stmic"]


@plot_function(exclude=(*DOMAIN_EXCLUDE, "image"))
def stmic(
    sdata: Any,
    key: str = "stmic",
    *,
    truth: str | None = None,
    image: bool = True,
    match_colors: bool = True,
    opts: PlotOptions,
) -> Figure | Axes | list[Axes] | None:
    """Plot stMIC domains over the H&E image: panels ``H&E | stMIC | truth``.

    The stMIC panel's title gives the number of clusters, the resolution used and, with ``truth``,
    the ARI (:func:`stfuse.metrics.ari`, spots without a truth or "undetermined" left out). Clusters are
    drawn in the colour of the truth class they overlap most (``match_colors``); colours as in
    :func:`stfuse.pl.compare`.

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

    Examples
    --------
    >>> import torch
    >>> import stfuse as sf
    >>> sdata = sf.datasets.toy(n_spots=200)
    >>> net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 5, stride=2), torch.nn.AdaptiveAvgPool2d(2), torch.nn.Flatten())
    >>> sf.tl.stmic(sdata, n_clusters=4, encoder=sf.im.Encoder.from_module(net, input_px=32))
    >>> fig = sf.pl.stmic(sdata, truth="region", show=False)
    >>> [a.get_title().split(" ")[0] for a in fig.axes if a.get_title()]
    ['H&E', 'stMIC', 'region']
    """
    res = domain_result(sdata, key, "stmic", opts)
    head = "stMIC"
    if "resolution" in res.uns:
        head = f"stMIC ({res.obs().nunique()} clusters, res. {float(res.uns['resolution']):.3g})"
    return domain_panels(sdata, [key], truth=truth, titles=[head], image_panel=image, match_colors=match_colors,
                         opts=opts)
