"""``sf.pl.histospace``: measured vs predicted expression over the H&E image, and the per-gene r."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from .. import _keys as K
from .._errors import InputError, KeyNotFoundError
from .._results import Result, read
from .._spots import Spots, is_spatialdata
from ._figure import Panel, PlotOptions, draw, plot_function

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = ["histospace"]


def _measured_key(data: Any, key: str, table_key: str | None) -> str:
    """The table of measured expression: ``table_key``, else the only table besides the predictions ``key``."""
    if table_key is not None or not is_spatialdata(data):
        return table_key or K.TABLE
    others = [t for t in data.tables if t != key]
    return others[0] if len(others) == 1 else K.TABLE


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


def _predictions(sdata: Any, key: str, opts: PlotOptions) -> tuple[Result, Spots, pd.DataFrame]:
    """What :func:`stfuse.tl.histospace` wrote under ``key``: its result, the spots predicted, the predictions."""
    if is_spatialdata(sdata):
        if key not in sdata.tables:
            raise KeyNotFoundError(
                f"No table {key!r} of predictions (tables: {list(sdata.tables)}); run sf.tl.histospace(sdata, ...) "
                "first, or pass key=<its key_added>."
            )
        res = read(sdata, key, table_key=key, tool="histospace")
        X, genes = res.table.X, res.table.var_names
        spots = opts.get_spots(sdata, table_key=key)
    else:
        res = read(sdata, key, tool="histospace")
        if K.pred(key) not in res.table.obsm:
            raise KeyNotFoundError(f"No predictions obsm[{K.pred(key)!r}]; run sf.tl.histospace first.")
        X, genes = res.table.obsm[K.pred(key)], res.uns["genes"]
        spots = opts.get_spots(sdata)
    return res, spots, pd.DataFrame(np.asarray(X), index=res.table.obs_names, columns=list(genes))


@plot_function(exclude=("palette",), vmin="p1", vmax="p99")
def histospace(
    sdata: Any,
    genes: str | Sequence[str] | None = None,
    *,
    key: str = "histospace",
    n_genes: int = 2,
    measured: bool = True,
    hist: bool = True,
    opts: PlotOptions,
) -> Figure | Axes | list[Axes] | None:
    """Measured and HistoSPACE-predicted expression side by side over the H&E image, and the r of every gene.

    One row per gene: the measured expression (normalised like the training targets: library size
    1e4, log1p) and the prediction of :func:`stfuse.tl.histospace`, each with its own colour scale
    (predictions are shrunk towards the mean; what matters is the pattern), the per-gene Pearson r
    in the title. The last panel is the distribution of r over all predicted genes
    (:func:`stfuse.metrics.gene_correlation`) with its mean and median, and the shown genes marked.
    Sections without measured expression (e.g. tissue tiles) show the predictions alone.
    ``table_key`` names the table of measured expression.

    Parameters
    ----------
    %(sdata)s
    genes
        Gene(s) to map. Default: the ``n_genes`` best-predicted genes (measured sections), else the
        first predicted genes.
    key
        ``key_added`` of :func:`stfuse.tl.histospace` (the table of predictions).
    n_genes
        Number of genes shown when ``genes`` is not given.
    measured
        Show the measured maps (when the section has measurements).
    hist
        Add the panel with the distribution of per-gene r (when the section has measurements).

    Examples
    --------
    >>> import stfuse as sf
    >>> ref, new = sf.datasets.toy(n_spots=200, seed=0), sf.datasets.toy(n_spots=200, seed=1)
    >>> sf.tl.histospace(new, ref, genes=["G030", "G031"], epochs=1)  # doctest: +SKIP
    >>> fig = sf.pl.histospace(new, genes=["G030"], show=False)  # doctest: +SKIP
    >>> [a.get_title()[:13] for a in fig.axes if a.get_title()]  # doctest: +SKIP
    ['G030 measured', 'G030 predicted', 'per-gene r (2']
    """
    from ..metrics import gene_correlation

    _, pred_spots, pred = _predictions(sdata, key, opts)
    all_genes = pred.columns.tolist()
    meas_key = _measured_key(sdata, key, opts.table_key)
    meas_all = _measured(sdata, key, meas_key, all_genes) if (measured or hist) else None
    if meas_all is not None and not meas_all.index.isin(pred.index).any():
        meas_all = None  # the predictions are for other spots (tiles): nothing to compare
    r = gene_correlation(sdata, key=key, table_key=meas_key)["r"] if meas_all is not None else None
    if genes is None:
        genes = (r.dropna().index.tolist() if r is not None else all_genes)[: max(1, int(n_genes))]
    genes = [genes] if isinstance(genes, str) else list(genes)
    missing = [g for g in genes if g not in pred.columns]
    if missing:
        raise KeyNotFoundError(f"{len(missing)} genes were not predicted (first: {missing[:5]}); "
                               f"predicted genes include {all_genes[:5]}.")
    if not genes:
        raise InputError("genes is empty; give at least one predicted gene.")

    meas_spots = None
    if meas_all is not None and measured:
        meas_spots = opts.get_spots(sdata, table_key=meas_key) if is_spatialdata(sdata) else pred_spots
    panels = []
    for g in genes:
        if meas_spots is not None:
            panels.append(Panel(meas_all[g].reindex(meas_spots.table.obs_names), f"{g} measured", spots=meas_spots,
                                scalebar=False))
        title = f"{g} predicted" + (f" (r = {r[g]:.2f})" if r is not None and np.isfinite(r[g]) else "")
        panels.append(Panel(pred[g].reindex(pred_spots.table.obs_names), title, scalebar=False))
    panels[0].scalebar = True  # one scalebar, on the first panel
    if hist and r is not None:
        panels.append(Panel(plot=functools.partial(_hist, r=r, genes=genes)))
    return draw(pred_spots, panels, opts, ncols=2 if meas_spots is not None else 1)


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
