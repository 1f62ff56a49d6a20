"""Embed every spot's patch with an encoder; cache the result in ``obsm`` with its provenance."""

from __future__ import annotations

import copy as _copy
import dataclasses
import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from .. import _keys as K
from .. import _logging as log
from .._docs import inject_docs
from .._errors import InputError
from .._settings import settings
from .._spots import Spots, get_spots, selection
from .._version import __version__
from ._encoders import DEFAULT_ENCODER, Encoder, get_encoder
from ._patches import fit_stain, iter_patches, patch_side_px
from ._stain import StainMethod, StainNormalizer, _digest

__all__ = ["ImageFeatures", "embed", "embedding_key", "image_features"]


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


_CACHE_KEYS = ("encoder", "checksum", "input_px", "output_dim", "patch_side_px", "image_key", "stain", "stain_target",
               "stain_source")


def _stain_provenance(stain: StainMethod | StainNormalizer | None) -> dict[str, str]:
    if stain is None:
        return {"stain": "none", "stain_target": "", "stain_source": ""}
    if isinstance(stain, StainNormalizer):
        src = "identity" if stain.identity else _digest(stain.source) if stain.source is not None else "unfitted"
        return {**stain.provenance(), "stain_source": src}
    if stain not in ("macenko", "reinhard"):
        raise InputError(f"stain must be None, 'macenko', 'reinhard' or a fitted sf.im.StainNormalizer; got {stain!r}.")
    return {"stain": stain, "stain_target": "reference", "stain_source": "slide"}  # fitted on this slide's spots


def _provenance(enc: Encoder, spots: Spots, side_px: float, stain: Any = None) -> dict[str, Any]:
    um = None if spots.microns_per_pixel is None else round(float(side_px) * spots.microns_per_pixel, 2)
    return {**enc.provenance(), "patch_side_px": round(float(side_px), 3), "patch_side_um": um,
            "image_key": spots.image_key or "", **_stain_provenance(stain), "stfuse_version": __version__}


def embedding_key(encoder: str, spots: Spots, side_px: float, stain: str = "none") -> str:
    """The ``obsm`` key of image features: encoder, patch physical side and stain, e.g. ``X_tissue_200um``.

    Features of another patch size or stain get their own entry, so tools that need different
    patches never overwrite each other's. The side is in µm when the pixel size is known, else in
    level-0 pixels (``X_tissue_290px``).

    Examples
    --------
    >>> import stfuse as sf
    >>> from stfuse._spots import get_spots
    >>> spots = get_spots(sf.datasets.toy(n_spots=100))
    >>> sf.im.embedding_key("tissue", spots, spots.diameter)
    'X_tissue_55um'
    """
    side = f"{round(side_px * spots.microns_per_pixel)}um" if spots.microns_per_pixel else f"{round(side_px)}px"
    suffix = "" if stain in (None, "none") else f"_{stain}"
    return K.obsm(f"{encoder.replace(':', '_')}_{side}{suffix}")


def _matches(old: Any, new: dict[str, Any]) -> bool:
    if not hasattr(old, "get") or new.get("checksum") is None:
        return False
    old = {"stain": "none", "stain_target": "", "stain_source": "", **dict(old)}  # caches from before stain existed
    return all(str(old.get(k)) == str(new.get(k)) for k in _CACHE_KEYS)


def _active_client(client: Any) -> Any:
    """The dask distributed client to embed with: given, the active one (``None``), or none (``False``)."""
    if client is False:
        return None
    if client is not None and client is not True:
        return client
    try:
        from distributed import default_client, get_worker
    except ImportError:
        if client is True:
            raise InputError("client=True needs dask distributed: `pip install distributed`.") from None
        return None
    try:
        get_worker()
        return None  # already inside a worker task: do not fan out again
    except ValueError:
        pass
    try:
        return default_client()
    except ValueError:
        if client is True:
            raise InputError("client=True but no dask distributed Client is active; start one with "
                             "distributed.Client() (or pass the client).") from None
        return None


