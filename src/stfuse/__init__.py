"""stfuse: fuse spatial transcriptomics with H&E histology (SENCA-st, SpaCRD, stMIC, HistoSPACE)."""

from . import datasets, gr, im, io, metrics, models, nn, pl, pp, tl
from ._errors import (
    DataNotFoundError,
    GeneMismatchError,
    InputError,
    KeyNotFoundError,
    StfuseError,
    WeightsUnavailableError,
)
from ._settings import settings
from ._version import __version__

__all__ = [
    "DataNotFoundError",
    "GeneMismatchError",
    "InputError",
    "KeyNotFoundError",
    "StfuseError",
    "WeightsUnavailableError",
    "__version__",
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
