"""stfuse: fuse spatial transcriptomics with H&E histology (SENCA-st, SpaCRD, stMIC, HistoSPACE)."""

from . import _errors, data, datasets, gr, im, io, metrics, models, nn, pl, pp, tl
from ._errors import *  # noqa: F403 - the exception types, listed once in stfuse._errors.__all__
from ._settings import settings
from ._version import __version__

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
