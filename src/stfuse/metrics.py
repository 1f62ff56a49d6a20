"""Evaluation metrics: ``sf.metrics`` (thin wrappers over scikit-learn and numpy)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
import pandas as pd

from . import _keys as K
from ._errors import InputError

__all__ = ["ari", "classification", "pearson_per_gene"]


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
