"""A synthetic section whose regions need both expression and image to be told apart."""

from __future__ import annotations

from typing import Literal

import numba
import numpy as np
import pandas as pd

from .._errors import InputError
from .._settings import settings

__all__ = ["toy"]

REGIONS = ("A", "B", "C", "D")
#: texture of each region: A and B look alike (stroma); C is dense tumour-like, D adipose-like
TEXTURE = {0: 0, 1: 0, 2: 1, 3: 2}
#: expression programme of each region: C and D share theirs
PROGRAMME = {0: 0, 1: 1, 2: 2, 3: 2}
_TILE = 256  # texture generation tile (fixed, so the image does not depend on dask chunks)


def _layout(n_spots: int, spacing: float, lattice: str, margin: float):
    ncol = int(np.ceil(np.sqrt(n_spots)))
    nrow = int(np.ceil(n_spots / ncol))
    r, c = np.divmod(np.arange(n_spots), ncol)
    if lattice == "hex":
        x = margin + (c + 0.5 * (r % 2)) * spacing
        y = margin + r * spacing * np.sqrt(3) / 2
        height = 2 * margin + (nrow - 1) * spacing * np.sqrt(3) / 2
    else:
        x = margin + c * spacing
        y = margin + r * spacing
        height = 2 * margin + (nrow - 1) * spacing
    width = 2 * margin + (ncol - 0.5) * spacing
    return np.column_stack([x, y]), r, c, int(np.ceil(width)), int(np.ceil(height))


def _seeds(rng: np.random.Generator, width: int, height: int):
    """Six Voronoi seeds, one per cell of a 3 x 2 grid, so each region gets a sizeable area."""
    gx, gy = np.meshgrid(np.arange(3), np.arange(2))
    pts = np.column_stack([(gx.ravel() + rng.uniform(0.2, 0.8, 6)) / 3 * width,
                           (gy.ravel() + rng.uniform(0.2, 0.8, 6)) / 2 * height])
    regions = np.concatenate([rng.permutation(4), rng.integers(0, 4, 2)])
    return pts, regions


def _region_at(x: np.ndarray, y: np.ndarray, seeds: np.ndarray, seed_regions: np.ndarray, wave: float):
    # wavy Voronoi: perturb coordinates so boundaries are not straight lines
    xw = x + wave * np.sin(y / (7.0 * wave + 1e-9))
    yw = y + wave * np.sin(x / (5.0 * wave + 1e-9))
    d = (xw[..., None] - seeds[:, 0]) ** 2 + (yw[..., None] - seeds[:, 1]) ** 2
    return seed_regions[np.argmin(d, axis=-1)]


