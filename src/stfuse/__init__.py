"""stfuse: fuse spatial transcriptomics with H&E histology (SENCA-st, SpaCRD, stMIC, HistoSPACE)."""

from . import data, datasets, gr, im, io, metrics, models, nn, pl, pp, tl
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
