"""Argument checks shared by the tools: each raises stfuse's own error, naming the argument and the fix.

The checks sit on the lowest floor (beside :mod:`stfuse._errors`), so data preparation and the tools
use the same ones. Each returns the value in the type the caller goes on with.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from ._errors import InputError, KeyNotFoundError

__all__ = ["choice", "in_range", "key_added", "known_kwargs", "layer", "n_clusters", "n_neighs", "obsm_key",
           "positive", "positive_int"]


def key_added(value: Any) -> str:
    """``value`` as the name results are written under: a non-empty string.

    Examples
    --------
    >>> from stfuse import _check
    >>> _check.key_added("senca")
    'senca'
    """
    if not isinstance(value, str) or not value:
        raise InputError(f"key_added must be a non-empty string, got {value!r}.")
    return value


def positive_int(name: str, value: Any, *, minimum: int = 1) -> int:
    """``value`` as an integer of at least ``minimum`` (``"{name} must be at least ..."`` otherwise).

    Examples
    --------
    >>> from stfuse import _check
    >>> _check.positive_int("epochs", 10)
    10
    """
    try:
        ok = int(value) == value and int(value) >= minimum
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise InputError(f"{name} must be an integer of at least {minimum}, got {value!r}.")
    return int(value)


def positive(name: str, value: Any, *, zero: bool = False) -> float:
    """``value`` as a float > 0 (``>= 0`` with ``zero=True``); NaN is refused.

    Examples
    --------
    >>> from stfuse import _check
    >>> _check.positive("lr", 5e-4)
    0.0005
    """
    try:
        ok = value >= 0 if zero else value > 0
    except TypeError:
        ok = False
    if not ok:
        raise InputError(f"{name} must be {'>= 0' if zero else 'positive'}, got {value!r}.")
    return float(value)


def in_range(name: str, value: Any, low: float, high: float) -> float:
    """``value`` as a float in ``[low, high]``.

    Examples
    --------
    >>> from stfuse import _check
    >>> _check.in_range("min_tissue", 0.5, 0.0, 1.0)
    0.5
    """
    try:
        ok = low <= value <= high
    except TypeError:
        ok = False
    if not ok:
        raise InputError(f"{name} must be in [{low}, {high}], got {value!r}.")
    return float(value)


def choice(name: str, value: Any, options: Sequence[str]) -> str:
    """``value`` if it is one of ``options`` (e.g. a ``Literal`` argument).

    Examples
    --------
    >>> from stfuse import _check
    >>> _check.choice("lattice", "hex", ("square", "hex"))
    'hex'
    """
    if value not in options:
        listed = ", ".join(repr(o) for o in options[:-1]) + f" or {options[-1]!r}" if len(options) > 1 else repr(options[0])
        raise InputError(f"{name} must be {listed}, got {value!r}.")
    return value


def n_neighs(value: Any, n_obs: int) -> int:
    """Neighbours per spot: between 1 and ``n_obs - 1``.

    Examples
    --------
    >>> from stfuse import _check
    >>> _check.n_neighs(6, 100)
    6
    """
    if not 1 <= int(value) < n_obs:
        raise InputError(f"n_neighs must be between 1 and the number of spots - 1 ({n_obs - 1}), got {value}.")
    return int(value)


def n_clusters(value: Any, n_obs: int, *, minimum: int = 2) -> int | None:
    """A wanted number of clusters between ``minimum`` and ``n_obs``; ``None`` passes (chosen by the tool).

    Examples
    --------
    >>> from stfuse import _check
    >>> _check.n_clusters(4, 100), _check.n_clusters(None, 100)
    (4, None)
    """
    if value is None:
        return None
    if not minimum <= int(value) <= n_obs:
        raise InputError(f"n_clusters must be between {minimum} and the number of spots ({n_obs}), got {value}.")
    return int(value)


def obsm_key(table: Any, key: str, *, fix: str) -> str:
    """``key`` if ``table.obsm`` has it, else :class:`KeyNotFoundError` listing the keys and ``fix``.

    Examples
    --------
    >>> import stfuse as sf
    >>> from stfuse import _check
    >>> _check.obsm_key(sf.datasets.toy(n_spots=20).tables["table"], "spatial", fix="")
    'spatial'
    """
    if key not in table.obsm:
        raise KeyNotFoundError(f"No obsm[{key!r}] in the table; available: {list(table.obsm)}. {fix}".rstrip())
    return key


def layer(table: Any, name: str | None) -> str | None:
    """``name`` if it is ``None`` (use ``X``) or a layer of ``table``, else :class:`KeyNotFoundError`.

    Examples
    --------
    >>> import stfuse as sf
    >>> from stfuse import _check
    >>> _check.layer(sf.datasets.toy(n_spots=20).tables["table"], None) is None
    True
    """
    if name is not None and name not in table.layers:
        raise KeyNotFoundError(f"No layer {name!r} in the table; layers: {list(table.layers)}.")
    return name


def known_kwargs(kwargs: Mapping[str, Any], tool: str, **groups: Iterable[str]) -> None:
    """Refuse keyword arguments that are in none of ``groups`` (``{group name: parameter names}``).

    Examples
    --------
    >>> from stfuse import _check
    >>> _check.known_kwargs({"hidden": 8}, "sf.tl.senca", model=("hidden", "latent"))
    """
    groups = {g: list(names) for g, names in groups.items()}
    unknown = sorted(set(kwargs) - {n for names in groups.values() for n in names})
    if unknown:
        listed = ", ".join(f"{g} parameters {names}" for g, names in groups.items())
        raise InputError(f"Unknown argument(s) {unknown} for {tool}; {listed}.")
