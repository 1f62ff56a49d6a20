"""``sf.tl.tile_tissue``: a grid of pseudo-spots over the tissue of an H&E image (slides without ST)."""

from __future__ import annotations

from typing import Any, Literal

import anndata as ad
import numpy as np

from .. import _check
from .. import _keys as K
from .. import _logging as log
from .._docs import inject_docs
from .._errors import InputError, KeyNotFoundError, StfuseError
from .._spots import ImageLevel, Spots, _image_levels, get_spots, is_spatialdata, selection

__all__ = ["tile_tissue"]

#: longest side of the image level the tissue mask is computed on
MASK_PX = 2048


def _otsu(values: np.ndarray) -> float:
    """Otsu's threshold of ``values`` in [0, 1] (256 bins)."""
    hist, edges = np.histogram(values, bins=256, range=(0.0, 1.0))
    hist = hist.astype(np.float64)
    mids = 0.5 * (edges[:-1] + edges[1:])
    w0 = np.cumsum(hist)
    w1 = w0[-1] - w0
    m0 = np.cumsum(hist * mids)
    mu0 = m0 / np.maximum(w0, 1e-12)
    mu1 = (m0[-1] - m0) / np.maximum(w1, 1e-12)
    between = w0 * w1 * (mu0 - mu1) ** 2
    return float(mids[int(np.argmax(between[:-1]))])


def tissue_mask(rgb: np.ndarray, *, min_object: int = 64) -> np.ndarray:
    """Boolean tissue mask of a ``(3, y, x)`` uint8 H&E image.

    Tissue is stained (saturated) and darker than the glass: pixels whose saturation is above Otsu's
    threshold, or that are clearly darker than the background, followed by a closing, hole filling,
    an opening and removal of components smaller than ``min_object`` pixels.

    Examples
    --------
    >>> import numpy as np
    >>> from stfuse.tl._tissue import tissue_mask
    >>> img = np.full((3, 64, 64), 245, np.uint8)
    >>> img[:, 16:48, 16:48] = np.array([200, 120, 180], np.uint8)[:, None, None]
    >>> int(tissue_mask(img, min_object=4).sum())
    1024
    """
    from scipy import ndimage as ndi

    x = rgb.astype(np.float32) / 255.0
    mx, mn = x.max(axis=0), x.min(axis=0)
    sat = (mx - mn) / np.maximum(mx, 1e-6)
    grey = x.mean(axis=0)
    sat = ndi.median_filter(sat, size=3)
    grey = ndi.median_filter(grey, size=3)
    if float(sat.max() - sat.min()) < 0.05:  # uniformly stained or uniformly blank: no contrast to split
        mask = np.full(sat.shape, float(sat.mean()) > 0.1 or float(grey.mean()) < 0.8)
    else:
        background = float(np.percentile(grey, 99))
        mask = (sat > _otsu(sat)) | (grey < background - 0.25)
    st = ndi.generate_binary_structure(2, 1)
    mask = ndi.binary_closing(mask, structure=st, iterations=2)
    mask = ndi.binary_fill_holes(mask)
    mask = ndi.binary_opening(mask, structure=st, iterations=1)
    labels, n = ndi.label(mask)
    if n:
        sizes = np.bincount(labels.ravel())
        keep = sizes >= min_object
        keep[0] = False
        mask = keep[labels]
    return mask