@numba.njit(cache=True)
def _paint(img, mask, cy, cx, r_out, r_in, col, y0, x0, step):
    """Paint annuli r_in <= d <= r_out (discs when r_in < 0) where ``mask`` is True.

    Pixel ``[yy, xx]`` of ``img`` is the image pixel ``(y0 + yy * step, x0 + xx * step)``.
    """
    h, w = img.shape[1], img.shape[2]
    for t in range(len(cy)):
        r = r_out[t]
        for yy in range(max((int(cy[t] - r) - y0) // step, 0), min((int(cy[t] + r) + 2 - y0) // step + 1, h)):
            for xx in range(max((int(cx[t] - r) - x0) // step, 0), min((int(cx[t] + r) + 2 - x0) // step + 1, w)):
                if not mask[yy, xx]:
                    continue
                dy = yy * step + y0 - cy[t]
                dx = xx * step + x0 - cx[t]
                d2 = dy * dy + dx * dx
                if d2 <= r * r and (r_in[t] < 0 or d2 >= r_in[t] * r_in[t]):
                    for ch in range(3):
                        img[ch, yy, xx] = col[t, ch]


_BASE = np.array([[232, 168, 198], [196, 140, 196], [246, 241, 245]], np.float64)
_NUCLEUS = np.array([95.0, 55.0, 140.0])
_MEMBRANE = np.array([214.0, 140.0, 184.0])


def _texture(reg: np.ndarray) -> np.ndarray:
    return np.array([TEXTURE[i] for i in range(4)])[reg]


def _render_block(y0: int, y1: int, x0: int, x1: int, seed: int, seeds, seed_regions, wave, scale, step: int = 1):
    """RGB uint8 pixels of [y0:y1:step, x0:x1:step], identical whichever way the image is chunked.

    Nuclei and adipocytes are drawn from fixed 256 px tiles seeded by their position, so objects
    that cross a block border are drawn the same in both blocks. ``step > 1`` renders every
    ``step``-th pixel only, without the per-pixel noise: a thumbnail equal to the full image sliced
    ``[::step, ::step]`` up to that noise.
    """
    yy, xx = np.mgrid[y0:y1:step, x0:x1:step].astype(np.float64)
    tex = _texture(_region_at(xx, yy, seeds, seed_regions, wave))
    img = _BASE[tex].transpose(2, 0, 1).copy()
    img += np.where(tex == 0, 14.0 * np.sin(xx * 0.35 / scale + yy * 0.12 / scale), 0.0)[None]  # fibres
    pad = int(10 * scale) + 2
    nuc, fat = [], []
    for ty in range((y0 - pad) // _TILE, (y1 + pad) // _TILE + 1):
        for tx in range((x0 - pad) // _TILE, (x1 + pad) // _TILE + 1):
            rng = np.random.default_rng([seed, 7, ty + 1000, tx + 1000])
            n = rng.poisson(_TILE * _TILE / (60.0 * scale * scale))
            cy = ty * _TILE + rng.uniform(0, _TILE, n)
            cx = tx * _TILE + rng.uniform(0, _TILE, n)
            t = _texture(_region_at(cx, cy, seeds, seed_regions, wave))
            u = rng.uniform(size=n)
            r_nuc = np.where(t == 1, rng.uniform(3.0, 5.0, n), rng.uniform(1.8, 3.0, n)) * scale
            r_fat = rng.uniform(5.0, 8.0, n) * scale
            shade = rng.uniform(0.8, 1.1, n)
            keep = ((t == 0) & (u < 0.12)) | ((t == 1) & (u < 0.9))
            nuc.append(np.column_stack([cy, cx, r_nuc, shade])[keep])
            fat.append(np.column_stack([cy, cx, r_fat])[(t == 2) & (u < 0.25)])
    nuc = np.concatenate(nuc)
    fat = np.concatenate(fat)
    _paint(img, tex == 2, fat[:, 0], fat[:, 1], fat[:, 2], fat[:, 2] - 1.2 * scale,
           np.tile(_MEMBRANE, (len(fat), 1)), y0, x0, step)
    _paint(img, tex != 2, nuc[:, 0], nuc[:, 1], nuc[:, 2], np.full(len(nuc), -1.0),
           nuc[:, 3:4] * _NUCLEUS[None], y0, x0, step)
    if step > 1:  # thumbnails skip the per-pixel noise: drawing it costs as much as the full image
        return np.clip(img, 0, 255).astype(np.uint8)
    for ty in range(y0 // _TILE, (y1 - 1) // _TILE + 1):
        for tx in range(x0 // _TILE, (x1 - 1) // _TILE + 1):
            noise = np.random.default_rng([seed, 11, ty, tx]).normal(0.0, 6.0, (3, _TILE, _TILE))
            a, b = max(y0, ty * _TILE), min(y1, (ty + 1) * _TILE)
            c, d = max(x0, tx * _TILE), min(x1, (tx + 1) * _TILE)
            img[:, a - y0 : b - y0, c - x0 : d - x0] += noise[:, a - ty * _TILE : b - ty * _TILE, c - tx * _TILE : d - tx * _TILE]
    return np.clip(img, 0, 255).astype(np.uint8)


def toy(
    n_spots: int = 900,
    *,
    n_genes: int = 150,
    seed: int | None = None,
    spot_diameter_px: float = 24.0,
    lattice: Literal["hex", "square"] = "hex",
    image: bool = True,
    signal: float = 1.0,
    chunks: int = 1024,
):
    """A synthetic SpatialData in memory: 4 regions that only expression + image together separate.

    Regions ``A``/``B`` look alike in the image (stroma texture) but express different genes;
    ``C``/``D`` share their expression but differ in the image (dense nuclei vs adipocytes). The
    truth is in ``obs["region"]``; ``obs["cancer"]`` marks ``B`` and ``C``. Counts are negative
    binomial; the image is generated lazily chunk by chunk (dask), so large sections cost no memory
    until read.

    Parameters
    ----------
    n_spots
        Number of spots, on a hexagonal (Visium-like, 55 µm spots) or square (ST-like, 100 µm spots)
        lattice with centre spacing twice the spot diameter.
    n_genes
        Number of genes (at least 60: 3 marker programmes of 15 genes plus background).
    seed
        Seed of the layout, the counts and the image. ``None``: :attr:`stfuse.settings.seed` (0 by default).
    spot_diameter_px
        Spot diameter in image pixels (the image scales with it).
    lattice
        ``"hex"`` or ``"square"``.
    image
        Attach the H&E-like image.
    signal
        Strength of the marker programmes (log fold change 1.1 × signal).
    chunks
        Chunk side of the lazy image.

    Returns
    -------
    :class:`spatialdata.SpatialData` with table ``"table"``, circles ``"toy_spots"`` and image
    ``"toy_image"`` in one coordinate system. The table carries squidpy's ``uns["spatial"]["toy_spots"]``
    (its ``hires`` thumbnail is every second pixel of the image, or sparser for large sections,
    without the image's pixel noise).

    Examples
    --------
    >>> import stfuse as sf
    >>> sdata = sf.datasets.toy(n_spots=400, seed=1)
    >>> sdata.tables["table"].obs["region"].value_counts().sort_index().index.tolist()
    ['A', 'B', 'C', 'D']
    """
    from ..io._squidpy import thumbnail_scale
    from ..io._st import build_spatialdata

    if n_spots < 16:
        raise InputError(f"toy needs at least 16 spots, got {n_spots}.")
    if n_genes < 60:
        raise InputError(f"toy needs at least 60 genes, got {n_genes}.")
    if lattice not in ("hex", "square"):
        raise InputError(f"lattice must be 'hex' or 'square', got {lattice!r}.")
    seed = settings.resolve_seed(seed)
    rng = np.random.default_rng(seed)
    spacing = 2.0 * spot_diameter_px
    xy, row, col, width, height = _layout(n_spots, spacing, lattice, margin=spacing)
    seeds, seed_regions = _seeds(rng, width, height)
    wave = 0.6 * spacing
    region = _region_at(xy[:, 0], xy[:, 1], seeds, seed_regions, wave)

    # expression: background + one of three programmes (C and D share programme 2)
    base = rng.normal(0.0, 1.0, n_genes)
    lfc = np.zeros((3, n_genes))
    for p in range(3):
        lfc[p, 15 * p : 15 * p + 15] = 1.1 * signal
    prog = np.array([PROGRAMME[r] for r in region])
    libsize = rng.lognormal(np.log(1500.0), 0.35, n_spots)
    logmu = base[None, :] + lfc[prog]
    mu = np.exp(logmu)
    mu = mu / mu.sum(axis=1, keepdims=True) * libsize[:, None]
    theta = 6.0
    counts = rng.poisson(rng.gamma(theta, mu / theta)).astype(np.float32)
    genes = [f"G{i:03d}" for i in range(n_genes)]

    obs = pd.DataFrame(index=[f"spot{i}" for i in range(n_spots)])
    obs["section"] = pd.Categorical(["toy"] * n_spots)
    obs["array_row"] = row
    obs["array_col"] = col
    obs["region"] = pd.Categorical(np.array(REGIONS)[region], categories=list(REGIONS))
    obs["cancer"] = np.isin(region, [1, 2])

    img = hires = None
    if image:
        import dask.array as da

        scale = spot_diameter_px / 24.0
        shape = (3, height, width)
        template = da.zeros(shape, dtype=np.uint8, chunks=(3, chunks, chunks))

        def _block(block, block_info=None):
            (_, _), (y0, y1), (x0, x1) = block_info[0]["array-location"]
            return _render_block(y0, y1, x0, x1, seed, seeds, seed_regions, wave, scale)

        img = template.map_blocks(_block, dtype=np.uint8, name=f"stfuse-toy-image-{seed}-{n_spots}-{spot_diameter_px}")
        # squidpy's hires thumbnail: every step-th pixel of the image, rendered directly (no full render)
        step = int(np.ceil(1.0 / thumbnail_scale(height, width) - 1e-9))
        thumb = _render_block(0, height, 0, width, seed, seeds, seed_regions, wave, scale, step).transpose(1, 2, 0)
        hires = (thumb, 1.0 / step)
    diameter_um = 55.0 if lattice == "hex" else 100.0
    return build_spatialdata(
        pd.DataFrame(counts, index=obs.index, columns=genes), obs, xy, section="toy",
        spot_diameter_px=spot_diameter_px, spot_diameter_um=diameter_um, image=img, hires=hires, platform="toy",
    )
