"""Logging and progress bars that honour :attr:`stfuse.settings.verbosity`.

Messages go through :mod:`scanpy.logging` so they look like scanpy's.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any, TypeVar

from ._settings import settings

T = TypeVar("T")

_LEVELS = {"error": 0, "warning": 1, "info": 2, "hint": 3, "debug": 4}


def _emit(level: str, msg: str) -> None:
    if settings.verbosity < _LEVELS[level]:
        return
    import scanpy as sc
    from scanpy import logging as logg

    with sc.settings.verbosity.override(max(int(sc.settings.verbosity), _LEVELS[level])):
        getattr(logg, level)(msg)


def info(msg: str) -> None:
    """Log ``msg`` at info level."""
    _emit("info", msg)


def warning(msg: str) -> None:
    """Log ``msg`` at warning level (use :func:`warnings.warn` for things the user must act on)."""
    _emit("warning", msg)


def hint(msg: str) -> None:
    """Log ``msg`` at hint level."""
    _emit("hint", msg)


def debug(msg: str) -> None:
    """Log ``msg`` at debug level."""
    _emit("debug", msg)


def progress(iterable: Iterable[T], *, desc: str, total: int | None = None, **kwargs: Any) -> Iterator[T]:
    """Wrap ``iterable`` in a tqdm progress bar, hidden when ``settings.verbosity < 1``."""
    from tqdm.auto import tqdm

    return iter(tqdm(iterable, desc=desc, total=total, disable=settings.verbosity < 1, leave=False, **kwargs))


def progress_bar(*, desc: str, total: int | None = None, **kwargs: Any):
    """A manual tqdm bar (``update``/``set_postfix``), hidden when ``settings.verbosity < 1``."""
    from tqdm.auto import tqdm

    return tqdm(desc=desc, total=total, disable=settings.verbosity < 1, leave=False, **kwargs)
