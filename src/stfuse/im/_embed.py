"""Embed every spot's patch with an encoder; cache the result in ``obsm`` with its provenance."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from .. import _keys as K
from .. import _logging as log
from .._docs import inject_docs
from .._settings import settings
from .._spots import Spots, get_spots
from .._version import __version__
from ._encoders import Encoder, get_encoder
from ._patches import iter_patches, patch_side_px

__all__ = ["ImageFeatures", "embed", "image_features"]


@dataclass
class ImageFeatures:
    """Image features of every spot and how they were made.

    ``X`` is ``(n_obs, d)`` float32 in table order; ``obsm_key`` and ``provenance`` are what
    :meth:`stfuse._spots.Spots.write` stores (``embeddings=[features]``) so the next tool reuses them.
    """

    X: np.ndarray
    obsm_key: str
    provenance: dict[str, Any]
    cached: bool


def _provenance(enc: Encoder, spots: Spots, side_px: float) -> dict[str, Any]:
    return {**enc.provenance(), "patch_side_px": round(float(side_px), 3), "image_key": spots.image_key or "",
            "stfuse_version": __version__}


def _matches(old: Any, new: dict[str, Any]) -> bool:
    if not isinstance(old, dict) or new.get("checksum") is None:
        return False
    keys = ("encoder", "checksum", "input_px", "output_dim", "patch_side_px", "image_key")
    return all(str(old.get(k)) == str(new.get(k)) for k in keys)


def image_features(
    spots: Spots,
    encoder: str | Encoder | Callable = "histospace",
    *,
    size: float | None = None,
    size_um: float | None = None,
    size_px: float | None = None,
    weights: str | os.PathLike | None = None,
    obsm_key: str | None = None,
    batch_size: int = 64,
    device: str = "auto",
) -> ImageFeatures:
    """Features of every spot's patch: from the ``obsm`` cache when its provenance matches, else computed.

    This is what the tools call; nothing is written to the user's object here.
    """
    device = settings.resolve_device(device)
    enc = get_encoder(encoder, weights=weights, device=device)
    side = patch_side_px(spots, size=size, size_um=size_um, size_px=size_px)
    obsm_key = obsm_key or K.obsm(enc.name.replace(":", "_"))
    prov = _provenance(enc, spots, side)
    old = spots.table.uns.get(K.EMBEDDINGS, {})
    old = old.get(obsm_key) if hasattr(old, "get") else None
    cached = spots.table.obsm.get(obsm_key) if obsm_key in spots.table.obsm else None
    if cached is not None and _matches(old, prov) and np.shape(cached) == (spots.n_obs, enc.output_dim):
        log.info(f"using cached image embedding obsm[{obsm_key!r}]")
        return ImageFeatures(np.asarray(cached, dtype=np.float32), obsm_key, dict(old), True)
    X = np.empty((spots.n_obs, enc.output_dim), np.float32)
    n_batches = -(-spots.n_obs // batch_size)
    for batch in log.progress(iter_patches(spots, side, out_px=enc.input_px, batch_size=batch_size),
                              desc=f"embedding ({enc.name})", total=n_batches):
        X[batch.index] = enc(batch.patches)
    log.info(f"embedded {spots.n_obs} spots with {enc.name} ({enc.output_dim} features, patch {side:.0f} px)")
    return ImageFeatures(X, obsm_key, prov, False)


@inject_docs
def embed(
    sdata: Any,
    encoder: str | Encoder | Callable = "histospace",
    *,
    size: float | None = None,
    size_um: float | None = None,
    size_px: float | None = None,
    weights: str | os.PathLike | None = None,
    key_added: str | None = None,
    batch_size: int = 64,
    device: str = "auto",
    table_key: str = K.TABLE,
    shapes_key: str | None = None,
    image_key: str | None = None,
    copy: bool = False,
) -> Any:
    """Embed the image patch of every spot with an image encoder.

    Patches are extracted lazily (:func:`stfuse.im.extract_patches`), encoded in batches on
    ``device`` with a progress bar, and stored in ``obsm[f"X_{key_added}"]``. The encoder, its
    weights checksum and the patch size are recorded in ``uns["stfuse_embeddings"]``, so calling
    ``embed`` again — or a tool that needs the same features — reuses the cached result.

    Parameters
    ----------
    %(sdata)s
    encoder
        ``"histospace"`` (default; shipped weights, offline), ``"resnet50"`` (ImageNet), ``"timm:<model>"``,
        an :class:`stfuse.im.Encoder`, or a ``torch.nn.Module`` mapping image batches to features.
        See :func:`stfuse.im.get_encoder`.
    size, size_um, size_px
        Patch side in spot diameters (default 1), µm, or level-0 pixels.
    weights
        Local weights file for a named encoder.
    key_added
        ``obsm`` key suffix; default the encoder name (``X_histospace``, ``X_resnet50``).
    batch_size
        Patches per batch.
    %(device)s
    %(table_key)s
    %(shapes_key)s
    %(image_key)s
    %(copy)s

    %(returns_inplace)s

    Examples
    --------
    >>> import stfuse as sf
    >>> sdata = sf.datasets.toy(n_spots=100)
    >>> sf.im.embed(sdata)  # doctest: +SKIP
    >>> sdata.tables["table"].obsm["X_histospace"].shape  # doctest: +SKIP
    (100, 256)
    """
    spots = get_spots(sdata, table_key=table_key, shapes_key=shapes_key, image_key=image_key, need_image=True,
                      image_hint="Attach the section's H&E image to the SpatialData.")
    feats = image_features(spots, encoder, size=size, size_um=size_um, size_px=size_px, weights=weights,
                           obsm_key=K.obsm(key_added) if key_added else None, batch_size=batch_size, device=device)
    if feats.cached:
        return spots.write(None, copy=copy) if copy else None
    return spots.write(None, embeddings=[feats], copy=copy)
