"""Package-wide settings: ``sf.settings``."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

__all__ = ["settings"]

_Device = Literal["auto", "cpu", "cuda", "mps"] | str


class Settings:
    """Global settings of stfuse.

    Attributes
    ----------
    device
        Default torch device for tools called with ``device="auto"``. ``"auto"`` picks CUDA when
        available, then Apple MPS, else CPU.
    seed
        Default random seed used where a tool is called with ``random_state=None``.
    n_jobs
        Number of CPU threads for numba kernels and torch on CPU (``None``: all cores).
    verbosity
        0 errors, 1 warnings (default, progress bars shown), 2 info, 3 hints, 4 debug. ``None``
        follows :attr:`scanpy.settings.verbosity`. Below 1, progress bars are hidden.
    cachedir
        Where downloaded data and weights are stored: ``$STFUSE_CACHE``, else ``~/.cache/stfuse``.

    Examples
    --------
    >>> import stfuse as sf
    >>> sf.settings.verbosity = 2
    >>> sf.settings.resolve_device("auto")
    'cpu'
    """

    def __init__(self) -> None:
        self.device: _Device = "auto"
        self.seed: int = 0
        self.n_jobs: int | None = None
        self._verbosity: int | None = None
        self._cachedir: Path | None = None

    @property
    def verbosity(self) -> int:
        if self._verbosity is not None:
            return self._verbosity
        import scanpy as sc

        return int(sc.settings.verbosity)

    @verbosity.setter
    def verbosity(self, value: int | None) -> None:
        if value is not None and not 0 <= int(value) <= 4:
            raise ValueError(f"verbosity must be an integer from 0 to 4 or None, got {value!r}.")
        self._verbosity = None if value is None else int(value)

    @property
    def cachedir(self) -> Path:
        if self._cachedir is not None:
            return self._cachedir
        env = os.environ.get("STFUSE_CACHE")
        return Path(env) if env else Path.home() / ".cache" / "stfuse"

    @cachedir.setter
    def cachedir(self, value: str | os.PathLike | None) -> None:
        self._cachedir = None if value is None else Path(value)

    def resolve_device(self, device: _Device | None = "auto") -> str:
        """Turn ``"auto"`` (or ``None``) into a concrete torch device string.

        Parameters
        ----------
        device
            ``"auto"``, ``None`` (use :attr:`device`) or an explicit torch device such as ``"cuda:1"``.

        Returns
        -------
        The device string, e.g. ``"cpu"`` or ``"cuda"``.

        Examples
        --------
        >>> import stfuse as sf
        >>> sf.settings.resolve_device("cpu")
        'cpu'
        """
        import torch

        if device is None:
            device = self.device
        if device != "auto":
            return str(device)
        if self.device != "auto":
            return str(self.device)
        if torch.cuda.is_available():
            return "cuda"
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return "mps"
        return "cpu"

    def __repr__(self) -> str:
        return (
            f"stfuse settings: device={self.device!r}, seed={self.seed}, n_jobs={self.n_jobs}, "
            f"verbosity={self.verbosity}, cachedir={str(self.cachedir)!r}"
        )


settings = Settings()
