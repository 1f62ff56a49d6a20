"""``sf.pl.histospace``: measured vs predicted expression over the H&E image, and the per-gene r."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pandas as pd

from .. import _keys as K
from .._docs import inject_docs
from .._errors import InputError, KeyNotFoundError
from .._spots import is_spatialdata
from . import _base

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = ["histospace"]


def _measured(data: Any, key: str, table_key: str, genes: list[str]) -> pd.DataFrame | None:
    """Measured expression of ``genes`` as :func:`stfuse.tl.histospace` wrote it beside the predictions.

    It is normalised like the training targets by the tool (pl never normalises); ``None`` when the
    predictions were written without measurements (e.g. tissue tiles) or ``table_key`` is absent.
    """
    if is_spatialdata(data):
        if table_key not in data.tables or K.MEASURED not in data.tables[key].layers:
            return None
        pred = data.tables[key]
        return pd.DataFrame(np.asarray(pred.layers[K.MEASURED]), index=pred.obs_names, columns=pred.var_names)[genes]
    if K.measured(key) not in data.obsm:
        return None
    return pd.DataFrame(np.asarray(data.obsm[K.measured(key)]), index=data.obs_names, columns=genes)


@inject_docs
def histospace(
    sdata: Any,
    genes: str | Sequence[str] | None = None,
    *,
    key: str = "histospace",
    table_key: str = K.TABLE,
    n_genes: int = 2,
    measured: bool = True,
    hist: bool = True,
    image: bool = True,
    level: int | Literal["auto"] = "auto",
    crop: bool | tuple[float, float, float, float] = True,
    size: float = 1.0,
    alpha: float = 1.0,
    img_alpha: float = 1.0,
    cmap: str = "viridis",
    vmin: float | str | None = "p1",
    vmax: float | str | None = "p99",
    legend: bool = True,
    scalebar: bool = True,
    ncols: int | None = None,
    panel_size: float = 4.0,
    dpi: float | None = None,
    ax: Axes | Sequence[Axes] | None = None,
    save: str | os.PathLike | None = None,
) -> Figure | Axes | list[Axes]:
    """Measured and HistoSPACE-predicted expression side by side over the H&E image, and the r of every gene.

    One row per gene: the measured expression (normalised like the training targets: library size
    1e4, log1p) and the prediction of :func:`stfuse.tl.histospace`, each with its own colour scale
    (predictions are shrunk towards the mean; what matters is the pattern), the per-gene Pearson r
    in the title. The last panel is the distribution of r over all predicted genes
    (:func:`stfuse.metrics.gene_correlation`) with its mean and median, and the shown genes marked.
    Sections without measured expression (e.g. tissue tiles) show the predictions alone.

    Parameters
    ----------
    %(sdata)s
    genes
        Gene(s) to map. Default: the ``n_genes`` best-predicted genes (measured sections), else the
        first predicted genes.
    key
        ``key_added`` of :func:`stfuse.tl.histospace` (the table of predictions).
    table_key
        Table of measured expression.
    n_genes
        Number of genes shown when ``genes`` is not given.
    measured
        Show the measured maps (when the section has measurements).
    hist
        Add the panel with the distribution of per-gene r (when the section has measurements).
    %(pl_spatial)s
    %(pl_figure)s

    %(pl_returns)s

    Examples
    --------
    >>> import stfuse as sf
    >>> ref, new = sf.datasets.toy(n_spots=200, seed=0), sf.datasets.toy(n_spots=200, seed=1)
    >>> sf.tl.histospace(new, ref, genes=["G030", "G031"], epochs=1)  # doctest: +SKIP
    >>> fig = sf.pl.histospace(new, genes=["G030"])  # doctest: +SKIP
    >>> [a.get_title()[:13] for a in fig.axes if a.get_title()]  # doctest: +SKIP
    ['G030 measured', 'G030 predicted', 'per-gene r (2']
    """
    from ..metrics import gene_correlation

    if is_spatialdata(sdata):
        if key not in sdata.tables:
            raise KeyNotFoundError(
                f"No table {key!r} of predictions (tables: {list(sdata.tables)}); run sf.tl.histospace(sdata, ...) "
                "first, or pass key=<its key_added>."
            )
        pred_spots = _base.get_plot_spots(sdata, table_key=key)
        pred_table = pred_spots.table
        info = dict(pred_table.uns.get(key, {}))
        pred = pd.DataFrame(np.asarray(pred_table.X), index=pred_table.obs_names, columns=pred_table.var_names)
    else:
        if f"X_{key}_pred" not in sdata.obsm or key not in sdata.uns:
            raise KeyNotFoundError(f"No predictions obsm['X_{key}_pred'] / uns[{key!r}]; run sf.tl.histospace first.")
        pred_spots = _base.get_plot_spots(sdata)
        info = dict(sdata.uns[key])
        pred = pd.DataFrame(np.asarray(sdata.obsm[f"X_{key}_pred"]), index=sdata.obs_names, columns=info["genes"])
    all_genes = pred.columns.tolist()
    meas_all = _measured(sdata, key, table_key, all_genes) if (measured or hist) else None
    if meas_all is not None and not meas_all.index.isin(pred.index).any():
        meas_all = None  # the predictions are for other spots (tiles): nothing to compare
    r = None
    if meas_all is not None:
        r = gene_correlation(sdata, key=key, table_key=table_key)["r"]
    if genes is None:
        order = r.dropna().index.tolist() if r is not None else all_genes
        genes = order[: max(1, int(n_genes))]
    genes = [genes] if isinstance(genes, str) else list(genes)
    missing = [g for g in genes if g not in pred.columns]
    if missing:
        raise KeyNotFoundError(f"{len(missing)} genes were not predicted (first: {missing[:5]}); "
                               f"predicted genes include {all_genes[:5]}.")
    if not genes:
        raise InputError("genes is empty; give at least one predicted gene.")

    meas_spots = None
    if meas_all is not None and measured:
        meas_spots = _base.get_plot_spots(sdata, table_key=table_key) if is_spatialdata(sdata) else pred_spots
    show_hist = hist and r is not None
    panels_spec: list[tuple[str, Any]] = []
    for g in genes:
        if meas_spots is not None:
            panels_spec.append(("measured", g))
        panels_spec.append(("predicted", g))
    if show_hist:
        panels_spec.append(("hist", None))
    per_row = 2 if meas_spots is not None else 1
    n = len(panels_spec)
    box = _base.crop_box(pred_spots, crop)
    extra = [_base.legend_width(np.zeros(1), legend=legend) if kind != "hist" else 0.0 for kind, _ in panels_spec]
    p = _base.panels(n, ax=ax, ncols=ncols or per_row, panel_size=panel_size, aspect=_base.box_aspect(box),
                     extra_width=extra)
    common = dict(image=image, level=level, box=box, img_alpha=img_alpha, dpi=dpi, with_scalebar=False, cmap=cmap,
                  vmin=vmin, vmax=vmax, size=size, alpha=alpha, colorbar=legend)
    for i, (a, (kind, g)) in enumerate(zip(p.axes, panels_spec)):
        if kind == "measured":
            vals = meas_all[g].reindex(meas_spots.table.obs_names)
            _base.spatial_panel(a, meas_spots, vals, title=f"{g} measured", **common)
        elif kind == "predicted":
            vals = pred[g].reindex(pred_spots.table.obs_names)
            title = f"{g} predicted" + (f" (r = {r[g]:.2f})" if r is not None and np.isfinite(r[g]) else "")
            _base.spatial_panel(a, pred_spots, vals, title=title, **common)
        else:
            _hist(a, r, genes)
        if scalebar and i == 0:
            _base.scalebar(a, pred_spots)
    return _base.finish(p, save=save, dpi=dpi)


def _hist(ax: Axes, r: pd.Series, genes: list[str]) -> None:
    vals = r.dropna().to_numpy()
    ax.hist(vals, bins=min(40, max(10, len(vals) // 10)), color="0.6", edgecolor="white")
    if len(vals):
        mean, med = float(np.mean(vals)), float(np.median(vals))
        ax.axvline(mean, color="C0", lw=1.5, label=f"mean {mean:.3f}")
        ax.axvline(med, color="C1", lw=1.5, ls="--", label=f"median {med:.3f}")
    for g in genes:
        if g in r.index and np.isfinite(r[g]):
            ax.axvline(float(r[g]), color="C3", lw=1, alpha=0.8)
            ax.annotate(g, (float(r[g]), ax.get_ylim()[1] * 0.95), rotation=90, va="top", ha="right",
                        fontsize="small", color="C3")
    ax.axvline(0, color="black", lw=0.6)
    ax.set_xlabel("Pearson r across spots")
    ax.set_ylabel("genes")
    n_nan = int(r.isna().sum())
    ax.set_title(f"per-gene r ({len(vals)} genes" + (f", {n_nan} constant" if n_nan else "") + ")")
    ax.legend(frameon=False, fontsize="small", loc="upper left")