@inject_docs
def tile_tissue(
    sdata: Any,
    *,
    size_um: float | None = None,
    size_px: float | None = None,
    spacing: float = 1.0,
    lattice: Literal["square", "hex"] = "square",
    microns_per_pixel: float | None = None,
    min_tissue: float = 0.5,
    image_key: str | None = None,
    table_key: str | None = None,
    shapes_key: str | None = None,
    coordinate_system: str | None = None,
    key_added: str = "tissue_tiles",
    copy: bool = False,
) -> Any:
    """Cover the tissue of an H&E image with a grid of pseudo-spots (circles), for slides without ST.

    The tissue is found on a coarse level of the image (saturation above Otsu's threshold or darker
    than the glass, then morphological clean-up); circles of diameter ``size_um`` (or ``size_px``) are laid on a square
    or hexagonal grid, and those covering at least ``min_tissue`` tissue are kept. The circles are a
    new shapes element in the image's coordinate systems, usable as a target of
    :func:`stfuse.tl.histospace` and by every tool that accepts spot circles.

    Parameters
    ----------
    sdata
        A :class:`spatialdata.SpatialData` with an H&E image (a table is not needed).
    size_um
        Circle diameter in µm (e.g. 100 for legacy ST, 55 for Visium). Needs the pixel size:
        ``microns_per_pixel``, or a table of spots with a known spot size in ``sdata``.
    size_px
        Circle diameter in level-0 pixels of the image, instead of ``size_um``. Without either, the
        spot diameter of the table in ``sdata`` is used.
    spacing
        Centre-to-centre distance in diameters (1: touching circles; 2: the ST/Visium layout).
    lattice
        ``"square"`` or ``"hex"`` grid.
    microns_per_pixel
        Physical size of a level-0 pixel (from the scanner); default: derived from the spots of a table.
    min_tissue
        Minimum fraction of a circle's area on tissue.
    %(image_key)s
    table_key, shapes_key, coordinate_system
        The spots (of a table in ``sdata``, on the same image) whose diameter and pixel size fill in
        what is not given, as in every tool (see :func:`stfuse.tl.stmic`). ``None``: inferred; without
        such spots, give the size and pixel size.
    key_added
        Name of the new shapes element.
    %(copy)s

    Returns
    -------
    ``None``, or the copy when ``copy=True``. Adds ``sdata.shapes[key_added]`` (circles with a
    ``radius`` column) and, when the pixel size is known,
    ``sdata.attrs["stfuse"][key_added]["spot_diameter_um"]``.

    Examples
    --------
    >>> import stfuse as sf
    >>> sdata = sf.datasets.toy(n_spots=400)
    >>> sf.tl.tile_tissue(sdata, size_um=55)
    >>> len(sdata.shapes["tissue_tiles"]) > 300
    True
    """
    image_key, levels = _pick_image(sdata, image_key)
    _check.key_added(key_added)
    if size_um is not None and size_px is not None:
        raise InputError("Give the circle size once: size_um or size_px.")
    _check.positive("spacing", spacing)
    _check.in_range("min_tissue", min_tissue, 0.0, 1.0)
    _check.choice("lattice", lattice, ("square", "hex"))
    select = selection(locals())  # with the image just picked
    diameter, mpp = _circle_size(sdata, select, size_um=size_um, size_px=size_px, microns_per_pixel=microns_per_pixel)

    frac, scale = _tissue_fraction(levels, diameter)
    xy = _lattice(*levels[0].shape_yx, diameter=diameter, spacing=spacing, lattice=lattice)
    cy = np.clip((xy[:, 1] * scale).astype(np.int64), 0, frac.shape[0] - 1)
    cx = np.clip((xy[:, 0] * scale).astype(np.int64), 0, frac.shape[1] - 1)
    xy = xy[frac[cy, cx] >= max(min_tissue, 1e-6)]
    if len(xy) == 0:
        raise InputError(
            f"No tissue found under any circle of image {image_key!r} (min_tissue={min_tissue}); lower min_tissue "
            "or check the image."
        )
    shapes = _circles(xy, diameter, sdata.images[image_key])
    meta = dict((sdata.attrs or {}).get(K.META, {}))
    if mpp:
        meta[key_added] = {"spot_diameter_um": float(diameter * mpp), "platform": "tiles"}
    else:
        meta.pop(key_added, None)
    log.info(f"tile_tissue: {len(xy)} circles of {diameter:.0f} px on the tissue of {image_key!r}")
    # an image-only view (no spots, no table): the writer adds the new element to the SpatialData
    view = Spots(data=sdata, table=ad.AnnData(), centers=np.empty((0, 2)), diameter=diameter, microns_per_pixel=mpp,
                 levels=levels, image_key=image_key, table_in_data=False)
    return view.write(key_added, shapes={key_added: shapes}, attrs={K.META: meta}, copy=copy)


