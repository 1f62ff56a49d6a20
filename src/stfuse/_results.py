"""One contract for tool results: the recorder every tool writes through, the reader ``pl``/``metrics`` use.

Every tool writes ``uns[key_added]`` with one schema::

    {"params": {...},            # the call's parameters (JSON-able; None dropped)
     "history": {term: array},   # per-epoch (or per-step) training curves; {} for tools that do not train
     "inputs": {...},            # which inputs were used: obsm keys of image features, graph keys, genes, ...
     "stfuse_version": "x.y.z",
     ...}                        # tool-specific extras (n_clusters, threshold, genes, ...)

and its other results under the names of :mod:`stfuse._keys` (``obs[key]``, ``obsm[X_key]``,
``obs[key_score]``, ``obsm[X_key_pred]``). :func:`read` returns them as a :class:`Result`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from anndata import AnnData

from . import _keys as K
from ._errors import InputError, KeyNotFoundError
from ._spots import Spots, infer_table_key, is_spatialdata
from ._version import __version__

__all__ = ["Result", "find_table", "read", "record", "result_uns"]


def _jsonable(v: Any) -> Any:
    if isinstance(v, tuple):
        return [_jsonable(x) for x in v]
    if isinstance(v, np.generic):
        return v.item()
    return v


def _history(h: Mapping[str, Any]) -> dict[str, Any]:
    """Training curves as float arrays; a nested mapping (e.g. a pre-training stage) stays nested."""
    return {k: _history(v) if isinstance(v, Mapping) else np.asarray(v, dtype=float) for k, v in h.items()}


def result_uns(*, params: Mapping[str, Any], history: Mapping[str, Sequence[float]] | None = None,
               inputs: Mapping[str, Any] | None = None, **extra: Any) -> dict[str, Any]:
    """The ``uns[key_added]`` entry of a tool result, in the one schema (see the module docstring)."""
    clash = sorted(set(extra) & {"params", "history", "inputs", "stfuse_version"})
    if clash:
        raise ValueError(f"extra keys {clash} are reserved by the result schema")
    return {
        "params": {k: _jsonable(v) for k, v in params.items() if v is not None},
        "history": _history(history or {}),
        "inputs": {k: _jsonable(v) for k, v in (inputs or {}).items() if v is not None},
        "stfuse_version": __version__,
        **extra,
    }


def record(
    spots: Spots,
    key_added: str,
    *,
    params: Mapping[str, Any],
    history: Mapping[str, Sequence[float]] | None = None,
    inputs: Mapping[str, Any] | None = None,
    extra: Mapping[str, Any] | None = None,
    obs: Mapping[str, Any] | None = None,
    obsm: Mapping[str, np.ndarray] | None = None,
    obsp: Mapping[str, Any] | None = None,
    tables: Mapping[str, AnnData] | None = None,
    embeddings: Sequence[Any] = (),
    copy: bool = False,
) -> Any:
    """Write a tool's results (the only writer of tool results; call it last, after every computation).

    ``uns[key_added]`` gets :func:`result_uns` of ``params``/``history``/``inputs``/``extra``; the rest
    goes to :meth:`stfuse._spots.Spots.write` unchanged. Returns the copy with ``copy=True``, else ``None``.
    """
    if not isinstance(key_added, str) or not key_added:
        raise InputError(f"key_added must be a non-empty string, got {key_added!r}.")
    uns = {key_added: result_uns(params=params, history=history, inputs=inputs, **dict(extra or {}))}
    if not spots.table_in_data:  # results that live in new tables only (e.g. predictions for a table-less section)
        uns = None
    return spots.write(key_added, obs=obs, obsm=obsm, obsp=obsp, uns=uns, tables=tables, embeddings=embeddings,
                       copy=copy)


def find_table(data: Any, table_key: str | None = K.TABLE) -> AnnData:
    """The AnnData holding results: ``data.tables[table_key]`` of a SpatialData, or the AnnData itself.

    ``table_key=None``: the only table, else ``"table"`` (:func:`stfuse._spots.infer_table_key`).
    """
    if is_spatialdata(data):
        table_key = infer_table_key(data, table_key)
        if table_key not in data.tables:
            raise KeyNotFoundError(
                f"No table {table_key!r} in the SpatialData; tables: {list(data.tables)}. Pass table_key=..."
            )
        return data.tables[table_key]
    if isinstance(data, AnnData):
        return data
    raise InputError(f"Expected a SpatialData or AnnData object, got {type(data).__name__}.")


@dataclass
class Result:
    """A tool's results as stored in a table (see :func:`read`)."""

    key: str
    table: AnnData
    uns: Mapping[str, Any]
    params: Mapping[str, Any] = field(default_factory=dict)
    history: Mapping[str, np.ndarray] = field(default_factory=dict)
    inputs: Mapping[str, Any] = field(default_factory=dict)

    def obs(self, suffix: str = "") -> Any:
        """``obs[key + suffix]`` (e.g. ``""`` for the domains, ``"_score"`` for scores), or ``None``."""
        name = self.key + suffix
        return self.table.obs[name] if name in self.table.obs else None

    @property
    def embedding(self) -> np.ndarray | None:
        """``obsm[f"X_{key}"]``, or ``None``."""
        return self.table.obsm.get(K.obsm(self.key)) if K.obsm(self.key) in self.table.obsm else None


def read(data: Any, key: str, *, table_key: str | None = K.TABLE, tool: str | None = None) -> Result:
    """The results a tool wrote under ``key_added=key``.

    ``tool`` names the function to run in the error message when there are none.
    """
    table = find_table(data, table_key)
    if key not in table.uns or not hasattr(table.uns[key], "get"):
        run = f"run sf.tl.{tool}(..., key_added={key!r}) first" if tool else f"run the tool with key_added={key!r} first"
        found = [k for k, v in table.uns.items() if hasattr(v, "get") and "params" in v]
        raise KeyNotFoundError(f"No results under uns[{key!r}]: {run}. Results in this table: {found}.")
    uns = table.uns[key]
    return Result(key=key, table=table, uns=uns, params=dict(uns.get("params", {})),
                  history=_history(dict(uns.get("history", {}))),
                  inputs=dict(uns.get("inputs", {})))
