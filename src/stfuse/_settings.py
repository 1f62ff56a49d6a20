"""Package-wide settings: ``sf.settings``."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Literal

from ._errors import InputError

__all__ = ["settings"]


_numba_started = False


def start_numba_threads() -> None:
    """Start numba's thread pool once per process, keeping torch's CPU thread count.

    numba's OpenMP layer sets the process's OpenMP thread count to all cores when its pool starts
    (at the first parallel kernel or ``numba.get_num_threads()``, which scanpy's
    :func:`scanpy.pp.normalize_total` calls), and torch shares that count: without this,
    ``OMP_NUM_THREADS=1`` or ``torch.set_num_threads(1)`` became all cores' torch threads after the
    first graph or normalisation, and parallel processes oversubscribed the cores (10x slower steps
    on 2 cores). Call it before stfuse's or scanpy's numba code; later calls return at once. torch is
    only imported when it is loaded already or ``OMP_NUM_THREADS`` is set (otherwise the count is
    all cores before and after).
    """
    global _numba_started
    if _numba_started:
        return
    import numba

    torch = None
    if "torch" in sys.modules or "OMP_NUM_THREADS" in os.environ:
        import torch
    before = None if torch is None else torch.get_num_threads()
    numba.get_num_threads()  # starts the pool
    if torch is not None and torch.get_num_threads() != before:
        torch.set_num_threads(before)
    _numba_started = True


_Device = Literal["auto", "cpu", "cuda", "mps"] | str


class Settings:
    """Global settings of stfuse.

    Attributes
    ----------
    device
        Default torch device for tools called with ``device="auto"``. ``"auto"`` picks CUDA when
        available, then Apple MPS, else CPU.
    seed
        The seed of everything called without one: ``sf.datasets.toy(seed=None)`` and every
        ``random_state=None`` (see :meth:`resolve_seed`). Default 0.
    n_jobs
        CPU threads for stfuse's numba kernels and torch on CPU (``None``: all cores). Setting it
        sets ``torch.set_num_threads`` and numba's thread count; code that starts several processes
        gives each :meth:`threads` ``(processes)`` threads, so processes x threads stays within it.
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
        self._n_jobs: int | None = None
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
    def n_jobs(self) -> int | None:
        return self._n_jobs

    @n_jobs.setter
    def n_jobs(self, value: int | None) -> None:
        if value is not None and int(value) < 1:
            raise InputError(f"n_jobs must be a positive number of threads or None (all cores), got {value!r}.")
        self._n_jobs = None if value is None else int(value)
        self.apply_threads()

    def threads(self, processes: int = 1) -> int:
        """CPU threads for each of ``processes`` processes: :attr:`n_jobs` (or all cores) shared out.

        Parameters
        ----------
        processes
            Number of processes that run at once.

        Returns
        -------
        At least 1; ``processes * threads(processes)`` never exceeds :attr:`n_jobs` (or the cores),
        unless there are more processes than threads.

        Examples
        --------
        >>> import stfuse as sf
        >>> sf.settings.n_jobs = 4
        >>> sf.settings.threads(2)
        2
        >>> sf.settings.n_jobs = None
        """
        total = self._n_jobs if self._n_jobs is not None else (os.cpu_count() or 1)
        return max(1, total // max(1, int(processes)))

    def apply_threads(self) -> None:
        """Set torch's and numba's CPU thread counts to :meth:`threads` (called when :attr:`n_jobs` is set).

        With ``n_jobs=None`` nothing is changed (the libraries' defaults: all cores).

        Examples
        --------
        >>> import torch
        >>> import stfuse as sf
        >>> sf.settings.n_jobs = 1
        >>> torch.get_num_threads()
        1
        >>> sf.settings.n_jobs = None
        """
        if self._n_jobs is None:
            return
        import numba
        import torch

        n = self.threads()
        numba.set_num_threads(max(1, min(n, numba.config.NUMBA_NUM_THREADS)))
        torch.set_num_threads(n)  # after numba: numba's OpenMP layer may reset the shared OpenMP thread count

    def resolve_seed(self, random_state: int | None = None) -> int:
        """``random_state``, or :attr:`seed` when it is ``None``.

        Parameters
        ----------
        random_state
            An explicit seed, or ``None``.

        Returns
        -------
        The seed to use.

        Examples
        --------
        >>> import stfuse as sf
        >>> sf.settings.resolve_seed(None) == sf.settings.seed
        True
        >>> sf.settings.resolve_seed(7)
        7
        """
        return int(self.seed if random_state is None else random_state)

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

        Raises
        ------
        InputError
            For a CUDA device without CUDA, an MPS device without MPS, or a device torch does not know.

        Examples
        --------
        >>> import stfuse as sf
        >>> sf.settings.resolve_device("cpu")
        'cpu'
        """
        import torch

        if device is None:
            device = self.device
        if device == "auto" and self.device != "auto":
            device = self.device
        if device != "auto":
            return _check_device(str(device))
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


def _check_device(device: str) -> str:
    """``device`` if torch can use it here, else :class:`InputError` saying why."""
    import torch

    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as e:
        raise InputError(f"Unknown device {device!r} ({e}); use 'auto', 'cpu', 'cuda', 'cuda:1', 'mps'.") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise InputError(f"device={device!r} but CUDA is not available here; use device='auto' or 'cpu'.")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise InputError(f"device={device!r} but only {torch.cuda.device_count()} CUDA device(s) are visible.")
    if dev.type == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise InputError(f"device={device!r} but Apple MPS is not available here; use device='auto' or 'cpu'.")
    return device


settings = Settings()
