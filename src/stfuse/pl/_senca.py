"""``sf.pl.senca`` (H&E | SENCA domains | truth) and ``sf.pl.loss`` (per-epoch loss terms of any tool)."""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from .. import _keys as K
from .._errors import InputError, KeyNotFoundError
from .._results import read
from ._figure import SPATIAL, Panel, PlotOptions, draw, plot_function
from ._spatial import DOMAIN_EXCLUDE, domain_panels, domain_result

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = ["loss", "senca"]


@plot_function(exclude=(*DOMAIN_EXCLUDE, "image"))
def senca(
    sdata: Any,
    key: str = "senca",
    *,
    truth: str | None = None,
    image: bool = True,
    match_colors: bool = True,
    opts: PlotOptions,
) -> Figure | Axes | list[Axes] | None:
    """Plot SENCA-st regions over the H&E image, next to the image alone: panels ``H&E | SENCA | truth``.

    The SENCA panel's title gives the number of regions and whether the image was used (``gene-only``
    for ``image=False`` runs); with ``truth``, also the ARI (:func:`stfuse.metrics.ari`, spots without a
    truth or "undetermined" left out). A section without an image is drawn as spots alone, without
    the H&E panel. Colours as in :func:`stfuse.pl.compare`.

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

    Examples
    --------
    >>> import stfuse as sf
    >>> sdata = sf.datasets.toy(n_spots=200)
    >>> sf.tl.senca(sdata, image=False, n_clusters=4, steps=2, hidden=16, latent=8)
    >>> fig = sf.pl.senca(sdata, truth="region", show=False)
    >>> [a.get_title().split(" ")[0] for a in fig.axes if a.get_title()]
    ['H&E', 'SENCA', 'region']
    """
    res = domain_result(sdata, key, "senca", opts)
    head = "SENCA"
    if "params" in res.uns:
        used = bool(res.params.get("image", True))
        head = f"SENCA ({res.obs().nunique()} regions{'' if used else ', gene-only'})"
    return domain_panels(sdata, [key], truth=truth, titles=[head], image_panel=image, match_colors=match_colors,
                         opts=opts)


def _curve(ax: Axes, y: np.ndarray, *, name: str, logy: bool, x: np.ndarray | None = None) -> None:
    ax.plot(np.arange(1, len(y) + 1) if x is None else x[: len(y)], y, marker="o" if len(y) <= 30 else None, ms=3)
    ax.set_title(name)
    ax.set_xlabel("epoch" if x is None else "optimiser step")
    if logy and (y > 0).all():
        ax.set_yscale("log")


@plot_function(exclude=SPATIAL, ncols=4, panel_size=2.5)
def loss(
    sdata: Any,
    key: str,
    *,
    terms: Sequence[str] | None = None,
    loss_key: str = K.HISTORY,
    logy: bool = False,
    opts: PlotOptions,
) -> Figure | Axes | list[Axes] | None:
    """Plot the per-epoch loss terms a tool stored in ``uns[key][loss_key]``, one panel per term (x: optimiser steps when stored).

    Generic: any tool that stores a mapping ``{term: per-epoch values}`` under ``uns[key]["history"]``
    (every tool that trains a model) can be plotted.

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
    logy
        Logarithmic y axis (for positive terms).

    Examples
    --------
    >>> import stfuse as sf
    >>> sdata = sf.datasets.toy(n_spots=200, image=False)
    >>> sf.tl.senca(sdata, image=False, n_clusters=4, steps=3, hidden=16, latent=8)
    >>> fig = sf.pl.loss(sdata, "senca", show=False)
    >>> [a.get_title() for a in fig.axes]
    ['loss', 'nt_xent_windowed', 'nt_xent_pooled', 'mse']
    """
    res = read(sdata, key, table_key=opts.table_key)
    raw = res.uns.get(loss_key)
    if not isinstance(raw, Mapping) or not raw:
        raise KeyNotFoundError(
            f"uns[{key!r}] holds no per-epoch losses under {loss_key!r}; this tool did not store a training "
            "history (pass loss_key=... if it uses another key)."
        )
    hist = _flat(raw)
    # counters, not loss terms: "steps" (optimiser steps after each pass) becomes the x axis
    x = hist.get("steps")
    names = list(terms) if terms is not None else sorted((t for t in hist if t.rsplit("/", 1)[-1] not in _COUNTERS),
                                                         key=lambda t: t != "loss")
    missing = [t for t in names if t not in hist]
    if missing:
        raise KeyNotFoundError(f"No loss term(s) {missing} in uns[{key!r}][{loss_key!r}]; terms: {list(hist)}.")
    if not names:
        raise InputError("terms is empty; give at least one loss term.")
    panels = [Panel(plot=functools.partial(_curve, y=hist[n], name=n, logy=logy,
                                           x=x if x is not None and len(x) == len(hist[n]) else None)) for n in names]
    return draw(None, panels, opts, aspect=1.3)


_COUNTERS = ("steps", "best_epoch")


def _flat(history: Mapping[str, Any], prefix: str = "") -> dict[str, np.ndarray]:
    """Per-epoch curves by term; a nested stage (e.g. SpaCRD's ``pretrain``) gives ``"stage/term"``."""
    out: dict[str, np.ndarray] = {}
    for k, v in history.items():
        if isinstance(v, Mapping):
            out.update(_flat(v, f"{prefix}{k}/"))
        else:
            out[f"{prefix}{k}"] = np.asarray(v, dtype=float).ravel()
    return out
