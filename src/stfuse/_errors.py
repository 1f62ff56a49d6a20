"""stfuse's own exception types.

Every refusal of bad input raises one of these. Each subclasses the builtin a user would catch
anyway (``ValueError``, ``KeyError``, ``FileNotFoundError``), so ``except ValueError`` keeps working.
"""

from __future__ import annotations

__all__ = [
    "DataNotFoundError",
    "GeneMismatchError",
    "InputError",
    "KeyNotFoundError",
    "StfuseError",
    "WeightsUnavailableError",
]


class StfuseError(Exception):
    """Base class of every error raised by stfuse on purpose."""


class InputError(StfuseError, ValueError):
    """The input data is malformed or does not suit the requested computation."""


class KeyNotFoundError(StfuseError, KeyError):
    """A table, element or column key is missing or ambiguous; the message lists the candidates."""

    def __str__(self) -> str:  # KeyError quotes its message; show it plainly
        return str(self.args[0]) if self.args else ""


class GeneMismatchError(InputError):
    """Genes of new data do not match the genes a model was trained on."""


class DataNotFoundError(StfuseError, FileNotFoundError):
    """Input files or a dataset could not be found (and could not be downloaded)."""


class WeightsUnavailableError(StfuseError, FileNotFoundError):
    """Model weights are neither available locally nor downloadable."""
