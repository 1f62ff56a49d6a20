"""stfuse: fuse spatial transcriptomics with H&E histology (SENCA-st, SpaCRD, stMIC, HistoSPACE).

The subpackages (``sf.tl``, ``sf.pl``, ...) are imported on first use, so ``import stfuse`` and the
``stfuse`` command line start without loading torch, scanpy or spatialdata.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from . import _errors
from ._errors import *  # noqa: F403 - the exception types, listed once in stfuse._errors.__all__
from ._settings import settings
from ._version import __version__

if TYPE_CHECKING:
    from . import data, datasets, gr, im, io, metrics, models, nn, pl, pp, tl

_SUBMODULES = ("data", "datasets", "gr", "im", "io", "metrics", "models", "nn", "pl", "pp", "tl")

__all__ = [
    *_errors.__all__,
    "__version__",
    "data",
    "datasets",
    "gr",
    "im",
    "io",
    "metrics",
    "models",
    "nn",
    "pl",
    "pp",
    "settings",
    "tl",
]


def __getattr__(name: str) -> Any:
    if name in _SUBMODULES:
        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_SUBMODULES})
