"""Evaluation metrics: ``sf.metrics`` (thin wrappers over scikit-learn and numpy)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
import pandas as pd

from . import _keys as K
from ._errors import InputError, KeyNotFoundError

__all__ = ["ari", "classification", "gene_correlation", "pearson_per_gene"]


def _valid_truth(truth: Any, ignore: Iterable[str]) -> tuple[np.ndarray, np.ndarray]:
    t = pd.Series(np.asarray(truth, dtype=object))
    bad = t.isna() | t.astype(str).str.strip().str.lower().isin([str(i).lower() for i in ignore])
    return t.to_numpy(), ~bad.to_numpy()


def ari(truth: Any, pred: Any, *, ignore: Iterable[str] = K.UNDETERMINED) -> float:
    """Adjusted Rand index, ignoring spots whose truth is missing or "undetermined".

    Parameters
    ----------
    truth
        Ground-truth labels (NaN / "undetermined" / "unknown" are left out).
    pred
        Predicted labels, same length.
    ignore
        Truth values to leave out (case-insensitive).

    Returns
    -------
    The ARI over the remaining spots.

    Examples
    --------
    >>> import stfuse as sf
    >>> sf.metrics.ari(["a", "a", "b", "undetermined"], [1, 1, 2, 1])
    1.0
    """
    from sklearn.metrics import adjusted_rand_score

    t, ok = _valid_truth(truth, ignore)
    p = np.asarray(pred, dtype=object)
    if len(p) != len(t):
        raise InputError(f"truth has {len(t)} entries but pred has {len(p)}.")
    if not ok.any():
        raise InputError("No spot has a usable truth label (all missing or undetermined).")
    return float(adjusted_rand_score(t[ok].astype(str), p[ok].astype(str)))


def classification(y_true: Any, score: Any, pred: Any | None = None) -> dict[str, float]:
    """AUC, average precision and F1 of a binary detection.

    Parameters
    ----------
    y_true
        True classes (bool or 0/1).
    score
        Continuous score, higher = positive.
    pred
        Binary calls for F1 (e.g. stfuse's GMM threshold); without it F1 is left out — stfuse
        never picks a threshold from the true class balance.

    Returns
    -------
    ``{"auc", "ap", "f1"?}``.

    Examples
    --------
    >>> import stfuse as sf
    >>> sf.metrics.classification([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8], pred=[0, 0, 1, 1])
    {'auc': 0.75, 'ap': 0.8333333333333333, 'f1': 1.0}
    """
    from sklearn.metrics import average_precision_score, f1_score, roc_auc_score

    y = np.asarray(y_true).astype(bool)
    s = np.asarray(score, dtype=float)
    if len(np.unique(y)) < 2:
        raise InputError("y_true has a single class; AUC and AP need positives and negatives.")
    out = {"auc": float(roc_auc_score(y, s)), "ap": float(average_precision_score(y, s))}
    if pred is not None:
        out["f1"] = float(f1_score(y, np.asarray(pred).astype(bool)))
    return out


def pearson_per_gene(y_true: Any, y_pred: Any) -> np.ndarray:
    """Pearson r per gene (column) across spots; NaN where either side is constant.

    Parameters
    ----------
    y_true, y_pred
        ``(n_spots, n_genes)`` arrays (dense or sparse).

    Returns
    -------
    ``(n_genes,)`` array of r.

    Examples
    --------
    >>> import numpy as np
    >>> import stfuse as sf
    >>> sf.metrics.pearson_per_gene(np.array([[1.0, 0], [2, 0], [3, 0]]), np.array([[1.0, 1], [2, 2], [4, 3]])).round(3)
    array([0.982,   nan])
    """
    from scipy import sparse

    a = y_true.toarray() if sparse.issparse(y_true) else np.asarray(y_true, dtype=np.float64)
    b = y_pred.toarray() if sparse.issparse(y_pred) else np.asarray(y_pred, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 2:
        raise InputError(f"y_true {a.shape} and y_pred {b.shape} must be 2-D arrays of the same shape.")
    a = a - a.mean(axis=0)
    b = b - b.mean(axis=0)
    num = (a * b).sum(axis=0)
    den = np.sqrt((a * a).sum(axis=0) * (b * b).sum(axis=0))
    with np.errstate(invalid="ignore", divide="ignore"):
        r = num / den
    r[~(den > 1e-12 * (np.abs(num) + 1))] = np.nan
    return r


def _predictions(data: Any, key: str, table_key: str) -> tuple[Any, np.ndarray, np.ndarray | None, list[str], dict]:
    """Measured table, predictions, the measurements the tool normalised (or ``None``), genes, ``uns`` entry.

    Rows of the matrices are aligned to the returned table.
    """
    from ._spots import is_spatialdata

    if is_spatialdata(data):
        if key not in data.tables:
            raise KeyNotFoundError(
                f"No table {key!r} of predictions in the SpatialData (tables: {list(data.tables)}); run "
                f"sf.tl.histospace(sdata, ..., key_added={key!r}) first."
            )
        if table_key not in data.tables:
            raise KeyNotFoundError(
                f"No table {table_key!r} of measured expression (tables: {list(data.tables)}); gene_correlation "
                "compares predictions with measurements of the same spots."
            )
        pred, measured = data.tables[key], data.tables[table_key]
        common = measured.obs_names[measured.obs_names.isin(pred.obs_names)]
        if len(common) == 0:
            raise InputError(
                f"The spots of table {key!r} are not those of table {table_key!r} (no shared spot names): the "
                "predictions were made for other spots (e.g. tissue tiles), which have no measurement."
            )
        rows = pred[common]
        P = rows.X.toarray() if hasattr(rows.X, "toarray") else np.asarray(rows.X)
        M = np.asarray(rows.layers[K.MEASURED]) if K.MEASURED in rows.layers else None
        return measured[common], P, M, pred.var_names.tolist(), dict(pred.uns.get(key, {}))
    obsm_key = K.pred(key)
    if obsm_key not in data.obsm or key not in data.uns:
        raise KeyNotFoundError(f"No predictions obsm[{obsm_key!r}] / uns[{key!r}]; run sf.tl.histospace first.")
    M = np.asarray(data.obsm[K.measured(key)]) if K.measured(key) in data.obsm else None
    return data, np.asarray(data.obsm[obsm_key]), M, list(data.uns[key]["genes"]), dict(data.uns[key])


def gene_correlation(data: Any, key: str = "histospace", *, table_key: str = K.TABLE, layer: str | None = None,
                     genes: Iterable[str] | None = None) -> pd.DataFrame:
    """Per-gene Pearson r across spots between measured and predicted expression.

    The measured expression is the one :func:`stfuse.tl.histospace` wrote beside the predictions,
    normalised the way the training targets were (library size 1e4 and log1p); predictions written
    without it (or ``layer`` given) have the measured counts normalised here as recorded in
    ``uns[key]["normalisation"]``. r is computed per gene across the spots that have both
    (:func:`pearson_per_gene`), NaN for genes constant on either side.

    Parameters
    ----------
    data
        A SpatialData with the measured table ``table_key`` and the prediction table ``key``, or an
        AnnData with ``obsm[f"X_{key}_pred"]`` and ``uns[key]["genes"]``.
    key
        ``key_added`` of the prediction.
    table_key
        Table of measured counts (SpatialData only).
    layer
        Counts layer instead of ``X``.
    genes
        Restrict to these genes (default: every predicted gene that is measured).

    Returns
    -------
    :class:`pandas.DataFrame` indexed by gene, sorted by ``r`` (NaN last), with columns ``r``,
    ``mean_measured``, ``mean_predicted``, ``std_measured``, ``std_predicted`` and ``detected`` (fraction
    of spots with counts). ``df.attrs`` holds ``n_spots`` and ``n_constant`` (genes with NaN r).

    Examples
    --------
    >>> import stfuse as sf
    >>> sdata = sf.datasets.toy(n_spots=400)
    >>> sf.tl.histospace(sdata, n_top_genes=20, epochs=1)  # doctest: +SKIP
    >>> sf.metrics.gene_correlation(sdata).head()  # doctest: +SKIP
    """
    from scipy import sparse

    from .pp import prepare_expression

    measured, P, M, pred_genes, info = _predictions(data, key, table_key)
    chosen = pred_genes if genes is None else [str(g) for g in genes]
    unknown = [g for g in chosen if g not in pred_genes]
    if unknown:
        raise KeyNotFoundError(f"{len(unknown)} genes were not predicted (first: {unknown[:5]}).")
    chosen = [g for g in chosen if g in measured.var_names]
    if not chosen:
        raise InputError("None of the predicted genes is measured in the table; nothing to correlate.")
    col = pd.Index(pred_genes).get_indexer(chosen)
    if M is not None and layer is None:  # written by the tool, normalised like the training targets
        Y = np.ascontiguousarray(M[:, col], dtype=np.float32)  # C order: the same sums as before
    else:
        norm = info.get("normalisation", {"target_sum": 1e4, "log1p": True})
        Y = prepare_expression(measured, genes=chosen, layer=layer, target_sum=norm.get("target_sum", 1e4),
                               log1p=bool(norm.get("log1p", True))).X
    Ph = P[:, col].astype(np.float64)
    r = pearson_per_gene(Y, Ph)
    counts = measured.X if layer is None else measured.layers[layer]
    counts = counts[:, measured.var_names.get_indexer(chosen)]
    detected = np.asarray((counts > 0).mean(axis=0)).ravel() if sparse.issparse(counts) else (np.asarray(counts) > 0).mean(axis=0)
    df = pd.DataFrame({"r": r, "mean_measured": Y.mean(axis=0), "mean_predicted": Ph.mean(axis=0),
                       "std_measured": Y.std(axis=0), "std_predicted": Ph.std(axis=0), "detected": detected},
                      index=pd.Index(chosen, name="gene"))
    df = df.sort_values("r", ascending=False, na_position="last")
    df.attrs = {"n_spots": int(Y.shape[0]), "n_constant": int(np.isnan(r).sum())}
    return df
