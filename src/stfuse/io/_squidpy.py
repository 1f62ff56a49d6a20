"""squidpy/scanpy's ``uns["spatial"][library_id]`` for stfuse tables.

squidpy (``sq.pl.spatial_scatter``) and scanpy (``sc.pl.spatial``) read the image and the spot size
of a table from ``uns["spatial"][library_id]``: ``images`` (``"hires"``/``"lowres"``, ``(y, x, 3)``),
``scalefactors`` (``tissue_{res}_scalef``: image pixels per unit of ``obsm["spatial"]``;
``spot_diameter_fullres``: spot diameter in units of ``obsm["spatial"]``) and ``metadata``. The readers
add that entry with small thumbnails of the SpatialData's image, which stays the source of truth:
the hires thumbnail is at most :data:`HIRES_MAX` pixels and half the image's resolution on its
longer side, the lowres one at most :data:`LOWRES_MAX` pixels.

``library_id`` is the name of the spot circles, i.e. the value of ``obs["library_id"]``, so
``library_key="library_id"`` works for tables concatenated from several sections.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import numpy as np

from .. import _keys as K
from .. import _logging as log
from .._errors import InputError, StfuseError
from .._spots import Spots, get_spots, is_spatialdata

__all__ = ["HIRES_MAX", "LOWRES_MAX", "add_spatial_uns", "file_thumbnail", "library_entry", "thumbnail_scale"]

#: longest side of the ``hires`` thumbnail, as Space Ranger writes it
HIRES_MAX = 2000
#: longest side of the ``lowres`` thumbnail, as Space Ranger writes it
LOWRES_MAX = 600


def thumbnail_scale(height: int, width: int) -> float:
    """Scale of the ``hires`` thumbnail of an image of ``height`` × ``width`` pixels.

    At most :data:`HIRES_MAX` pixels on the longer side and at most half the resolution, so the
    thumbnail never duplicates the image.

    Examples
    --------
    >>> from stfuse.io._squidpy import thumbnail_scale
    >>> thumbnail_scale(10_000, 8_000), thumbnail_scale(1_000, 1_200)
    (0.2, 0.5)
    """
    return min(HIRES_MAX / max(height, width, 1), 0.5)


def _resize(image: np.ndarray, scale: float) -> tuple[np.ndarray, float]:
    """``(y, x, 3)`` uint8 ``image`` resized by ``scale`` (area averaging); the result and its exact x scale."""
    from PIL import Image

    h, w = image.shape[:2]
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    if size == (w, h):
        return image, 1.0
    out = np.asarray(Image.fromarray(image).resize(size, Image.Resampling.BOX))
    return out, size[0] / w


def file_thumbnail(path: str | os.PathLike, scale: float) -> np.ndarray:
    """``(y, x, 3)`` uint8 thumbnail of an image file at ``scale`` of its pixels.

    JPEGs are decoded at reduced size (``PIL.Image.draft``), so a 10,000 px section costs a fraction of
    a full decode and nothing stays in memory but the thumbnail.

    Examples
    --------
    >>> from stfuse.io._squidpy import file_thumbnail
    >>> file_thumbnail("section.jpg", 0.2).shape  # doctest: +SKIP
    (1982, 1855, 3)
    """
    from PIL import Image

    old = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = None
    try:
        with Image.open(path) as im:
            w, h = im.size
            size = (max(1, round(w * scale)), max(1, round(h * scale)))
            im.draft("RGB", size)
            try:
                rgb = im.convert("RGB")
            except OSError as e:
                raise InputError(f"Image file {str(path)!r} is corrupted or truncated ({e}).") from None
            if rgb.size != size:
                rgb = rgb.resize(size, Image.Resampling.BOX)
            return np.asarray(rgb)
    finally:
        Image.MAX_IMAGE_PIXELS = old


def library_entry(
    *,
    spot_diameter_fullres: float,
    hires: np.ndarray | None = None,
    hires_scalef: float | None = None,
    spot_diameter_um: float | None = None,
    metadata: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """One ``uns["spatial"][library_id]`` entry in squidpy/scanpy's layout.

    Parameters
    ----------
    spot_diameter_fullres
        Spot diameter in units of ``obsm["spatial"]``.
    hires
        ``(y, x, 3)`` uint8 thumbnail; ``lowres`` is made from it (at most :data:`LOWRES_MAX` pixels).
        Without one, ``images`` is empty and both scale factors are 1.
    hires_scalef
        Pixels of ``hires`` per unit of ``obsm["spatial"]``.
    spot_diameter_um
        Physical spot diameter, kept in ``scalefactors["spot_diameter_um"]`` (stfuse reads it back for
        µm-sized patches and scale bars; squidpy and scanpy ignore it).
    metadata
        Strings recorded in ``metadata`` (platform, source image element).

    Returns
    -------
    ``{"images": {"hires", "lowres"}, "scalefactors": {...}, "metadata": {...}}``.

    Examples
    --------
    >>> import numpy as np
    >>> from stfuse.io._squidpy import library_entry
    >>> e = library_entry(spot_diameter_fullres=24.0, hires=np.zeros((700, 1500, 3), np.uint8), hires_scalef=0.5)
    >>> e["images"]["lowres"].shape, e["scalefactors"]["tissue_lowres_scalef"]
    ((280, 600, 3), 0.2)
    """
    images: dict[str, np.ndarray] = {}
    scalefactors: dict[str, float] = {"spot_diameter_fullres": float(spot_diameter_fullres)}
    if hires is not None:
        hires = np.ascontiguousarray(hires, dtype=np.uint8)
        lowres, rel = _resize(hires, min(1.0, LOWRES_MAX / max(hires.shape[:2])))
        images = {"hires": hires, "lowres": np.ascontiguousarray(lowres)}
        scalefactors["tissue_hires_scalef"] = float(hires_scalef)
        scalefactors["tissue_lowres_scalef"] = float(hires_scalef) * rel
    else:
        scalefactors["tissue_hires_scalef"] = scalefactors["tissue_lowres_scalef"] = 1.0
    if spot_diameter_um:
        scalefactors["spot_diameter_um"] = float(spot_diameter_um)
    meta = {str(k): str(v) for k, v in (metadata or {}).items() if v is not None}
    return {"images": images, "scalefactors": scalefactors, "metadata": meta}


def _finest(sdata: Any, table_key: str) -> Spots:
    """Spots of ``table_key`` on the finest image that shares a coordinate system with them (or none)."""
    best = None
    for key in sdata.images:
        try:
            spots = get_spots(sdata, table_key=table_key, image_key=key)
        except StfuseError:
            continue
        if best is None or spots.diameter > best.diameter:
            best = spots
    return best if best is not None else get_spots(sdata, table_key=table_key, image_key=None)


def add_spatial_uns(sdata: Any, *, metadata: Mapping[str, Any] | None = None) -> None:
    """Add ``uns["spatial"][library_id]`` to each table of ``sdata`` that lacks it, from its image element.

    The thumbnail comes from the finest image sharing a coordinate system with the spots (the
    coarsest pyramid level that is still fine enough is computed, then resized). Tables whose spots
    cannot be resolved, or whose ``obsm["spatial"]`` is not a scaling of the image's pixels, are left
    as they are (with a warning in the second case).

    Examples
    --------
    >>> import stfuse as sf
    >>> from stfuse.io._squidpy import add_spatial_uns
    >>> sdata = sf.datasets.toy(n_spots=100)
    >>> del sdata.tables["table"].uns["spatial"]
    >>> add_spatial_uns(sdata)
    >>> list(sdata.tables["table"].uns["spatial"])
    ['toy_spots']
    """
    if not is_spatialdata(sdata):
        return
    for table_key, table in sdata.tables.items():
        if isinstance(table.uns.get(K.SPATIAL), Mapping) and len(table.uns[K.SPATIAL]):
            continue
        try:
            spots = _finest(sdata, table_key)
        except StfuseError as e:
            log.debug(f"no uns['spatial'] for table {table_key!r}: {e}")
            continue
        xy = np.asarray(table.obsm.get(K.SPATIAL, np.empty((0, 2))), dtype=np.float64)[:, :2]
        if xy.shape[0] != spots.n_obs or not np.any(xy):
            continue
        # level-0 pixels per unit of obsm["spatial"]: a pure scaling for the readers' tables
        s0 = float(np.sum(spots.centers * xy) / np.sum(xy * xy))
        if not np.allclose(spots.centers, s0 * xy, rtol=1e-6, atol=0.5):
            log.warning(
                f"obsm['spatial'] of table {table_key!r} is not a scaling of the pixels of image "
                f"{spots.image_key!r}; not adding uns['spatial'] (squidpy/scanpy plots need img=False)."
            )
            continue
        hires, scalef = None, None
        if spots.has_image:
            h, w = spots.levels[0].shape_yx
            target = thumbnail_scale(h, w)
            level = min((lv for lv in spots.levels if lv.scale >= target * (1 - 1e-9)), key=lambda lv: lv.scale)
            hires, rel = _resize(level.read_rgb().transpose(1, 2, 0), target / level.scale)
            scalef = s0 * level.scale * rel
        meta = {"image_key": spots.image_key, **(metadata or {})}
        table.uns[K.SPATIAL] = {
            spots.shapes_key: library_entry(
                spot_diameter_fullres=spots.diameter / s0, hires=hires, hires_scalef=scalef,
                spot_diameter_um=spots.microns_per_pixel * spots.diameter if spots.microns_per_pixel else None,
                metadata=meta,
            )
        }