def _embed_chunk(payload: tuple, index: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Embed the spots ``index`` (runs on a dask worker; ``payload`` is scattered to every worker once)."""
    spots, side, enc, stain, batch_size, device = payload
    enc = enc.to(device)
    idx, feats = [], []
    for batch in iter_patches(spots, side, out_px=enc.input_px, batch_size=batch_size, index=index, stain=stain):
        idx.append(batch.index)
        feats.append(enc(batch.patches))
    return np.concatenate(idx), np.concatenate(feats).astype(np.float32, copy=False)


def _embed_distributed(client: Any, spots: Spots, side: float, enc: Encoder, stain: StainNormalizer | None,
                       batch_size: int, device: str, X: np.ndarray) -> None:
    from distributed import as_completed

    n_workers = max(1, len(client.scheduler_info().get("workers", {})))
    n_chunks = int(max(1, min(-(-spots.n_obs // batch_size), 4 * n_workers)))
    # spatially compact chunks (row-major over the slide), so each worker reads few image regions
    order = np.lexsort((spots.centers[:, 0], spots.centers[:, 1]))
    chunks = [c for c in np.array_split(order, n_chunks) if len(c)]
    light = dataclasses.replace(spots, data=None, table=None)  # geometry + lazy image only; the image pickles by path
    if isinstance(enc.module, torch.nn.Module):  # ship a CPU copy; each worker moves it to `device`
        enc = dataclasses.replace(enc, module=_copy.deepcopy(enc.module).to("cpu"))
    [payload] = client.scatter([(light, side, enc, stain, batch_size, device)], broadcast=True, hash=False)
    futures = client.map(_embed_chunk, [payload] * len(chunks), chunks, pure=False)
    log.info(f"embedding {spots.n_obs} spots in {len(chunks)} chunks on {n_workers} dask workers")
    for fut in log.progress(as_completed(futures), desc=f"embedding ({enc.name}, dask)", total=len(futures)):
        idx, feats = fut.result()
        X[idx] = feats
    client.cancel([payload, *futures])


def image_features(
    spots: Spots,
    encoder: str | Encoder | Callable = DEFAULT_ENCODER,
    *,
    size: float | None = None,
    size_um: float | None = None,
    size_px: float | None = None,
    weights: str | os.PathLike | None = None,
    obsm_key: str | None = None,
    batch_size: int = 64,
    device: str = "auto",
    stain: StainMethod | StainNormalizer | None = None,
    client: Any = None,
) -> ImageFeatures:
    """Features of every spot's patch: from the ``obsm`` cache when its provenance matches, else computed.

    This is what the tools call; nothing is written to the user's object here. Parameters are those
    of :func:`stfuse.im.embed` (``obsm_key`` is the full key, e.g. ``"X_histospace_55um"``).

    Returns
    -------
    :class:`ImageFeatures`: ``X`` ``(n_obs, d)`` float32 in table order, the ``obsm`` key, the
    provenance to record, and whether it came from the cache. Pass it to
    :meth:`stfuse._spots.Spots.write` (``embeddings=[features]``) to store it.

    Examples
    --------
    >>> import stfuse as sf
    >>> from stfuse._spots import get_spots
    >>> spots = get_spots(sf.datasets.toy(n_spots=100))
    >>> feats = sf.im.image_features(spots, "histospace", batch_size=100)
    >>> feats.X.shape, feats.obsm_key, feats.cached
    ((100, 256), 'X_histospace_55um', False)
    """
    if batch_size < 1:
        raise InputError(f"batch_size must be positive, got {batch_size}.")
    device = settings.resolve_device(device)
    enc = get_encoder(encoder, weights=weights, device=device)
    side = patch_side_px(spots, size=size, size_um=size_um, size_px=size_px)
    prov = _provenance(enc, spots, side, stain)
    obsm_key = obsm_key or embedding_key(enc.name, spots, side, prov["stain"])
    old = spots.table.uns.get(K.EMBEDDINGS, {})
    old = old.get(obsm_key) if hasattr(old, "get") else None
    cached = spots.table.obsm.get(obsm_key) if obsm_key in spots.table.obsm else None
    if cached is not None and _matches(old, prov) and np.shape(cached) == (spots.n_obs, enc.output_dim):
        log.info(f"using cached image embedding obsm[{obsm_key!r}]")
        return ImageFeatures(np.asarray(cached, dtype=np.float32), obsm_key, dict(old), True)
    if cached is not None:
        was = {k: (old or {}).get(k) for k in ("encoder", "checksum", "patch_side_um", "patch_side_px", "stain")}
        warnings.warn(f"obsm[{obsm_key!r}] holds image features made otherwise ({was}); they will be replaced by "
                      f"{prov['encoder']} features of {side:.0f} px patches. Pass another key to keep both.",
                      UserWarning, stacklevel=3)
    spots.require_image("Image embedding", fix="Attach the section's H&E image to the SpatialData.")
    level = spots.level_for_patch(side, enc.input_px)
    normalizer = fit_stain(spots, side, stain, out_px=enc.input_px, level=level) if stain is not None else None
    if normalizer is not None:
        prov["stain_params"] = normalizer.params()
    X = np.empty((spots.n_obs, enc.output_dim), np.float32)
    dask_client = _active_client(client)
    if dask_client is not None:
        _embed_distributed(dask_client, spots, side, enc, normalizer, batch_size, device, X)
    else:
        n_batches = -(-spots.n_obs // batch_size)
        for batch in log.progress(iter_patches(spots, side, out_px=enc.input_px, batch_size=batch_size, level=level,
                                               stain=normalizer),
                                  desc=f"embedding ({enc.name})", total=n_batches):
            X[batch.index] = enc(batch.patches)
    log.info(f"embedded {spots.n_obs} spots with {enc.name} ({enc.output_dim} features, patch {side:.0f} px"
             + (f", {normalizer.method} stain normalisation)" if normalizer is not None else ")"))
    return ImageFeatures(X, obsm_key, prov, False)


@inject_docs
def embed(
    sdata: Any,
    encoder: str | Encoder | Callable = DEFAULT_ENCODER,
    *,
    size: float | None = None,
    size_um: float | None = None,
    size_px: float | None = None,
    weights: str | os.PathLike | None = None,
    key_added: str | None = None,
    batch_size: int = 64,
    device: str = "auto",
    stain: StainMethod | StainNormalizer | None = None,
    client: Any = None,
    table_key: str | None = None,
    shapes_key: str | None = None,
    image_key: str | None = None,
    library_id: str | None = None,
    library_key: str | None = None,
    coordinate_system: str | None = None,
    copy: bool = False,
) -> Any:
    """Embed the image patch of every spot with an image encoder.

    Patches are extracted lazily (:func:`stfuse.im.extract_patches`), encoded in batches on
    ``device`` with a progress bar, and stored in ``obsm[f"X_{key_added}"]``. The encoder, its
    weights checksum, the patch size and the stain normalisation are recorded in
    ``uns["stfuse_embeddings"]``, so calling ``embed`` again — or a tool that needs the same
    features — reuses the cached result.

    **Parallel embedding with dask.** When a :class:`distributed.Client` is active (or given as
    ``client``), the spots are split into spatially compact chunks (about four per worker) that the
    workers embed in parallel: the encoder, the spot geometry and the lazy image are scattered to
    every worker once (an image file travels as its path, and each worker process decodes it once,
    however many chunks it runs; the stain normaliser is fitted once here and shared). Results equal
    the single-process ones. Give each worker one thread (``threads_per_worker=1``) and let torch
    use it; ``client=False`` embeds in this process even with a client active.

    Parameters
    ----------
    %(sdata)s
    encoder
        ``"tissue"`` (default; shipped weights, offline), ``"histospace"`` (shipped), ``"resnet50"`` (ImageNet),
        ``"timm:<model>"``,
        an :class:`stfuse.im.Encoder`, or a ``torch.nn.Module`` mapping image batches to features.
        See :func:`stfuse.im.get_encoder`.
    size, size_um, size_px
        Patch side in spot diameters (default 1), µm, or level-0 pixels.
    weights
        Local weights file for a named encoder.
    key_added
        ``obsm`` key suffix; default the encoder name, the patch's physical side and the stain
        (:func:`embedding_key`: ``X_tissue_55um``, ``X_resnet50_200um_macenko``), so features of other
        patch sizes get their own entries. Reusing a key that holds other features warns and replaces them.
    batch_size
        Patches per batch.
    %(device)s
    stain
        Stain normalisation of the patches: ``None`` (default), ``"macenko"`` or ``"reinhard"`` (fitted
        once on 128 spots of the slide, normalised to the literature reference), or a fitted
        :class:`stfuse.im.StainNormalizer`. Part of the cache key.
    client
        dask distributed client: ``None`` uses the active one if any, ``False`` never, or a client.
    %(table_key)s
    %(shapes_key)s
    %(image_key)s
    %(library_id)s
    %(library_key)s
    %(coordinate_system)s
    %(copy)s

    %(returns_inplace)s

    Examples
    --------
    >>> import stfuse as sf
    >>> sdata = sf.datasets.toy(n_spots=100)
    >>> sf.im.embed(sdata)
    >>> sdata.tables["table"].obsm["X_tissue_55um"].shape
    (100, 384)
    >>> sdata.tables["table"].uns["stfuse_embeddings"]["X_tissue_55um"]["stain"]
    'none'

    In parallel on a local dask cluster:

    >>> from distributed import Client, LocalCluster  # doctest: +SKIP
    >>> with LocalCluster(n_workers=2, threads_per_worker=1) as cluster, Client(cluster):  # doctest: +SKIP
    ...     sf.im.embed(sdata, stain="macenko", key_added="tissue_macenko")
    """
    spots = get_spots(sdata, **selection(locals()), need_image=True,
                      image_hint="Attach the section's H&E image to the SpatialData.")
    feats = image_features(spots, encoder, size=size, size_um=size_um, size_px=size_px, weights=weights,
                           obsm_key=K.obsm(key_added) if key_added else None, batch_size=batch_size, device=device,
                           stain=stain, client=client)
    if feats.cached:
        return spots.write(None, copy=copy) if copy else None
    return spots.write(None, embeddings=[feats], copy=copy)
