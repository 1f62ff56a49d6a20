"""Square patches around spots, read lazily from the best image level, in bounded-memory batches."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from .._docs import inject_docs
from .._errors import InputError
from .._spots import Spots, get_spots, selection, to_uint8_rgb
from ._stain import StainMethod, StainNormalizer

__all__ = ["PatchBatch", "extract_patches", "fit_stain", "iter_patches", "patch_side_px"]

#: side (level pixels) of the image tiles whose spots are read together (plus half a patch margin)
READ_TILE = 1024
#: spots sampled (evenly over the table) to fit a slide's stain normaliser
STAIN_FIT_SPOTS = 128


@dataclass
class PatchBatch:
    """One batch of patches.

    Attributes
    ----------
    index
        ``(b,)`` row positions of the spots in the table.
    patches
        ``(b, 3, out_px, out_px)`` uint8 RGB.
    inside
        ``(b,)`` fraction of each patch that lies inside the image (the rest is padded white).
    """

    index: np.ndarray
    patches: np.ndarray
    inside: np.ndarray


def patch_side_px(spots: Spots, *, size: float | None = None, size_um: float | None = None,
                  size_px: float | None = None) -> float:
    """Patch side in level-0 pixels from one of: spot diameters, microns, pixels (default 1 diameter).

    Examples
    --------
    >>> import stfuse as sf
    >>> from stfuse._spots import get_spots
    >>> spots = get_spots(sf.datasets.toy(n_spots=100))
    >>> sf.im.patch_side_px(spots), round(sf.im.patch_side_px(spots, size_um=110), 1)
    (24.0, 48.0)
    """
    given = [v is not None for v in (size, size_um, size_px)]
    if sum(given) > 1:
        raise InputError("Give the patch side once: size (spot diameters), size_um (µm) or size_px (pixels).")
    if size_um is not None:
        if spots.microns_per_pixel is None:
            raise InputError(
                f"size_um needs the physical pixel size, unknown for section {spots.name!r}; give size= (in spot "
                "diameters) or size_px= instead, or record table.uns['stfuse'][shapes_key]['spot_diameter_um']."
            )
        side = float(size_um) / spots.microns_per_pixel
    elif size_px is not None:
        side = float(size_px)
    else:
        side = float(1.0 if size is None else size) * spots.diameter
    if not side >= 2:
        raise InputError(f"The patch side must be at least 2 pixels, got {side:.3g}.")
    return side


def _resize(patches: np.ndarray, out_px: int) -> np.ndarray:
    """Area-averaging resize of ``(b, 3, s, s)`` uint8 patches to ``out_px`` (torch, antialiased)."""
    if patches.shape[-1] == out_px:
        return patches
    import torch
    import torch.nn.functional as F

    t = torch.from_numpy(patches).float()
    t = F.interpolate(t, size=(out_px, out_px), mode="bilinear", antialias=True, align_corners=False)
    return t.round_().clamp_(0, 255).to(torch.uint8).numpy()


def iter_patches(
    spots: Spots,
    side_px: float,
    *,
    out_px: int | None = None,
    batch_size: int = 64,
    index: np.ndarray | None = None,
    level: int | None = None,
    pad_value: int = 255,
    centers: np.ndarray | None = None,
    stain: StainMethod | StainNormalizer | None = None,
) -> Iterator[PatchBatch]:
    """Yield :class:`PatchBatch` es of patches of ``side_px`` level-0 pixels (array-level API).

    Spots are grouped by the image tile (whole chunks, at least 1024 px) holding their centre; the
    bounding box of each group's patches is read once, so the slide is never materialised and memory
    stays bounded by one tile (plus a margin of half a patch) and one batch. ``centers`` (``(n, 2)`` ``x, y`` in level-0 pixels) replaces the spot centres,
    e.g. to cut tiles between spots; ``index`` then refers to its rows. ``stain`` normalises the
    stains of every batch with one normaliser for the whole slide (fitted here by :func:`fit_stain`
    when given as a method name).

    Examples
    --------
    >>> import stfuse as sf
    >>> from stfuse._spots import get_spots
    >>> spots = get_spots(sf.datasets.toy(n_spots=100))
    >>> batch = next(sf.im.iter_patches(spots, 2 * spots.spacing(), out_px=32, batch_size=10))
    >>> batch.patches.shape, batch.patches.dtype
    ((10, 3, 32, 32), dtype('uint8'))
    """
    spots.require_image("Patch extraction", fix="Attach an H&E image to the section (sf.io.read_st(..., image=...)).")
    out_px = round(side_px) if out_px is None else int(out_px)
    if out_px < 1:
        raise InputError(f"out_px must be positive, got {out_px}.")
    if batch_size < 1:
        raise InputError(f"batch_size must be positive, got {batch_size}.")
    if level is None:
        level = spots.level_for_patch(side_px, out_px)
    if stain is not None:
        stain = fit_stain(spots, side_px, stain, out_px=out_px, level=level, centers=centers)
    lvl = spots.levels[level]
    arr = lvl.data
    H, W = lvl.shape_yx
    side = side_px * lvl.scale
    n_side = max(1, round(side))
    all_centres = spots.centers if centers is None else np.asarray(centers, dtype=np.float64).reshape(-1, 2)
    idx_all = np.arange(len(all_centres)) if index is None else np.asarray(index, dtype=np.int64)
    if not len(idx_all):  # nothing to cut (e.g. a section held out whole): no batches
        return
    centres = all_centres[idx_all] * lvl.scale
    # top-left corner in this level's pixels; the patch is n_side x n_side around the centre
    y0 = np.floor(centres[:, 1] - n_side / 2.0 + 0.5).astype(np.int64)
    x0 = np.floor(centres[:, 0] - n_side / 2.0 + 0.5).astype(np.int64)

    # group spots by read tiles of whole chunks, at least READ_TILE px: one dask compute per group (each
    # compute costs ~10 ms of graph handling, so per-chunk groups of small chunks would dominate)
    ty = arr.chunks[1][0] * max(1, -(-READ_TILE // arr.chunks[1][0]))
    tx = arr.chunks[2][0] * max(1, -(-READ_TILE // arr.chunks[2][0]))
    gy = np.clip(centres[:, 1] // ty, 0, max((H - 1) // ty, 0)).astype(np.int64)
    gx = np.clip(centres[:, 0] // tx, 0, max((W - 1) // tx, 0)).astype(np.int64)
    order = np.lexsort((x0, y0, gx, gy))

    buf_idx: list[int] = []
    buf_patch: list[np.ndarray] = []
    buf_inside: list[float] = []
    starts = np.flatnonzero(np.r_[True, (np.diff(gy[order]) != 0) | (np.diff(gx[order]) != 0)])
    ends = np.r_[starts[1:], len(order)]
    for s, e in zip(starts, ends):
        group = order[s:e]
        ry0 = max(int(y0[group].min()), 0)
        rx0 = max(int(x0[group].min()), 0)
        ry1 = min(int(y0[group].max()) + n_side, H)
        rx1 = min(int(x0[group].max()) + n_side, W)
        region = None
        if ry1 > ry0 and rx1 > rx0:
            # synchronous: a small read, never shipped to a distributed cluster (nor deadlocking inside a worker task)
            region = to_uint8_rgb(np.asarray(arr[:, ry0:ry1, rx0:rx1].compute(scheduler="synchronous")))
        for j in group:
            patch = np.full((3, n_side, n_side), pad_value, np.uint8)
            ya, xa = y0[j], x0[j]
            yb, xb = ya + n_side, xa + n_side
            cy0, cx0, cy1, cx1 = max(ya, 0), max(xa, 0), min(yb, H), min(xb, W)
            inside = 0.0
            if region is not None and cy1 > cy0 and cx1 > cx0:
                patch[:, cy0 - ya : cy1 - ya, cx0 - xa : cx1 - xa] = region[:, cy0 - ry0 : cy1 - ry0, cx0 - rx0 : cx1 - rx0]
                inside = (cy1 - cy0) * (cx1 - cx0) / float(n_side * n_side)
            buf_idx.append(int(idx_all[j]))
            buf_patch.append(patch)
            buf_inside.append(inside)
            if len(buf_idx) == batch_size:
                yield _batch(buf_idx, buf_patch, buf_inside, out_px, stain)
                buf_idx, buf_patch, buf_inside = [], [], []
    if buf_idx:
        yield _batch(buf_idx, buf_patch, buf_inside, out_px, stain)


def _batch(idx: list[int], patches: list[np.ndarray], inside: list[float], out_px: int,
           stain: StainNormalizer | None) -> PatchBatch:
    out = _resize(np.stack(patches), out_px)
    if stain is not None:
        out = stain.transform(out)
    return PatchBatch(np.array(idx), out, np.array(inside))


def fit_stain(
    spots: Spots,
    side_px: float,
    method: StainMethod | StainNormalizer,
    *,
    out_px: int | None = None,
    level: int | None = None,
    centers: np.ndarray | None = None,
    n_spots: int = STAIN_FIT_SPOTS,
    target: Any = None,
) -> StainNormalizer:
    """Fit one stain normaliser for a slide on patches of an even sample of its spots (array-level API).

    A fitted :class:`StainNormalizer` given as ``method`` is returned as it is.

    Examples
    --------
    >>> import stfuse as sf
    >>> from stfuse._spots import get_spots
    >>> spots = get_spots(sf.datasets.toy(n_spots=100))
    >>> sf.im.fit_stain(spots, spots.diameter, "reinhard", n_spots=16).fitted
    True
    """
    if isinstance(method, StainNormalizer):
        if not method.fitted:
            raise InputError("The StainNormalizer given as stain= is not fitted; call .fit(patches) first or pass "
                             "stain='macenko' / 'reinhard' to fit it on this slide.")
        return method
    if method not in ("macenko", "reinhard"):
        raise InputError(f"stain must be None, 'macenko', 'reinhard' or a fitted sf.im.StainNormalizer; got {method!r}.")
    norm = StainNormalizer(method, target)
    n = len(spots.centers) if centers is None else len(centers)
    sample = np.unique(np.linspace(0, n - 1, min(n_spots, n)).round().astype(np.int64))
    patches = [b.patches for b in iter_patches(spots, side_px, out_px=out_px, batch_size=len(sample), index=sample,
                                               level=level, centers=centers)]
    return norm.fit(np.concatenate(patches))


@inject_docs
def extract_patches(
    sdata: Any,
    *,
    size: float | None = None,
    size_um: float | None = None,
    size_px: float | None = None,
    out_px: int | None = None,
    batch_size: int = 64,
    level: int | None = None,
    stain: StainMethod | StainNormalizer | None = None,
    table_key: str | None = None,
    shapes_key: str | None = None,
    image_key: str | None = None,
    library_id: str | None = None,
    library_key: str | None = None,
    coordinate_system: str | None = None,
) -> Iterator[PatchBatch]:
    """Square image patches centred on each spot, yielded in batches.

    Patches are read lazily from the coarsest image level that still gives ``out_px`` pixels per
    patch side (the full slide is never loaded twice), padded with white where they leave the
    image, and resized (antialiased) to ``out_px``.

    Parameters
    ----------
    %(sdata)s
    size
        Patch side in spot diameters (default 1).
    size_um
        Patch side in µm (needs the physical spot size, known for readers of stfuse).
    size_px
        Patch side in level-0 image pixels.
    out_px
        Side of the returned patches (default: the patch side in level-0 pixels).
    batch_size
        Patches per batch; memory is bounded by the batch and a few image chunks.
    level
        Force an image level (0 = full resolution).
    stain
        Stain normalisation: ``None`` (off), ``"macenko"`` or ``"reinhard"`` (one normaliser fitted on
        patches of 128 spots spread over the slide, then applied to every batch, so the whole slide is
        normalised consistently to the literature reference), or a fitted
        :class:`stfuse.im.StainNormalizer` (e.g. to map several slides to one reference slide).
    %(table_key)s
    %(shapes_key)s
    %(image_key)s
    %(library_id)s
    %(library_key)s
    %(coordinate_system)s

    Yields
    ------
    :class:`PatchBatch` with ``index`` (table rows), ``patches`` ``(b, 3, out_px, out_px)`` uint8 and
    ``inside`` (fraction of the patch inside the image). Batches follow the image layout, not the
    table order; use ``index``.

    Examples
    --------
    >>> import stfuse as sf
    >>> sdata = sf.datasets.toy(n_spots=100)
    >>> batch = next(sf.im.extract_patches(sdata, size=1.5, out_px=32, batch_size=16))
    >>> batch.patches.shape
    (16, 3, 32, 32)
    >>> normed = next(sf.im.extract_patches(sdata, out_px=32, stain="macenko"))
    """
    spots = get_spots(sdata, **selection(locals()), need_image=True,
                      image_hint="Attach the section's H&E image to the SpatialData.")
    side = patch_side_px(spots, size=size, size_um=size_um, size_px=size_px)
    if level is not None and not 0 <= level < len(spots.levels):
        raise InputError(f"level must be in 0..{len(spots.levels) - 1}, got {level}.")
    if stain is not None:  # fit now, so a bad choice fails here rather than at the first batch
        lvl = level if level is not None else spots.level_for_patch(side, round(side) if out_px is None else out_px)
        stain = fit_stain(spots, side, stain, out_px=out_px, level=lvl)
    return iter_patches(spots, side, out_px=out_px, batch_size=batch_size, level=level, stain=stain)
