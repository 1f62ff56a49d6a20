"""Validation splits of the training spots, made before training (whole spatial blocks or stratified)."""

from __future__ import annotations

import numpy as np

from .._errors import InputError

__all__ = ["block_split", "stratified_split"]


def block_split(centers: np.ndarray, spacing: float, fraction: float, rng: np.random.Generator) -> np.ndarray:
    """Validation mask of one section: random square blocks of about 4 × 4 spots until ``fraction`` of the spots.

    Whole blocks are held out, so validation spots are not the direct neighbours of training
    spots. No block is taken that would bring the validation share above one half.

    Parameters
    ----------
    centers
        ``(n, 2)`` spot centres.
    spacing
        Centre-to-centre distance of neighbouring spots (same units); blocks are ``4 × spacing`` wide.
    fraction
        Target share of validation spots (``0``: none; sections under 10 spots: none).
    rng
        Random generator (consumed once per call, so sections split in turn get different blocks).

    Returns
    -------
    ``(n,)`` bool mask, ``True`` for validation spots.

    Examples
    --------
    >>> import numpy as np
    >>> from stfuse.data import block_split
    >>> xy = np.c_[np.arange(400) % 20, np.arange(400) // 20].astype(float)
    >>> m = block_split(xy, 1.0, 0.15, np.random.default_rng(0))
    >>> m.shape, bool(0.1 <= m.mean() <= 0.25)
    ((400,), True)
    """
    if fraction <= 0 or len(centers) < 10:
        return np.zeros(len(centers), bool)
    block = 4.0 * max(spacing, 1e-9)
    ids = np.floor((centers - centers.min(axis=0)) / block).astype(np.int64)
    _, inv, counts = np.unique(ids, axis=0, return_inverse=True, return_counts=True)
    inv = inv.ravel()
    val = np.zeros(len(centers), bool)
    total = 0
    for b in rng.permutation(len(counts)):
        if total >= fraction * len(centers):
            break
        if total + counts[b] > 0.5 * len(centers):
            continue
        val |= inv == b
        total += counts[b]
    return val


def stratified_split(y: np.ndarray, fraction: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Stratified train/validation split of labelled spots; unlabelled spots (``-1``) go to training.

    Parameters
    ----------
    y
        ``(n,)`` labels: 1, 0 or -1 (unlabelled).
    fraction
        Share of each class held out (rounded; a class keeps at least one training spot).
    rng
        Random generator.

    Returns
    -------
    Sorted training and validation indices.

    Examples
    --------
    >>> import numpy as np
    >>> from stfuse.data import stratified_split
    >>> train, val = stratified_split(np.r_[np.zeros(20, int), np.ones(10, int)], 0.2, np.random.default_rng(0))
    >>> len(train), len(val)
    (24, 6)
    """
    if not 0 <= fraction < 1:
        raise InputError(f"val_fraction must be in [0, 1), got {fraction}.")
    val = []
    for cls in (0, 1):
        idx = np.flatnonzero(y == cls)
        k = round(fraction * len(idx))
        if k and len(idx) - k >= 1:
            val.append(rng.choice(idx, size=k, replace=False))
    val_idx = np.sort(np.concatenate(val)) if val else np.empty(0, np.int64)
    mask = np.ones(len(y), bool)
    mask[val_idx] = False
    return np.flatnonzero(mask), val_idx
