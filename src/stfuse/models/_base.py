"""Savable torch models: weights + parameters + gene names + stfuse version in one directory."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import torch

from .._errors import DataNotFoundError, GeneMismatchError, InputError
from .._settings import settings
from .._version import __version__
from ..data import Registry
from ..nn import seeded

__all__ = ["BaseModel"]

M = TypeVar("M", bound="BaseModel")
WEIGHTS = "model.pt"
CONFIG = "config.json"


class BaseModel:
    """Base of the stfuse models (scvi-tools style: a pure ``torch.nn.Module`` plus this wrapper).

    A subclass implements :meth:`_build` (make ``self.module`` from ``self.params``) and its own
    ``fit``/``predict``. The wrapper keeps everything needed to apply the model to new data:
    ``params`` (constructor arguments), ``genes`` (input genes, in order), ``registry`` (how the
    training data were prepared: normalisation, image encoder, tile size, neighbourhood, ...; a
    :class:`stfuse.data.Registry` that the tools re-apply to new data) and ``info`` (what training
    produced: history, settings). :meth:`save` writes all of it; :meth:`load` restores it.
    """

    #: bump when the saved layout of a model changes
    format_version: ClassVar[int] = 1

    def __init__(self, *, genes: Sequence[str] | None = None, device: str = "auto", random_state: int = 0,
                 **params: Any) -> None:
        self.params: dict[str, Any] = dict(params)
        self.genes: list[str] | None = list(genes) if genes is not None else None
        self.info: dict[str, Any] = {}
        self.registry: Registry | None = None
        self.random_state = int(random_state)
        self.device = settings.resolve_device(device)
        with seeded(self.random_state, self.device):
            self.module = self._build()
        self.module.to(self.device)
        self.is_trained = False

    @classmethod
    def _saved_params(cls, params: dict[str, Any], format_version: int) -> dict[str, Any]:
        """The constructor arguments of a model saved in ``format_version`` (override when defaults change)."""
        return params

    def _build(self) -> torch.nn.Module:  # pragma: no cover - abstract
        raise NotImplementedError

    def __repr__(self) -> str:
        n = sum(p.numel() for p in self.module.parameters())
        genes = f", {len(self.genes)} genes" if self.genes is not None else ""
        state = "trained" if self.is_trained else "untrained"
        return f"{type(self).__name__}({state}, {n:,} parameters{genes}, device={self.device!r})"

    # --- genes ---------------------------------------------------------------------------------
    def check_genes(self, var_names: Sequence[str], *, what: str = "the new data") -> None:
        """Raise :class:`~stfuse.GeneMismatchError` when genes the model needs are missing."""
        if self.genes is None:
            return
        have = set(map(str, var_names))
        missing = [g for g in self.genes if g not in have]
        if missing:
            raise GeneMismatchError(
                f"{type(self).__name__} was trained on {len(self.genes)} genes; {len(missing)} are missing from "
                f"{what} (first: {missing[:8]}). Use data measured on the same gene panel, or retrain the model "
                "on genes shared by the reference and the new data."
            )

    # --- persistence ---------------------------------------------------------------------------
    def save(self, path: str | os.PathLike, *, overwrite: bool = False) -> Path:
        """Save weights, parameters, genes, registry and the stfuse version to directory ``path``.

        Examples
        --------
        >>> model.save("my_model/")  # doctest: +SKIP
        """
        path = Path(path)
        if path.exists() and any(path.iterdir()) and not overwrite:
            raise InputError(f"{str(path)!r} exists and is not empty; pass overwrite=True to replace it.")
        path.mkdir(parents=True, exist_ok=True)
        torch.save({k: v.detach().cpu() for k, v in self.module.state_dict().items()}, path / WEIGHTS)
        config = {
            "class": type(self).__name__,
            "format_version": self.format_version,
            "stfuse_version": __version__,
            "params": self.params,
            "genes": self.genes,
            "info": self.info,
            "registry": self.registry.to_dict() if self.registry is not None else None,
            "random_state": self.random_state,
            "is_trained": self.is_trained,
        }
        (path / CONFIG).write_text(json.dumps(config, indent=1, default=_json_default))
        return path

    @classmethod
    def load(cls: type[M], path: str | os.PathLike, *, device: str = "auto") -> M:
        """Load a model saved with :meth:`save`.

        Examples
        --------
        >>> model = sf.models.SpaCRD.load("my_model/")  # doctest: +SKIP
        """
        path = Path(path)
        if not (path / CONFIG).is_file() or not (path / WEIGHTS).is_file():
            raise DataNotFoundError(f"{str(path)!r} is not a saved stfuse model (needs {CONFIG} and {WEIGHTS}).")
        config = json.loads((path / CONFIG).read_text())
        if config.get("class") != cls.__name__:
            raise InputError(f"{str(path)!r} holds a {config.get('class')} model, not a {cls.__name__}.")
        if int(config.get("format_version", 1)) > cls.format_version:
            raise InputError(
                f"{str(path)!r} was saved by stfuse {config.get('stfuse_version')} in a newer format; upgrade stfuse."
            )
        params = cls._saved_params(dict(config["params"]), int(config.get("format_version", 1)))
        obj = cls(genes=config.get("genes"), device=device, random_state=config.get("random_state", 0), **params)
        state = torch.load(path / WEIGHTS, map_location=obj.device, weights_only=True)
        obj.module.load_state_dict(state)
        obj.module.eval()
        obj.info = config.get("info", {})
        reg = config.get("registry")
        obj.registry = (Registry.from_dict(reg) if reg is not None
                        else Registry.from_info(cls.__name__.lower(), obj.genes, obj.info))
        obj.is_trained = bool(config.get("is_trained", True))
        return obj


def _json_default(o: Any) -> Any:
    import numpy as np

    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"Cannot save {type(o).__name__} in a model config.")
