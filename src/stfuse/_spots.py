"""The Spots view: resolve spot geometry and the image once, write results back last.

Every tool starts with :func:`get_spots` and ends with :meth:`Spots.write`. Between the two, nothing
touches the user's object, so a failure leaves it unchanged.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from . import _keys as K
from . import _logging as log
from ._errors import InputError, KeyNotFoundError
from .gr._kernels import spacing as spot_spacing

if TYPE_CHECKING:
    import dask.array as da
    from anndata import AnnData
    from spatialdata import SpatialData

__all__ = ["SELECT", "ImageLevel", "Spots", "get_spots", "infer_table_key", "is_spatialdata", "selection",
           "to_uint8_rgb"]

#: The keyword arguments that choose the section a tool works on. Every public function that resolves
#: a section takes those it needs, with the defaults of :func:`get_spots` (all ``None``) and the shared
#: docs of ``stfuse._docs`` (``%(table_key)s``, ``%(library_id)s``, ...), and forwards them with
#: ``get_spots(sdata, **selection(locals()))``.
SELECT = ("table_key", "shapes_key", "image_key", "library_id", "library_key", "coordinate_system")

# Spot diameters assumed for squidpy-style AnnData without a recorded diameter in µm, by lattice:
VISIUM_SPOT_DIAMETER_UM = 55.0  # hexagonal lattice, 100 µm apart
ST_SPOT_DIAMETER_UM = 100.0  # square lattice (legacy ST), 200 µm apart


def is_spatialdata(obj: Any) -> bool:
    """Whether ``obj`` is a :class:`spatialdata.SpatialData` (spatialdata is imported on first use)."""
    from spatialdata import SpatialData

    return isinstance(obj, SpatialData)


def _is_anndata(obj: Any) -> bool:
    from anndata import AnnData

    return isinstance(obj, AnnData)


def selection(values: Mapping[str, Any]) -> dict[str, Any]:
    """The section-choosing keyword arguments (:data:`SELECT`) among ``values``, to forward to :func:`get_spots`.

    A tool calls it first thing with ``locals()``, so that it forwards exactly the keywords it takes.

    Examples
    --------
    >>> from stfuse._spots import selection
    >>> def tool(sdata, *, n_neighs=6, table_key=None, library_id=None):
    ...     return selection(locals())
    >>> tool(None, library_id="A")
    {'table_key': None, 'library_id': 'A'}
    """
    return {k: values[k] for k in SELECT if k in values}


def infer_table_key(data: Any, table_key: str | None) -> str | None:
    """``table_key``, or for ``None`` the table a tool uses: a SpatialData's only table, else ``"table"``.

    ``None`` when there is no such table (several others, none, or an AnnData); :func:`get_spots` then
    explains what to pass.

    Examples
    --------
    >>> import stfuse as sf
    >>> from stfuse._spots import infer_table_key
    >>> infer_table_key(sf.datasets.toy(n_spots=50), None)
    'table'
    """
    if table_key is not None or not is_spatialdata(data):
        return table_key
    tables = list(data.tables)
    if len(tables) == 1:
        return tables[0]
    return K.TABLE if K.TABLE in tables else None


def to_uint8_rgb(block: np.ndarray) -> np.ndarray:
    """``(3, y, x)`` uint8 RGB of a ``(c, y, x)`` image block.

    One channel is repeated, a fourth (alpha) and further channels are dropped; floats are taken as
    ``[0, 1]`` (scanpy's Visium hires), ``uint16`` is scaled down, other integers are clipped to ``[0, 255]``.

    Examples
    --------
    >>> import numpy as np
    >>> from stfuse._spots import to_uint8_rgb
    >>> to_uint8_rgb(np.full((1, 2, 2), 0.5)).shape, to_uint8_rgb(np.full((1, 2, 2), 0.5))[0, 0, 0]
    ((3, 2, 2), np.uint8(128))
    """
    if block.shape[0] == 1:
        block = np.repeat(block, 3, axis=0)
    elif block.shape[0] >= 4:
        block = block[:3]
    elif block.shape[0] != 3:
        raise InputError(f"Expected an RGB image (3 channels); this one has {block.shape[0]}.")
    if block.dtype == np.uint8:
        return block
    if np.issubdtype(block.dtype, np.floating):
        # float images (e.g. scanpy's Visium hires) are in [0, 1]
        return np.clip(np.rint(block * 255.0), 0, 255).astype(np.uint8)
    if block.dtype == np.uint16:
        return (block // 257).astype(np.uint8)
    return np.clip(block, 0, 255).astype(np.uint8)


@dataclass(eq=False)
class ImageLevel:
    """One resolution level of the image: a lazy ``(c, y, x)`` array and its scale to level 0."""

    data: da.Array
    scale: float  # pixels of this level per level-0 pixel (1.0, 0.5, 0.25, ...)

    @property
    def shape_yx(self) -> tuple[int, int]:
        return int(self.data.shape[1]), int(self.data.shape[2])

    def read_rgb(self, y0: int = 0, y1: int | None = None, x0: int = 0, x1: int | None = None) -> np.ndarray:
        """Pixels ``[y0:y1, x0:x1]`` of this level (in its own pixels) as ``(3, h, w)`` uint8 RGB.

        Reads (computes) only that window of the lazy array; see :func:`to_uint8_rgb` for the conversion.

        Examples
        --------
        >>> import stfuse as sf
        >>> from stfuse._spots import get_spots
        >>> level = get_spots(sf.datasets.toy(n_spots=50)).levels[0]
        >>> level.read_rgb(0, 10, 5, 25).shape
        (3, 10, 20)
        """
        return to_uint8_rgb(np.asarray(self.data[:, y0:y1, x0:x1].compute()))


@dataclass(eq=False)
class Spots:
    """Spot geometry and image of one section, resolved once from the user's object.

    Attributes
    ----------
    data
        The user's :class:`~spatialdata.SpatialData` or :class:`~anndata.AnnData` (never modified
        before :meth:`write`).
    table
        The table (an :class:`~anndata.AnnData`; the user's own object, not a copy).
    centers
        ``(n_obs, 2)`` spot centres ``(x, y)`` in pixels of image level 0, in table row order. Without
        an image, in the coordinates of the spot circles.
    diameter
        Spot diameter in the same pixels as :attr:`centers`.
    microns_per_pixel
        Microns per level-0 pixel, or ``None`` when the physical spot size is unknown.
    levels
        Image levels, finest first (empty without an image).
    table_in_data
        ``False`` when the spots were resolved from a shapes element that no table annotates
        (``get_spots(..., require_table=False)``): :attr:`table` is then a new, empty table (one row
        per circle, no genes) that is not part of :attr:`data`, and :meth:`write` accepts only
        ``tables=``.
    """

    data: Any
    table: AnnData
    centers: np.ndarray
    diameter: float
    microns_per_pixel: float | None = None
    levels: list[ImageLevel] = field(default_factory=list)
    table_key: str | None = None
    shapes_key: str | None = None
    image_key: str | None = None
    library_id: str | None = None
    table_in_data: bool = True
    unplaced_images: tuple[str, ...] = ()
    """Images of the SpatialData that share no coordinate system with the spots (so were not used)."""
    meta_to_record: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Entries of ``uns["stfuse"]`` (by library) that resolving assumed, e.g. a spot size in µm guessed from
    the lattice; :meth:`write` records them with the results, so a failed tool leaves the object unchanged."""

    # --- geometry ------------------------------------------------------------------------------
    @property
    def n_obs(self) -> int:
        return int(self.table.n_obs)

    @property
    def has_image(self) -> bool:
        return len(self.levels) > 0

    @property
    def name(self) -> str:
        """A short name of the section for messages and plots."""
        return self.shapes_key or self.library_id or self.table_key or "section"

    def require_image(self, what: str, *, fix: str) -> None:
        """Raise :class:`InputError` when there is no image; ``what`` needs one, ``fix`` says what to do."""
        if not self.has_image:
            if self.unplaced_images:
                raise InputError(
                    f"{what} needs an H&E image, but the image(s) {list(self.unplaced_images)} share no coordinate "
                    f"system with the spots {self.name!r}, so stfuse cannot place the spots on them. Add a "
                    "transformation with spatialdata.transformations.set_transformation(image, ..., "
                    "to_coordinate_system=<the spots' coordinate system>)."
                )
            raise InputError(f"{what} needs an H&E image, but section {self.name!r} has none. {fix}")

    def spacing(self) -> float:
        """Median centre-to-centre distance to the nearest other spot (level-0 pixels).

        Twice the spot diameter when there is no other spot (see :func:`stfuse.gr.spacing`).
        """
        return spot_spacing(self.centers, default=float(self.diameter) * 2.0)

    def level_for_patch(self, side_px: float, out_px: int) -> int:
        """Coarsest image level on which a patch of ``side_px`` level-0 pixels still spans ``out_px`` pixels."""
        best = 0
        for i, level in enumerate(self.levels):
            if side_px * level.scale >= out_px * 0.999:
                best = i
        return best

    # --- writing -------------------------------------------------------------------------------
    def write(
        self,
        key_added: str | None,
        *,
        obs: Mapping[str, Any] | None = None,
        obsm: Mapping[str, np.ndarray] | None = None,
        obsp: Mapping[str, Any] | None = None,
        uns: Mapping[str, Any] | None = None,
        tables: Mapping[str, AnnData] | None = None,
        shapes: Mapping[str, Any] | None = None,
        attrs: Mapping[str, Any] | None = None,
        embeddings: Sequence[Any] = (),
        copy: bool = False,
    ) -> Any:
        """Write computed results into the user's object (or a copy) and return the copy or ``None``.

        Call this only after every computation has succeeded. Existing results of the same
        ``key_added`` are replaced with a warning. ``embeddings`` are
        :class:`stfuse.im.ImageFeatures` computed on the way: they refresh the embedding cache
        (``obsm`` + ``uns["stfuse_embeddings"]``) without a warning. ``tables``, ``shapes`` (parsed
        spatialdata elements) and ``attrs`` (entries of ``sdata.attrs``, set without a warning) go to
        the SpatialData itself. What resolving assumed (:attr:`meta_to_record`) is recorded in the
        table's ``uns["stfuse"]`` in the same call.
        """
        if not self.table_in_data and (obs or obsm or obsp or uns or embeddings):
            raise InputError(
                f"Spots {self.name!r} have no table in the object, so results can only be written as new elements "
                "(tables=, shapes=, attrs=), not to obs/obsm/obsp/uns."
            )
        if (tables or shapes or attrs) and not is_spatialdata(self.data):
            raise InputError("New tables, shapes or attrs can only be added to a SpatialData, not to an AnnData.")
        target = _copy_object(self.data, self.table_key) if copy else self.data
        table = _get_table(target, self.table_key) if self.table_in_data else self.table
        clash = (
            [k for k in (obs or {}) if k in table.obs]
            + [k for k in (obsm or {}) if k in table.obsm]
            + [k for k in (obsp or {}) if k in table.obsp]
            + [k for k in (uns or {}) if k in table.uns]
        )
        if tables:
            clash += [k for k in tables if k in target.tables]
        if shapes:
            clash += [k for k in shapes if k in target.shapes]
        if clash:
            warnings.warn(
                f"Replacing existing results {sorted(set(clash))} (key_added={key_added!r}).",
                UserWarning,
                stacklevel=3,
            )
        index = table.obs_names
        for k, v in (obs or {}).items():
            table.obs[k] = pd.Series(v.array if isinstance(v, pd.Series) else v, index=index)
        for k, v in (obsm or {}).items():
            table.obsm[k] = v
        for k, v in (obsp or {}).items():
            table.obsp[k] = v
        for k, v in (uns or {}).items():
            table.uns[k] = v
        for k, t in (tables or {}).items():
            target.tables[k] = t
        for k, el in (shapes or {}).items():
            target.shapes[k] = el
        for k, v in (attrs or {}).items():
            target.attrs[k] = v
        if self.meta_to_record:
            meta = dict(table.uns[K.META]) if isinstance(table.uns.get(K.META), Mapping) else {}
            for lib, entry in self.meta_to_record.items():
                old = meta.get(lib)
                meta[lib] = {**(dict(old) if isinstance(old, Mapping) else {}), **entry}
            table.uns[K.META] = meta
        if embeddings:
            prov = dict(table.uns.get(K.EMBEDDINGS, {}))
            for f in embeddings:
                table.obsm[f.obsm_key] = f.X
                prov[f.obsm_key] = f.provenance
            table.uns[K.EMBEDDINGS] = prov
        written = [f"obs[{k!r}]" for k in obs or {}] + [f"obsm[{k!r}]" for k in obsm or {}]
        written += [f"obsp[{k!r}]" for k in obsp or {}] + [f"uns[{k!r}]" for k in uns or {}]
        written += [f"tables[{k!r}]" for k in tables or {}] + [f"shapes[{k!r}]" for k in shapes or {}]
        written += [f"obsm[{f.obsm_key!r}]" for f in embeddings]
        if written:
            log.info(f"    added {', '.join(written)}")
        return target if copy else None


# ------------------------------------------------------------------------------------------------
# resolving
# ------------------------------------------------------------------------------------------------
def get_spots(
    data: Any,
    *,
    table_key: str | None = None,
    shapes_key: str | None = None,
    image_key: str | None = None,
    library_id: str | None = None,
    library_key: str | None = None,
    coordinate_system: str | None = None,
    need_image: bool = False,
    image_hint: str = "",
    require_table: bool = True,
) -> Spots:
    """Resolve the :class:`Spots` view of ``data`` without modifying it.

    Parameters
    ----------
    data
        A SpatialData or an AnnData (squidpy layout).
    table_key
        Key of the table of a SpatialData. ``None``: the only table, else the table named
        ``"table"``; with several other tables the error lists them.
    shapes_key, image_key
        Element keys; inferred when there is exactly one candidate. When several images share the
        spots' coordinate system and are the same picture at different resolutions (Visium's
        ``hires`` and ``lowres`` images as spatialdata-io writes them), the finest is used (logged).
    library_id
        For AnnData: key of ``uns["spatial"]``; inferred when there is one, or from ``library_key``.
    library_key
        For AnnData concatenated from several sections (squidpy's ``library_key``): the ``obs`` column
        naming each spot's library. The spots must all belong to one library (that of ``library_id``
        when given), e.g. ``adata[adata.obs[library_key] == "A"].copy()``; stfuse tools work on one
        section at a time.
    coordinate_system
        For SpatialData: the coordinate system in which the spots are placed on the image. ``None``:
        any that the spots and the image share (``"global"`` first).
    need_image
        Raise :class:`InputError` if the section has no image.
    image_hint
        Appended to the missing-image error (what to do instead).
    require_table
        With ``False``, a SpatialData whose spot circles no table annotates is accepted too: when
        ``table_key`` names no table, or ``shapes_key`` names circles the table does not annotate, the
        spots are the circles of ``shapes_key`` (inferred when the object has exactly one circles
        element) and :attr:`Spots.table` is a new empty table (:attr:`Spots.table_in_data` is
        ``False``). For tools that create their own table, e.g. predictions for an H&E slide without
        expression.

    Returns
    -------
    The :class:`Spots` view: centres, diameter, pixel size and image levels of the section.

    Examples
    --------
    >>> import stfuse as sf
    >>> from stfuse._spots import get_spots
    >>> spots = get_spots(sf.datasets.toy(n_spots=100))
    >>> spots.n_obs, spots.has_image
    (100, True)
    """
    if is_spatialdata(data):
        spots = _from_spatialdata(data, table_key=table_key, shapes_key=shapes_key, image_key=image_key,
                                  coordinate_system=coordinate_system, require_table=require_table)
    elif _is_anndata(data):
        spots = _from_anndata(data, library_id=library_id, library_key=library_key)
    else:
        raise InputError(
            f"Expected a spatialdata.SpatialData or an anndata.AnnData, got {type(data).__name__}. "
            "Read ST data with sf.io.read_st / sf.datasets.her2st, or Visium with sf.io.read_visium."
        )
    if spots.n_obs == 0:
        raise InputError(f"The table of section {spots.name!r} has no spots (0 rows).")
    if spots.table.obs_names.has_duplicates:
        dup = spots.table.obs_names[spots.table.obs_names.duplicated()].unique()[:3].tolist()
        raise InputError(
            f"The table of section {spots.name!r} has duplicated spot names (e.g. {dup}); results are written per "
            "spot, so names must be unique: table.obs_names_make_unique() or fix the spot ids."
        )
    if not np.all(np.isfinite(spots.centers)):
        raise InputError(
            f"{int((~np.isfinite(spots.centers)).any(axis=1).sum())} spot centres of section {spots.name!r} "
            "are NaN or infinite; drop those spots (e.g. `sdata.tables[...] = table[mask].copy()`)."
        )
    if spots.has_image:
        h, w = spots.levels[0].shape_yx
        x, y = spots.centers[:, 0], spots.centers[:, 1]
        outside = (x < 0) | (y < 0) | (x > w) | (y > h)
        if outside.any():
            raise InputError(
                f"{int(outside.sum())} of {spots.n_obs} spot centres of section {spots.name!r} lie outside image "
                f"{spots.image_key or spots.library_id!r} ({w} x {h} px): wrong image, wrong scale factor, or a "
                "missing transformation between the spots and the image?"
            )
    if need_image:
        spots.require_image("This tool", fix=image_hint)
    return spots


def _get_table(data: Any, table_key: str | None) -> AnnData:
    return data.tables[table_key] if is_spatialdata(data) else data


def _copy_object(data: Any, table_key: str | None) -> Any:
    """Copy for ``copy=True``: tables are copied, images/shapes/points/labels are shared."""
    if not is_spatialdata(data):
        return data.copy()
    from spatialdata import SpatialData

    return SpatialData(
        images=dict(data.images),
        labels=dict(data.labels),
        points=dict(data.points),
        shapes=dict(data.shapes),
        tables={k: t.copy() for k, t in data.tables.items()},
        attrs=dict(getattr(data, "attrs", {}) or {}),
    )


def _plural(kind: str) -> str:
    return kind[:-1] + "ies" if kind.endswith("y") else kind + "s"


def _pick(kind: str, candidates: list[str], given: str | None, available: list[str], fix: str) -> str | None:
    if given is not None:
        if given not in available:
            raise KeyNotFoundError(f"No {kind} {given!r} in the SpatialData; available {_plural(kind)}: {available}.")
        return given
    if len(candidates) == 1:
        return candidates[0]
    if not candidates:
        return None
    raise KeyNotFoundError(f"Several {_plural(kind)} fit: {sorted(candidates)}. {fix}")


def _from_spatialdata(sdata: SpatialData, *, table_key: str | None, shapes_key: str | None, image_key: str | None,
                      coordinate_system: str | None = None, require_table: bool = True) -> Spots:
    from spatialdata.models import get_table_keys

    tables = list(sdata.tables.keys())
    if table_key is None:
        table_key = K.TABLE if len(tables) > 1 and K.TABLE in tables else None
        if table_key is None and (require_table or len(tables) == 1):
            table_key = _pick("table", tables, None, tables, "Pass table_key=... to choose one.")
    if not require_table and (table_key is None or table_key not in tables):
        return _from_shapes(sdata, shapes_key=shapes_key, image_key=image_key, coordinate_system=coordinate_system)
    table_key = _pick("table", tables, table_key, tables, "Pass table_key=... to choose one.")
    if table_key is None:
        raise KeyNotFoundError("The SpatialData has no table; tools need a table of spots (one row per spot).")
    table = sdata.tables[table_key]
    try:
        region, _region_key, instance_key = get_table_keys(table)
    except ValueError:
        raise InputError(
            f"Table {table_key!r} does not say which spots it annotates (no uns['spatialdata_attrs']). Parse it "
            "with spatialdata.models.TableModel.parse(table, region=..., region_key=..., instance_key=...)."
        ) from None
    regions = [region] if isinstance(region, str) else list(region)
    if shapes_key is not None and shapes_key not in regions:
        if not require_table:
            return _from_shapes(sdata, shapes_key=shapes_key, image_key=image_key,
                                coordinate_system=coordinate_system)
        raise KeyNotFoundError(
            f"Table {table_key!r} annotates {regions}, not shapes {shapes_key!r}. Pass the table_key of the "
            f"table annotating {shapes_key!r}, or leave shapes_key out."
        )
    shapes_regions = [r for r in regions if r in sdata.shapes]
    shapes_key = _pick("shapes element", shapes_regions, shapes_key, list(sdata.shapes.keys()),
                       "Pass shapes_key=... to choose one.")
    if shapes_key is None:
        raise KeyNotFoundError(
            f"Table {table_key!r} annotates {regions}, none of which is a shapes element "
            f"(shapes: {list(sdata.shapes.keys())}). stfuse needs spot circles."
        )
    if len(regions) > 1:
        raise InputError(
            f"Table {table_key!r} annotates several regions {regions}. stfuse tools work on one section at "
            "a time: put each section's rows in a table of its own (TableModel.parse(..., region=name))."
        )
    shapes = _circles(sdata, shapes_key)
    obs = table.obs
    if instance_key not in obs.columns:
        raise InputError(f"Table {table_key!r} lacks its instance column {instance_key!r} in obs.")
    ids = obs[instance_key].to_numpy()
    pos = shapes.index.get_indexer(ids)
    if (pos < 0).any():
        missing = ids[pos < 0][:5].tolist()
        raise InputError(
            f"{int((pos < 0).sum())} rows of table {table_key!r} point to spots missing from shapes "
            f"{shapes_key!r} (first: {missing}); the table and the circles do not match."
        )
    return _geometry(sdata, table, shapes, pos, shapes_key=shapes_key, image_key=image_key, table_key=table_key,
                     coordinate_system=coordinate_system)


def _circles(sdata: SpatialData, shapes_key: str) -> Any:
    shapes = sdata.shapes[shapes_key]
    if "radius" not in shapes.columns:
        raise InputError(
            f"Shapes {shapes_key!r} are not circles (no 'radius' column); stfuse needs spot circles. "
            "Convert with spatialdata.to_circles(...)."
        )
    return shapes


def _from_shapes(sdata: SpatialData, *, shapes_key: str | None, image_key: str | None,
                 coordinate_system: str | None = None) -> Spots:
    """Spots from a circles element alone; the table is new (one row per circle, no genes)."""
    import anndata as ad

    available = list(sdata.shapes.keys())
    circles = [k for k in available if "radius" in sdata.shapes[k].columns]
    shapes_key = _pick("circles element", circles, shapes_key, available,
                       "Pass shapes_key=... to choose the spots (e.g. the tiles of sf.tl.tile_tissue).")
    if shapes_key is None:
        raise KeyNotFoundError(
            f"The SpatialData has no table and no spot circles (shapes: {available}). Add spots, e.g. a grid "
            "over the tissue with sf.tl.tile_tissue(sdata), or a table of spots."
        )
    shapes = _circles(sdata, shapes_key)
    pos = np.arange(len(shapes))
    obs = pd.DataFrame(index=pd.Index([f"{shapes_key}_{i}" for i in shapes.index], dtype=object))
    obs[K.REGION_KEY] = pd.Categorical([shapes_key] * len(shapes))
    obs[K.INSTANCE_KEY] = shapes.index.to_numpy()
    table = ad.AnnData(obs=obs)
    spots = _geometry(sdata, table, shapes, pos, shapes_key=shapes_key, image_key=image_key, table_key=None,
                      coordinate_system=coordinate_system)
    spots.table_in_data = False
    return spots


def _spot_meta(sdata: SpatialData, table: AnnData, shapes_key: str) -> Mapping[str, Any]:
    """The stfuse metadata of a spots element: from the table, any table, or ``sdata.attrs["stfuse"]``."""
    sources = [table.uns.get(K.META)] + [t.uns.get(K.META) for t in sdata.tables.values()]
    sources.append((getattr(sdata, "attrs", None) or {}).get(K.META))
    for src in sources:
        if isinstance(src, Mapping) and isinstance(src.get(shapes_key), Mapping):
            return src[shapes_key]
    return {}


def _geometry(sdata: SpatialData, table: AnnData, shapes: Any, pos: np.ndarray, *, shapes_key: str,
              image_key: str | None, table_key: str | None, coordinate_system: str | None = None) -> Spots:
    geom = shapes.geometry.iloc[pos]
    xy = np.column_stack([geom.x.to_numpy(), geom.y.to_numpy()]).astype(np.float64)
    radius = shapes["radius"].to_numpy()[pos].astype(np.float64)

    image_key, levels = _resolve_image(sdata, shapes_key, image_key, coordinate_system)
    scale = 1.0
    if image_key is not None:
        affine = _affine_between(sdata, shapes_key, image_key, coordinate_system)
        xy = xy @ affine[:2, :2].T + affine[:2, 2]
        scale = float(np.sqrt(abs(np.linalg.det(affine[:2, :2]))))
    diameter = float(np.median(2.0 * radius)) * scale if len(radius) else 0.0
    diam_um = _spot_meta(sdata, table, shapes_key).get("spot_diameter_um")
    mpp = float(diam_um) / diameter if diam_um and diameter > 0 else None
    unplaced = () if image_key is not None else tuple(sdata.images.keys())
    return Spots(
        data=sdata, table=table, centers=xy, diameter=diameter, microns_per_pixel=mpp, levels=levels,
        table_key=table_key, shapes_key=shapes_key, image_key=image_key, unplaced_images=unplaced,
    )


def _coordinate_systems(element: Any) -> set[str]:
    from spatialdata.transformations import get_transformation

    return set(get_transformation(element, get_all=True).keys())


def _spots_systems(sdata: SpatialData, shapes_key: str, coordinate_system: str | None) -> set[str]:
    """Coordinate systems of the spots to place them in: all of them, or ``coordinate_system``."""
    cs = _coordinate_systems(sdata.shapes[shapes_key])
    if coordinate_system is None:
        return cs
    if coordinate_system not in cs:
        raise KeyNotFoundError(
            f"Spots {shapes_key!r} are not in coordinate system {coordinate_system!r}; their coordinate systems: "
            f"{sorted(cs)}."
        )
    return {coordinate_system}


def _resolve_image(sdata: SpatialData, shapes_key: str, image_key: str | None,
                   coordinate_system: str | None = None) -> tuple[str | None, list[ImageLevel]]:
    images = list(sdata.images.keys())
    if image_key is not None and image_key not in images:
        raise KeyNotFoundError(f"No image {image_key!r} in the SpatialData; available images: {images}.")
    cs = _spots_systems(sdata, shapes_key, coordinate_system)
    shared = [k for k in images if _coordinate_systems(sdata.images[k]) & cs]
    if image_key is not None:
        if image_key not in shared:
            raise InputError(
                f"Spots {shapes_key!r} (coordinate systems {sorted(cs)}) and image {image_key!r} "
                f"(coordinate systems {sorted(_coordinate_systems(sdata.images[image_key]))}) share no "
                "coordinate system, so stfuse cannot place spots on the image. Add a transformation with "
                "spatialdata.transformations.set_transformation(...)."
            )
        return image_key, _image_levels(sdata.images[image_key])
    if not shared:
        if images:
            log.warning(
                f"No image shares a coordinate system with spots {shapes_key!r} (images: {images}); "
                "continuing without an image."
            )
        return None, []
    key = _finest(sdata, shapes_key, shared, coordinate_system) if len(shared) > 1 else None
    if key is None:
        key = _pick("image", shared, None, images, "Pass image_key=... to choose one.")
    return key, _image_levels(sdata.images[key])


def _finest(sdata: SpatialData, shapes_key: str, keys: list[str], coordinate_system: str | None) -> str | None:
    """The finest of several images that are one picture at different resolutions, else ``None``.

    Images count as one picture when they have the same channels and cover the same extent (within
    5 %) in the spots' coordinates, e.g. Visium's ``hires`` and ``lowres`` images (and the full
    resolution one) as spatialdata-io writes them.
    """
    px, extent, channels = [], [], []
    for k in keys:
        a = _affine_between(sdata, shapes_key, k, coordinate_system)  # image pixels -> spots coordinates
        to_spots = np.linalg.inv(a)[:2, :2]
        size = float(np.sqrt(abs(np.linalg.det(to_spots))))
        level0 = _image_levels(sdata.images[k])[0]
        h, w = level0.shape_yx
        px.append(size)
        extent.append(np.array([w, h], np.float64) * size)
        channels.append(int(level0.data.shape[0]))
    extent_arr = np.array(extent)
    if len(set(channels)) > 1 or np.any(np.abs(extent_arr / extent_arr.mean(axis=0) - 1.0) > 0.05):
        return None
    order = np.argsort(px, kind="stable")
    if np.isclose(px[order[0]], px[order[1]]):
        return None
    key = keys[int(order[0])]
    log.info(
        f"Several images fit spots {shapes_key!r} ({sorted(keys)}), one picture at different resolutions; using the "
        f"finest, {key!r}. Pass image_key=... to choose another."
    )
    return key


def _image_levels(image: Any) -> list[ImageLevel]:
    """Levels of a SpatialData image (DataArray or multiscale DataTree), finest first."""
    import dask.array as da
    import xarray as xr

    if isinstance(image, xr.DataTree):
        names = sorted(image.children, key=lambda s: int("".join(c for c in s if c.isdigit()) or 0))
        arrays = [next(iter(image[name].ds.data_vars.values())) for name in names]
    else:
        arrays = [image]
    levels = []
    x0 = arrays[0].sizes["x"]
    for arr in arrays:
        if "c" not in arr.dims:
            raise InputError("The image has no channel axis 'c'; stfuse expects an RGB image (c, y, x).")
        data = arr.transpose("c", "y", "x").data
        if not isinstance(data, da.Array):
            data = da.from_array(np.asarray(data), chunks=(-1, 2048, 2048))
        levels.append(ImageLevel(data=data, scale=arr.sizes["x"] / x0))
    return levels


def _affine_between(sdata: SpatialData, shapes_key: str, image_key: str, coordinate_system: str | None = None
                    ) -> np.ndarray:
    """3x3 affine matrix mapping shapes coordinates to level-0 pixels of the image."""
    from spatialdata.transformations import get_transformation

    shapes_t = get_transformation(sdata.shapes[shapes_key], get_all=True)
    image_t = get_transformation(sdata.images[image_key], get_all=True)
    common = sorted(set(shapes_t) & set(image_t))
    if coordinate_system is not None:
        cs = coordinate_system
    else:
        cs = "global" if "global" in common else common[0]
    to_cs = shapes_t[cs].to_affine_matrix(input_axes=("x", "y"), output_axes=("x", "y"))
    img_to_cs = image_t[cs].to_affine_matrix(input_axes=("x", "y"), output_axes=("x", "y"))
    return np.linalg.inv(img_to_cs) @ to_cs


def _from_anndata(adata: AnnData, *, library_id: str | None, library_key: str | None = None) -> Spots:
    import dask.array as da

    if K.SPATIAL not in adata.obsm:
        raise InputError(
            "The AnnData has no obsm['spatial'] (spot centres). Use a SpatialData from sf.io.read_st / "
            "sf.io.read_visium, or scanpy.read_visium, which set it."
        )
    xy = np.asarray(adata.obsm[K.SPATIAL], dtype=np.float64)[:, :2]
    libs = adata.uns.get(K.SPATIAL, {}) if isinstance(adata.uns.get(K.SPATIAL), Mapping) else {}
    libs = {k: v for k, v in libs.items() if isinstance(v, Mapping)}
    if library_key is not None:
        library_id = _library_of_rows(adata, library_key, library_id)
    if library_id is not None and library_id not in libs:
        raise KeyNotFoundError(f"No library {library_id!r} in uns['spatial']; available: {list(libs)}.")
    if library_id is None:
        library_id = _pick("library", list(libs), None, list(libs),
                           "Pass library_id=... to choose one (or library_key=..., the obs column naming each "
                           "spot's library, for a table concatenated from several sections).")
    if library_id is None:
        d = spot_spacing(xy, default=1.0) / 2.0
        return Spots(data=adata, table=adata, centers=xy, diameter=d, table_key=None)
    lib = libs[library_id]
    sf_ = lib.get("scalefactors", {})
    diam_full = float(sf_.get("spot_diameter_fullres", spot_spacing(xy, default=1.0) / 2.0))
    diam_um = sf_.get("spot_diameter_um")
    assumed: dict[str, dict[str, Any]] = {}
    if diam_um is None:
        diam_um, record = _assumed_diameter_um(adata, xy, library_id)
        if record:
            assumed[library_id] = record
    images = lib.get("images", {}) or {}
    order = [k for k in ("hires", "lowres") if k in images] + [k for k in images if k not in ("hires", "lowres")]
    levels: list[ImageLevel] = []
    scale0 = 1.0
    for i, name in enumerate(order):
        arr = np.asarray(images[name])
        if arr.ndim != 3:
            raise InputError(f"uns['spatial'][{library_id!r}]['images'][{name!r}] is not an (y, x, c) image.")
        scalef = float(sf_.get(f"tissue_{name}_scalef", 1.0))
        if i == 0:
            scale0 = scalef
        levels.append(ImageLevel(da.from_array(arr.transpose(2, 0, 1), chunks=(-1, 2048, 2048)), scalef / scale0))
    return Spots(
        data=adata, table=adata, centers=xy * scale0, diameter=diam_full * scale0,
        microns_per_pixel=None if diam_um is None else float(diam_um) / (diam_full * scale0), levels=levels,
        table_key=None, library_id=library_id, meta_to_record=assumed,
    )


def _library_of_rows(adata: AnnData, library_key: str, library_id: str | None) -> str:
    """The one library that every row of ``adata`` belongs to, by ``obs[library_key]``."""
    if library_key not in adata.obs:
        raise KeyNotFoundError(f"No column {library_key!r} in obs (library_key); obs columns: {list(adata.obs)}.")
    present = pd.unique(adata.obs[library_key].astype(str)).tolist()
    if library_id is not None and present == [library_id]:
        return library_id
    if library_id is None and len(present) == 1:
        return present[0]
    some = f"library {library_id!r}" if library_id is not None else "one library"
    raise InputError(
        f"The table holds spots of libraries {present} (obs[{library_key!r}]), not of {some} alone. stfuse tools "
        f"work on one section at a time: pass adata[adata.obs[{library_key!r}] == lib].copy() for each library."
    )


def _assumed_diameter_um(adata: AnnData, xy: np.ndarray, library_id: str) -> tuple[float | None, dict[str, Any]]:
    """Spot diameter in µm when ``scalefactors`` hold none, and what to record: from ``uns["stfuse"]``, else the lattice.

    A square lattice is legacy ST (100 µm spots, 200 µm apart), a hexagonal one Visium (55 µm spots,
    100 µm apart). The assumption is warned about and returned as the entry to record in
    ``uns["stfuse"][library_id]`` (:attr:`Spots.meta_to_record`; nothing is written here); irregular
    spots give ``None`` (physical size unknown).
    """
    meta = adata.uns.get(K.META)
    recorded = meta.get(library_id) if isinstance(meta, Mapping) else None
    if isinstance(recorded, Mapping) and recorded.get("spot_diameter_um"):
        return float(recorded["spot_diameter_um"]), {}
    from .gr._kernels import detect_lattice

    lattice, _ = detect_lattice(xy)
    if lattice is None:
        warnings.warn(
            f"uns['spatial'][{library_id!r}]['scalefactors'] has no 'spot_diameter_um' and the spots form no square "
            "or hexagonal lattice, so their size in µm is unknown; µm-sized options will fail. Set "
            "adata.uns['spatial'][library_id]['scalefactors']['spot_diameter_um'].",
            UserWarning,
            stacklevel=4,
        )
        return None, {}
    platform, diam_um = ("ST", ST_SPOT_DIAMETER_UM) if lattice == "square" else ("Visium", VISIUM_SPOT_DIAMETER_UM)
    warnings.warn(
        f"uns['spatial'][{library_id!r}]['scalefactors'] has no 'spot_diameter_um'; the spots form a {lattice} lattice, "
        f"so assuming {platform} spots of {diam_um:g} µm (recorded in uns['stfuse'][{library_id!r}] with the "
        "results). Set scalefactors['spot_diameter_um'] if this is wrong.",
        UserWarning,
        stacklevel=4,
    )
    return diam_um, {"spot_diameter_um": diam_um, "platform": platform,
                     "assumed": f"spot_diameter_um from the {lattice} lattice"}

