"""``sf.pl.spacrd``: SpaCRD cancer score over the H&E image, its threshold contour, score histogram with the GMM."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from .. import _keys as K
from .. import _logging as log
from .._docs import inject_docs
from .._errors import KeyNotFoundError
from . import _base

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = ["spacrd"]

_METHOD = {"gmm_intersection": "GMM intersection", "gmm_midpoint": "GMM midpoint (no intersection)",
           "constant": "constant scores"}


def _threshold_contour(ax: Axes, centers: np.ndarray, scores: np.ndarray, threshold: float, color: str) -> bool:
    """Contour ``score = threshold`` interpolated over the Delaunay triangulation of the spot centres."""
    import matplotlib.tri as mtri

    if len(scores) < 3 or not (scores.min() < threshold < scores.max()):
        return False
    try:
        tri = mtri.Triangulation(centers[:, 0], centers[:, 1])
    except (RuntimeError, ValueError):  # collinear spots: no triangulation
        return False
    # drop long triangles that bridge gaps between separate pieces of tissue
    edges = np.hypot(*np.diff(centers[tri.triangles[:, [0, 1, 2, 0]]], axis=1).transpose(2, 0, 1))
    longest = edges.max(axis=1)
    tri.set_mask(longest > 2.5 * np.median(longest))
    ax.tricontour(tri, scores, levels=[threshold], colors=[color], linewidths=1.5, zorder=3)
    return True


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


@inject_docs
def spacrd(
    sdata: Any,
    key: str = "spacrd",
    *,
    truth: str | None = None,
    positive: Any = True,
    table_key: str = K.TABLE,
    shapes_key: str | None = None,
    image_key: str | None = None,
    library_id: str | None = None,
    image: bool = True,
    level: int | Literal["auto"] = "auto",
    crop: bool | tuple[float, float, float, float] = True,
    size: float = 1.0,
    alpha: float = 0.8,
    img_alpha: float = 1.0,
    cmap: str = "magma",
    contour: bool = True,
    contour_color: str = "#00e5ff",
    bins: int = 30,
    legend: bool = True,
    scalebar: bool = True,
    ncols: int | None = None,
    panel_size: float = 4.0,
    dpi: float | None = None,
    ax: Axes | Sequence[Axes] | None = None,
    save: str | os.PathLike | None = None,
) -> Figure | Axes | list[Axes]:
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
    %(pl_elements)s
    image, level, crop, size, alpha, img_alpha, cmap, legend, scalebar
        As in :func:`stfuse.pl.spots`.
    contour
        Draw the threshold contour on the score map.
    contour_color
        Colour of the contour and of the threshold line in the histogram.
    bins
        Histogram bins.
    %(pl_figure)s

    %(pl_returns)s

    Examples
    --------
    >>> import stfuse as sf
    >>> ref, new = sf.datasets.toy(n_spots=300, seed=0), sf.datasets.toy(n_spots=300, seed=1)
    >>> sf.tl.spacrd(new, ref, use_image=False, epochs=5, lr=1e-2, dim=32, hidden=(64,), heads=2)
    >>> fig = sf.pl.spacrd(new, truth="cancer")
    >>> [a.get_title().split(" ")[0] for a in fig.axes if a.get_title()]
    ['SpaCRD', 'cancer', 'scores']
    """
    from ..metrics import classification

    sp = _base.get_plot_spots(sdata, table_key=table_key, shapes_key=shapes_key, image_key=image_key,
                              library_id=library_id)
    obs = sp.table.obs
    score_key = K.score(key)
    info = sp.table.uns.get(key)
    if score_key not in obs.columns or key not in obs.columns or not isinstance(info, Mapping) or "threshold" not in info:
        raise KeyNotFoundError(
            f"No SpaCRD result under key {key!r} (needs obs[{score_key!r}], obs[{key!r}] and uns[{key!r}]): run "
            f"sf.tl.spacrd(sdata, reference, key_added={key!r}) first, or pass key=..."
        )
    scores = obs[score_key].to_numpy(dtype=np.float64)
    thr = info["threshold"]
    title = "SpaCRD score"
    t_values = t_bool = None
    if truth is not None:
        t_values = _base.get_values(sp, truth)
        values = list(positive) if isinstance(positive, list | tuple | set) else [positive]
        ok = t_values.notna().to_numpy()
        t_bool = t_values.isin(values).to_numpy()
        if ok.any() and 0 < t_bool[ok].sum() < ok.sum():
            m = classification(t_bool[ok], scores[ok], pred=(obs[key] == "cancer").to_numpy()[ok])
            title = f"SpaCRD score\nAUC {m['auc']:.3f}  AP {m['ap']:.3f}  F1 {m['f1']:.3f}"
        t_bool = np.where(ok, t_bool, False)
        t_hist = t_bool[ok]
    n = 3 if truth is not None else 2
    box = _base.crop_box(sp, crop)
    widths = [_base.legend_width(scores, legend=legend)]
    if t_values is not None:
        widths.append(_base.legend_width(t_values.astype("category"), legend=legend))
    widths.append(0.0)
    p = _base.panels(n, ax=ax, ncols=ncols or n, panel_size=panel_size, aspect=_base.box_aspect(box),
                     extra_width=widths)
    a = p.axes[0]
    _base.spatial_panel(a, sp, scores, title=title, image=image, level=level, box=box, img_alpha=img_alpha,
                        with_scalebar=scalebar, dpi=dpi, kind="continuous", cmap=cmap, vmin=0.0, vmax=1.0, size=size,
                        alpha=alpha, legend=legend, colorbar=legend, legend_title="score")
    if contour and not _threshold_contour(a, sp.centers, scores, float(thr["threshold"]), contour_color):
        log.info("sf.pl.spacrd: no threshold contour (all spots on one side of the threshold, or too few spots)")
    if t_values is not None:
        _base.spatial_panel(p.axes[1], sp, t_values, title=f"{truth} (truth)", image=image, level=level, box=box,
                            img_alpha=img_alpha, with_scalebar=scalebar, dpi=dpi, size=size, alpha=alpha,
                            legend=legend, uns_colors=sp.table.uns.get(f"{truth}_colors"))
    _histogram(p.axes[-1], scores if truth is None else scores[t_values.notna().to_numpy()], thr, bins=int(bins),
               truth=None if truth is None else t_hist, color=contour_color)
    return _base.finish(p, save=save, dpi=dpi)
