"""Reference and target sections: resolve them once, name them, read their labels."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from .. import _keys as K
from .._errors import InputError, KeyNotFoundError
from .._spots import Spots, get_spots

__all__ = ["Section", "as_list", "binary_labels", "reference_sections", "section_name"]


@dataclass(eq=False)
class Section:
    """One resolved section: its :class:`~stfuse._spots.Spots` view, a name for messages, its labels."""

    spots: Spots
    name: str
    labels: np.ndarray | None = None


def as_list(sections: Any) -> list[Any]:
    """``None`` → ``[]``, one object → ``[object]``, a list or tuple → a list.

    Examples
    --------
    >>> from stfuse.data import as_list
    >>> as_list(None), as_list("a"), as_list(("a", "b"))
    ([], ['a'], ['a', 'b'])
    """
    if sections is None:
        return []
    if isinstance(sections, list | tuple):
        return list(sections)
    return [sections]


def section_name(spots: Spots, fallback: str) -> str:
    """The section's name: its single ``obs["section"]`` value, else the spots' name, else ``fallback``.

    Examples
    --------
    >>> import stfuse as sf
    >>> from stfuse._spots import get_spots
    >>> from stfuse.data import section_name
    >>> section_name(get_spots(sf.datasets.toy(n_spots=50)), "target")
    'toy'
    """
    sec = spots.table.obs.get(K.SECTION)
    if sec is not None:
        values = pd.unique(sec.astype(str))
        if len(values) == 1:
            return str(values[0])
    return spots.name or fallback


def _labels(spots: Spots, label_key: str, positive: Any, name: str) -> np.ndarray:
    """1 / 0 / -1 (missing) per spot from ``obs[label_key]``; ``positive`` is a value or a list of values."""
    obs = spots.table.obs
    if label_key not in obs.columns:
        raise KeyNotFoundError(
            f"Reference {name!r} has no obs[{label_key!r}]; its labelled columns are {list(obs.columns)}. "
            "Pass label_key=<column with the cancer/normal annotation> (and positive=<its cancer value(s)>)."
        )
    col = obs[label_key]
    values = list(positive) if isinstance(positive, list | tuple | set | frozenset) else [positive]
    missing = col.isna().to_numpy()
    pos = col.isin(values).to_numpy() & ~missing
    if missing.all():
        raise InputError(f"obs[{label_key!r}] of reference {name!r} is missing (NaN) for every spot.")
    return np.where(missing, -1, pos.astype(np.int64))


def reference_sections(
    references: Sequence[Any],
    *,
    image_for: str | None = None,
    image_hint: str = "",
    need_genes: bool = False,
    label_key: str | None = None,
    positive: Any = True,
    **select: Any,
) -> list[Section]:
    """Resolve every reference section before anything is computed.

    Parameters
    ----------
    references
        SpatialData / AnnData objects (not modified).
    image_for
        When given, each reference needs an H&E image; the error names this use (e.g. ``"SpaCRD"``).
    image_hint
        What to do instead, appended to the missing-image error.
    need_genes
        Refuse a reference whose table has no genes.
    label_key, positive
        Read the labels (:attr:`Section.labels`: 1 positive, 0 negative, -1 missing) from
        ``obs[label_key]``; ``positive`` is the positive value or a list of them.
    **select
        The keywords choosing the section in every reference (:data:`stfuse._spots.SELECT`, e.g.
        ``table_key``), passed to :func:`stfuse._spots.get_spots`.

    Returns
    -------
    One :class:`Section` per reference, named by :func:`section_name`.

    Examples
    --------
    >>> import stfuse as sf
    >>> from stfuse.data import reference_sections
    >>> refs = reference_sections([sf.datasets.toy(n_spots=100)], label_key="cancer")
    >>> refs[0].name, refs[0].labels.shape
    ('toy', (100,))
    """
    out = []
    for i, r in enumerate(references):
        s = get_spots(r, **select)
        name = section_name(s, f"reference {i}")
        if image_for is not None:
            s.require_image(f"{image_for} (reference {name!r})", fix=image_hint)
        if need_genes and s.table.n_vars == 0:
            raise InputError(f"Reference {i} ({s.name!r}) has no genes in table {s.table_key!r}.")
        y = _labels(s, label_key, positive, name) if label_key is not None else None
        out.append(Section(s, name, y))
    return out


def binary_labels(sections: Sequence[Section], label_key: str, positive: Any) -> np.ndarray:
    """The stacked labels of ``sections``; refuse labels of a single class (naming the values found).

    Examples
    --------
    >>> import stfuse as sf
    >>> from stfuse.data import binary_labels, reference_sections
    >>> refs = reference_sections([sf.datasets.toy(n_spots=100)], label_key="cancer")
    >>> sorted(set(binary_labels(refs, "cancer", True).tolist()))
    [0, 1]
    """
    y = np.concatenate([s.labels for s in sections])
    n_pos, n_neg = int((y == 1).sum()), int((y == 0).sum())
    if n_pos == 0 or n_neg == 0:
        present = sorted({str(v) for s in sections for v in pd.unique(s.spots.table.obs[label_key].dropna())})[:10]
        raise InputError(
            f"The reference labels hold a single class ({n_pos} cancer, {n_neg} normal spots; obs[{label_key!r}] "
            f"values: {present}, positive={positive!r}). A classifier needs cancer and normal spots: check label_key "
            "and positive, or add a reference with the missing class."
        )
    return y
