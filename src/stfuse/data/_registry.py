"""The registry: how a model's training data were prepared, saved with the model and re-applied to new data."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .._errors import InputError

__all__ = ["Registry"]

#: tile of a model trained before the registry recorded one: one spot diameter, no stain normalisation
DEFAULT_TILE = {"size": 1.0, "size_um": None, "stain": None}
_ENCODER_KEYS = ("encoder", "checksum", "input_px", "output_dim")


@dataclass
class Registry:
    """What a model needs to see new data the way it saw its training data (scvi-tools' registry idea).

    Built by the data preparation of a tool when a model is trained, saved beside the model's
    parameters (:meth:`stfuse.models.BaseModel.save`) and re-applied to every section the model is
    applied to: the same genes, the same normalisation, the same image features, the same tile
    size and stain, the same neighbourhood.

    Attributes
    ----------
    tool
        The tool that prepared the data (``"spacrd"``, ``"histospace"``).
    genes
        Input or target genes, in order (``None`` when the model uses no expression).
    layer
        Counts layer of the training sections (``None``: ``X``).
    normalisation
        Expression preparation: ``target_sum``, ``log1p`` and optionally ``scale`` (arguments of
        :func:`stfuse.pp.prepare_expression`) and ``scope``.
    image_encoder
        Provenance of the image features (:attr:`stfuse.im.ImageFeatures.provenance`), or ``None``.
    image_scaling
        How image features were scaled (e.g. per-section z-score), or ``None``.
    tile
        Tiles cut around each spot: ``size`` (spot diameters), ``size_um`` (physical side, when
        known), ``out_px`` and ``stain`` (``None``, ``"macenko"``, ``"reinhard"``); ``None`` for
        models that see no tiles.
    graph
        Neighbourhood of each spot: ``{"method": "knn", "n_neighs": k}`` (the ``k`` nearest spots), or
        ``{"method": "obsp", "connectivity_key": key, "n_neighs": k}`` (the section's ``obsp[key]``
        graph, the ``k`` nearest spots where it has none; see :func:`stfuse.data.graph_rule`), or ``None``.
    labels
        Label source of a supervised model: ``{"label_key": ..., "positive": ...}``, or ``None``.
    references
        Names of the training sections.

    Examples
    --------
    >>> from stfuse.data import Registry
    >>> reg = Registry("histospace", genes=["ERBB2"], normalisation={"target_sum": 1e4, "log1p": True})
    >>> Registry.from_dict(reg.to_dict()) == reg
    True
    """

    tool: str
    genes: list[str] | None = None
    layer: str | None = None
    normalisation: dict[str, Any] = field(default_factory=dict)
    image_encoder: dict[str, Any] | None = None
    image_scaling: str | None = None
    tile: dict[str, Any] | None = None
    graph: dict[str, Any] | None = None
    labels: dict[str, Any] | None = None
    references: list[str] = field(default_factory=list)

    # --- persistence -------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """Plain-Python dict (JSON-able), the form saved with a model."""
        return _plain(dataclasses.asdict(self))

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Registry:
        """The registry of :meth:`to_dict` (unknown keys of a newer stfuse are ignored)."""
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})

    @classmethod
    def from_info(cls, tool: str, genes: list[str] | None, info: Mapping[str, Any]) -> Registry | None:
        """The registry of a model saved before registries existed (its ``info`` held the data contract)."""
        if not any(k in info for k in ("normalisation", "tile", "image_encoder", "references")):
            return None
        labels = {"label_key": info["label_key"], "positive": info.get("positive")} if "label_key" in info else None
        return cls(tool, genes=genes, layer=info.get("layer"), normalisation=dict(info.get("normalisation") or {}),
                   image_encoder=info.get("image_encoder"), image_scaling=info.get("image_scaling"),
                   tile=info.get("tile"), labels=labels, references=list(info.get("references", [])))

    # --- re-applying ---------------------------------------------------------------------------
    def expression(self, table: Any, *, layer: str | None = None) -> np.ndarray:
        """Expression of :attr:`genes` in ``table``, prepared exactly like the training data.

        ``layer`` is the counts layer of ``table`` (``None``: ``X``): which layer holds the counts
        is a property of the data, not of the model.
        """
        from ..pp import prepare_expression

        if self.genes is None:
            raise InputError(f"The {self.tool} model uses no expression; there are no genes to prepare.")
        n = self.normalisation
        return prepare_expression(table, genes=self.genes, layer=layer, target_sum=n.get("target_sum", 1e4),
                                  log1p=bool(n.get("log1p", True)), scale=n.get("scale", False)).X

    def neighbours(self, spots: Any, *, n_neighs: int) -> tuple[np.ndarray, dict[str, Any]]:
        """Neighbour array of a section by the rule of :attr:`graph`, and how it was made (for ``uns``).

        ``spots``: the section's Spots view. ``n_neighs``: the kNN width when :attr:`graph` is ``None``
        (models saved before the registry recorded a graph). An ``obsp`` graph's neighbours come nearest
        first (:func:`stfuse.data.spot_graph` with ``by_distance=True``).
        """
        from ._single import spot_graph

        rule = self.graph or {"method": "knn", "n_neighs": int(n_neighs)}
        key = rule.get("connectivity_key") if rule.get("method") == "obsp" else None
        return spot_graph(spots, n_neighs=int(rule.get("n_neighs", n_neighs)), connectivity_key=key, by_distance=True)

    def require_encoder(self, provenance: Mapping[str, Any], asked: Any) -> None:
        """Raise :class:`~stfuse.InputError` when image features come from another encoder than the model's."""
        trained = self.image_encoder or {}
        if all(str(trained.get(k)) == str(provenance.get(k)) for k in _ENCODER_KEYS):
            return
        raise InputError(
            f"The model was trained on image features of encoder {trained.get('encoder')!r} (checksum "
            f"{trained.get('checksum')}); encoder={asked!r} gives {provenance.get('encoder')!r} "
            f"(checksum {provenance.get('checksum')}). Pass the encoder the model was trained with."
        )

    @property
    def tile_spec(self) -> dict[str, Any]:
        """:attr:`tile`, or the default tile of models saved without one."""
        return dict(self.tile) if self.tile is not None else dict(DEFAULT_TILE)


def _plain(v: Any) -> Any:
    if isinstance(v, Mapping):
        return {str(k): _plain(x) for k, x in v.items()}
    if isinstance(v, list | tuple | set | frozenset):
        return [_plain(x) for x in v]
    if isinstance(v, np.generic):
        return v.item()
    return v
