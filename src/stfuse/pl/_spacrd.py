"""``sf.pl.spacrd``: SpaCRD cancer score over the H&E image, its threshold contour, score histogram with the GMM."""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from .. import _keys as K
from .. import _logging as log
from .._errors import KeyNotFoundError
from .._results import read
from . import _base
from ._figure import Panel, PlotOptions, draw, plot_function

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = ["spacrd"]

_METHOD = {"gmm_intersection": "GMM intersection", "gmm_midpoint": "GMM midpoint (no intersection)",
           "constant": "constant scores"}


def _contour(ax: Axes, *, centers: np.ndarray, scores: np.ndarray, threshold: float, color: str) -> None:
    """Contour ``score = threshold`` interpolated over the Delaunay triangulation of the spot centres."""
    import matplotlib.tri as mtri

    tri = None
    if len(scores) >= 3 and scores.min() < threshold < scores.max():
        try:
            tri = mtri.Triangulation(centers[:, 0], centers[:, 1])
        except (RuntimeError, ValueError):  # collinear spots: no triangulation
            pass
    if tri is None:
        log.info("sf.pl.spacrd: no threshold contour (all spots on one side of the threshold, or too few spots)")
        return
    # drop long triangles that bridge gaps between separate pieces of tissue
    edges = np.hypot(*np.diff(centers[tri.triangles[:, [0, 1, 2, 0]]], axis=1).transpose(2, 0, 1))
    longest = edges.max(axis=1)
    tri.set_mask(longest > 2.5 * np.median(longest))
    ax.tricontour(tri, scores, levels=[threshold], colors=[color], linewidths=1.5, zorder=3)


def _histogram(ax: Axes, scores: np.ndarray, thr: Mapping[str, Any], *, bins: int, truth: np.ndarray | None,
               color: str) -> None:
    edges = np.linspace(0.0, 1.0, bins + 1) if scores.min() >= 0 and scores.max() <= 1 else bins
    if truth is None:
        ax.hist(scores, bins=edges, density=True, color="0.75", label="spots")
    else:
        ax.hist([scores[~truth], scores[truth]], bins=edges, density=True, stacked=True,
                color=["#4c72b0", "#dd8452"], label=["truth: normal", "truth: cancer"])
    m, v, w = (np.asarray(thr.get(k, []), float) for k in ("means", "variances", "weights"))
    if m.size == 2 and (v > 0).all():
        x = np.linspace(min(0.0, scores.min()), max(1.0, scores.max()), 400)
        dens = w[:, None] * np.exp(-((x[None] - m[:, None]) ** 2) / (2 * v[:, None])) / np.sqrt(2 * np.pi * v[:, None])
        for d, ls in zip(dens, ("--", ":")):
            ax.plot(x, d, color="black", lw=1, ls=ls)
        ax.plot(x, dens.sum(axis=0), color="black", lw=1.2, label="2-component GMM")
    ax.axvline(float(thr["threshold"]), color=color, lw=1.5, label=f"threshold {float(thr['threshold']):.3g}")
    ax.set_xlabel("SpaCRD score")
    ax.set_ylabel("density")
    ax.legend(frameon=False, fontsize="small")
    ax.set_title(f"scores ({_METHOD.get(str(thr.get('method')), thr.get('method'))})")


@plot_function(alpha=0.8, cmap="magma", vmin=0.0, vmax=1.0)
def spacrd(
    sdata: Any,
    key: str = "spacrd",
    *,
    truth: str | None = None,
    positive: Any = True,
    contour: bool = True,
    contour_color: str = "#00e5ff",
    bins: int = 30,
    opts: PlotOptions,
) -> Figure | Axes | list[Axes] | None:
    """Plot a SpaCRD result: score map over the H&E image with the threshold contour, and the score histogram.

    Panels: the cancer score of every spot (0..1) over the image, with the contour where the score
    crosses the threshold (interpolated between spot centres); the truth when ``truth`` is given
    (AUC / AP / F1 of the calls in the score panel's title); the histogram of the scores with the
    two fitted Gaussian components, their sum and the threshold.

    Parameters
    ----------
    %(sdata)s
    key
        ``key_added`` of :func:`stfuse.tl.spacrd`.
    truth
        ``obs`` column with a reference annotation to compare with (e.g. ``"cancer"``). Spots where it
        is missing are left out of the metrics.
    positive
        The value(s) of ``truth`` that mean cancer.
    contour
        Draw the threshold contour on the score map.
    contour_color
        Colour of the contour and of the threshold line in the histogram.
    bins
        Histogram bins.

    Examples
    --------
    >>> import stfuse as sf
    >>> ref, new = sf.datasets.toy(n_spots=300, seed=0), sf.datasets.toy(n_spots=300, seed=1)
    >>> sf.tl.spacrd(new, ref, use_image=False, epochs=5, lr=1e-2, dim=32, hidden=(64,), heads=2)
    >>> fig = sf.pl.spacrd(new, truth="cancer", show=False)
    >>> [a.get_title().split(" ")[0] for a in fig.axes if a.get_title()]
    ['SpaCRD', 'cancer', 'scores']
    """
    from ..metrics import classification

    res = read(sdata, key, table_key=opts.table_key, tool="spacrd")
    obs = res.table.obs
    if K.score(key) not in obs.columns or key not in obs.columns or not isinstance(res.uns.get("threshold"), Mapping):
        raise KeyNotFoundError(
            f"No SpaCRD result under key {key!r} (needs obs[{K.score(key)!r}], obs[{key!r}] and uns[{key!r}]"
            f"['threshold']): run sf.tl.spacrd(sdata, reference, key_added={key!r}) first, or pass key=..."
        )
    sp = opts.get_spots(sdata)
    scores = obs[K.score(key)].to_numpy(dtype=np.float64)
    thr = res.uns["threshold"]
    title = "SpaCRD score"
    panels = []
    shown, t_hist = scores, None
    if truth is not None:
        t_values = _base.get_values(sp, truth)
        ok = t_values.notna().to_numpy()
        t_bool = t_values.isin(list(positive) if isinstance(positive, list | tuple | set) else [positive]).to_numpy()
        if ok.any() and 0 < t_bool[ok].sum() < ok.sum():
            m = classification(t_bool[ok], scores[ok], pred=(obs[key] == "cancer").to_numpy()[ok])
            title = f"SpaCRD score\nAUC {m['auc']:.3f}  AP {m['ap']:.3f}  F1 {m['f1']:.3f}"
        shown, t_hist = scores[ok], t_bool[ok]
        panels.append(Panel(t_values, f"{truth} (truth)", key=truth))
    then = None
    if contour:
        then = functools.partial(_contour, centers=sp.centers, scores=scores, threshold=float(thr["threshold"]),
                                 color=contour_color)
    panels.insert(0, Panel(scores, title, kind="continuous", style={"legend_title": "score"}, then=then))
    panels.append(Panel(plot=functools.partial(_histogram, scores=shown, thr=thr, bins=int(bins), truth=t_hist,
                                               color=contour_color)))
    return draw(sp, panels, opts)