def _pick_image(sdata: Any, image_key: str | None) -> tuple[str, list[ImageLevel]]:
    """The key and levels of the SpatialData's H&E image (the only one, or ``image_key``)."""
    if not is_spatialdata(sdata):
        raise InputError(f"tile_tissue needs a spatialdata.SpatialData with an image, got {type(sdata).__name__}.")
    images = list(sdata.images.keys())
    if not images:
        raise InputError("tile_tissue needs an H&E image; the SpatialData has none (sdata.images is empty).")
    if image_key is None:
        if len(images) > 1:
            raise KeyNotFoundError(f"Several images fit: {sorted(images)}. Pass image_key=... to choose one.")
        image_key = images[0]
    elif image_key not in images:
        raise KeyNotFoundError(f"No image {image_key!r} in the SpatialData; available images: {images}.")
    return image_key, _image_levels(sdata.images[image_key])


def _circle_size(sdata: Any, select: dict[str, Any], *, size_um: float | None, size_px: float | None,
                 microns_per_pixel: float | None) -> tuple[float, float | None]:
    """Circle diameter in level-0 pixels and the pixel size in µm (``None`` if unknown).

    What is not given comes from the spots of a table in ``sdata`` on the same image, if any.
    """
    spots = None
    if sdata.tables and (size_px is None or microns_per_pixel is None):
        try:
            spots = get_spots(sdata, **select)
        except StfuseError:
            spots = None
    mpp = microns_per_pixel if microns_per_pixel is not None else (spots.microns_per_pixel if spots else None)
    if size_um is not None:
        if not mpp:
            raise InputError(
                "size_um needs the pixel size, which is unknown here: pass microns_per_pixel=... (from the scanner) "
                "or give size_px= in pixels."
            )
        diameter = float(size_um) / mpp
    elif size_px is not None:
        diameter = float(size_px)
    elif spots is not None and spots.diameter > 0:
        diameter = spots.diameter
    else:
        raise InputError("Give the circle size: size_um=... (with the pixel size known) or size_px=....")
    if not diameter >= 2:
        raise InputError(f"The circles must be at least 2 pixels across, got {diameter:.3g}.")
    return diameter, mpp


def _tissue_fraction(levels: list[ImageLevel], diameter: float) -> tuple[np.ndarray, float]:
    """Fraction of tissue in a box of a circle's area around each pixel of a coarse level, and its scale."""
    from scipy import ndimage as ndi

    H0, W0 = levels[0].shape_yx
    li = max([i for i, lv in enumerate(levels) if max(lv.shape_yx) >= min(MASK_PX, max(H0, W0))] or [0])
    lvl = levels[li]
    rgb = lvl.read_rgb()
    mask = tissue_mask(rgb, min_object=max(4, int((diameter * lvl.scale) ** 2)))
    box = max(1, round(diameter * lvl.scale * np.sqrt(np.pi) / 2))
    return ndi.uniform_filter(mask.astype(np.float32), size=box, mode="constant"), lvl.scale


def _lattice(H0: int, W0: int, *, diameter: float, spacing: float, lattice: str) -> np.ndarray:
    """``(n, 2)`` centres ``(x, y)`` of a square or hexagonal grid of circles inside an ``H0 x W0`` image."""
    step = diameter * spacing
    row_step = step * (np.sqrt(3) / 2 if lattice == "hex" else 1.0)
    ys = np.arange(diameter / 2, H0 - diameter / 2 + 1e-9, row_step)
    centres = []
    for r, y in enumerate(ys):
        off = step / 2 if (lattice == "hex" and r % 2) else 0.0
        xs = np.arange(diameter / 2 + off, W0 - diameter / 2 + 1e-9, step)
        centres.append(np.column_stack([xs, np.full(len(xs), y)]))
    return np.concatenate(centres) if centres else np.empty((0, 2))


def _circles(xy: np.ndarray, diameter: float, image: Any) -> Any:
    """A spatialdata circles element at ``xy`` in the coordinate systems of ``image``."""
    import geopandas as gpd
    from shapely.geometry import Point
    from spatialdata.models import ShapesModel
    from spatialdata.transformations import get_transformation

    gdf = gpd.GeoDataFrame({"radius": np.full(len(xy), diameter / 2.0)},
                           geometry=[Point(float(x), float(y)) for x, y in xy])
    return ShapesModel.parse(gdf, transformations=dict(get_transformation(image, get_all=True)))
