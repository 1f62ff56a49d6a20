"""Reader for the legacy Spatial Transcriptomics (ST) platform files (HER2ST layout)."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy import sparse

from .. import _keys as K
from .. import _logging as log
from .._errors import DataNotFoundError, InputError
from .._spots import ST_SPOT_DIAMETER_UM
from ._image import image_size, lazy_image
from ._squidpy import file_thumbnail, library_entry, thumbnail_scale

__all__ = ["build_spatialdata", "read_st"]

ST_SPOT_SPACING_UM = 200.0
CANCER_LABELS = ("invasive cancer", "cancer in situ")
PathLike = str | os.PathLike


def _path(p: PathLike, what: str) -> Path:
    path = Path(p)
    if not path.exists():
        raise DataNotFoundError(f"{what} file {str(path)!r} does not exist.")
    return path


def _read_counts(path: Path) -> pd.DataFrame:
    try:
        df = pd.read_csv(path, sep="\t", index_col=0)
    except (pd.errors.ParserError, UnicodeDecodeError, EOFError, OSError) as e:
        raise InputError(f"Cannot parse counts file {str(path)!r} as a tab-separated table: {e}") from None
    if df.shape[1] == 0 or df.shape[0] == 0:
        raise InputError(f"Counts file {str(path)!r} has no genes or no spots (shape {df.shape}).")
    bad = [c for c, t in df.dtypes.items() if not pd.api.types.is_numeric_dtype(t)]
    if bad:
        raise InputError(
            f"Counts file {str(path)!r} has non-numeric values in {len(bad)} gene columns (first: {bad[:3]}); "
            "counts must be numbers, spots as rows and genes as columns."
        )
    header = pd.read_csv(path, sep="\t", header=None, nrows=1, dtype=str).iloc[0].tolist()[1:]
    df.index = df.index.astype(str)
    df.columns = pd.Index([str(h) for h in header]) if len(header) == df.shape[1] else df.columns.astype(str)
    dup = df.columns[df.columns.duplicated()].unique().tolist()
    if dup:
        raise InputError(
            f"Counts file {str(path)!r} has duplicated gene names {dup[:5]}; make them unique first "
            "(e.g. sum the duplicated columns) so every gene symbol names one column."
        )
    dup = df.index[df.index.duplicated()].unique().tolist()
    if dup:
        raise InputError(f"Counts file {str(path)!r} has duplicated spot ids {dup[:5]}.")
    values = df.to_numpy()
    if not np.isfinite(values).all():
        raise InputError(f"Counts file {str(path)!r} contains NaN or infinite values.")
    if (values < 0).any():
        raise InputError(f"Counts file {str(path)!r} contains negative values; raw counts are >= 0.")
    return df


def _read_spots(path: Path) -> pd.DataFrame:
    df = pd.read_csv(path, sep="\t")
    need = {"x", "y", "pixel_x", "pixel_y"}
    if not need <= set(df.columns):
        raise InputError(
            f"Spot file {str(path)!r} lacks columns {sorted(need - set(df.columns))}; expected the ST "
            "spot-detector output with x, y, new_x, new_y, pixel_x, pixel_y, selected."
        )
    df.index = [f"{int(x)}x{int(y)}" for x, y in zip(df["x"], df["y"])]
    if "selected" in df.columns:
        df = df[df["selected"].astype(int) == 1]
    return df[~df.index.duplicated()]


def _read_motivation(path: Path) -> pd.DataFrame:
    """Parse the author cluster names; the file has unquoted commas inside names."""
    rows = []
    for line in path.read_text().splitlines()[1:]:
        if not line.strip():
            continue
        parts = line.split(",", 2)
        if len(parts) < 3:
            continue
        rest = parts[2]
        name = re.split(r",\s*Marker|,\s*,|,\s*$", rest, maxsplit=1)[0].strip()
        rows.append((parts[0].strip(), str(int(parts[1])), name))
    return pd.DataFrame(rows, columns=["patient", "cluster", "name"])


def _pixels_per_micron(spots: pd.DataFrame) -> float:
    """Pixels per µm from the 200 µm ST grid: least squares of pixel on array coordinates."""
    ax = spots["new_x"] if "new_x" in spots.columns else spots["x"]
    ay = spots["new_y"] if "new_y" in spots.columns else spots["y"]
    A = np.column_stack([ax, ay, np.ones(len(ax))]).astype(float)
    if len(spots) < 3 or np.linalg.matrix_rank(A) < 3:
        raise InputError("Need at least 3 spots not on one line to derive the image scale from the ST grid.")
    cx, *_ = np.linalg.lstsq(A, spots["pixel_x"].to_numpy(float), rcond=None)
    cy, *_ = np.linalg.lstsq(A, spots["pixel_y"].to_numpy(float), rcond=None)
    # columns of the 2x2 linear map = pixel displacement per array step in x and in y
    step = 0.5 * (np.hypot(cx[0], cy[0]) + np.hypot(cx[1], cy[1]))
    return float(step / ST_SPOT_SPACING_UM)


def build_spatialdata(
    counts: pd.DataFrame | Any,
    obs: pd.DataFrame,
    xy: np.ndarray,
    *,
    section: str,
    spot_diameter_px: float,
    spot_diameter_um: float | None,
    image: Any = None,
    image_scale: float = 1.0,
    hires: tuple[np.ndarray, float] | None = None,
    platform: str = "ST",
):
    """Assemble a SpatialData (table, spot circles, multiscale image) from arrays.

    ``counts`` is a spots × genes DataFrame or an :class:`~anndata.AnnData`; ``xy`` the spot centres in
    full-resolution pixels (the ``global`` coordinate system); ``image`` an optional lazy ``(c, y, x)``
    array stored at ``image_scale`` times the full resolution; ``hires`` its ``(y, x, 3)`` uint8
    thumbnail and the thumbnail's pixels per full-resolution pixel, kept with a ``lowres`` one in
    squidpy's ``uns["spatial"][f"{section}_spots"]`` (see :mod:`stfuse.io._squidpy`).
    """
    import anndata as ad
    import geopandas as gpd
    from shapely.geometry import Point
    from spatialdata import SpatialData
    from spatialdata.models import Image2DModel, ShapesModel, TableModel
    from spatialdata.transformations import Identity, Scale

    shapes_key = f"{section}_spots"
    if isinstance(counts, ad.AnnData):
        adata = counts
    else:
        X = sparse.csr_matrix(counts.to_numpy(dtype=np.float32))
        adata = ad.AnnData(X=X, var=pd.DataFrame(index=pd.Index(counts.columns, name=None)))
    obs = obs.copy()
    obs.index = pd.Index([f"{section}_{i}" for i in obs.index], name=None)
    obs[K.REGION_KEY] = pd.Categorical([shapes_key] * len(obs))
    obs[K.INSTANCE_KEY] = np.arange(len(obs), dtype=np.int64)
    adata.obs = obs
    adata.obsm[K.SPATIAL] = np.asarray(xy, dtype=np.float64)
    meta = {"spot_diameter_um": spot_diameter_um, "platform": platform} if spot_diameter_um else {"platform": platform}
    adata.uns[K.META] = {shapes_key: meta}
    image_key = f"{section}_image"
    thumb, scalef = hires if image is not None and hires is not None else (None, None)
    adata.uns[K.SPATIAL] = {
        shapes_key: library_entry(
            spot_diameter_fullres=spot_diameter_px, hires=thumb, hires_scalef=scalef, spot_diameter_um=spot_diameter_um,
            metadata={"platform": platform, "image_key": image_key if image is not None else None},
        )
    }
    table = TableModel.parse(adata, region=shapes_key, region_key=K.REGION_KEY, instance_key=K.INSTANCE_KEY)

    gdf = gpd.GeoDataFrame(
        {"radius": np.full(len(obs), spot_diameter_px / 2.0)},
        geometry=[Point(float(x), float(y)) for x, y in xy],
        index=pd.RangeIndex(len(obs)),
    )
    shapes = ShapesModel.parse(gdf, transformations={"global": Identity()})
    images = {}
    if image is not None:
        t = Identity() if image_scale == 1.0 else Scale([1.0 / image_scale, 1.0 / image_scale], axes=("x", "y"))
        h, w = image.shape[1:]
        n_levels = max(0, min(5, int(np.floor(np.log2(max(min(h, w), 1) / 256)))))
        images[image_key] = Image2DModel.parse(
            image,
            dims=("c", "y", "x"),
            c_coords=["r", "g", "b"],
            transformations={"global": t},
            scale_factors=[2] * n_levels if n_levels else None,
            chunks=tuple(int(c) for c in image.chunksize),
        )
    return SpatialData(images=images, shapes={shapes_key: shapes}, tables={K.TABLE: table})


def read_st(
    counts: PathLike,
    spots: PathLike,
    image: PathLike | None = None,
    *,
    image_scale: float = 1.0,
    labels: PathLike | None = None,
    clusters: PathLike | None = None,
    cluster_names: PathLike | None = None,
    section: str | None = None,
):
    """Read one section of the legacy Spatial Transcriptomics platform into a SpatialData.

    Parameters
    ----------
    counts
        Spots × genes tab-separated counts (``ST-cnts/{S}.tsv.gz``); first column the spot id
        ``"{x}x{y}"`` in array coordinates, gene symbols as columns.
    spots
        Spot-detector file (``ST-spotfiles/{S}_selection.tsv``) with ``x``, ``y``, ``new_x``, ``new_y``,
        ``pixel_x``, ``pixel_y``, ``selected``; joined to the counts on ``f"{x}x{y}"``.
    image
        The section's H&E image (JPEG/PNG). Read lazily; decoded at most once, when first needed.
    image_scale
        Size of ``image`` relative to the resolution of ``pixel_x``/``pixel_y`` (0.5: a half-size image).
    labels
        Pathologist labels (``ST-pat/lbl/{S}_labeled_coordinates.tsv``; adjusted ``x``, ``y`` and ``label``),
        joined on ``f"{round(x)}x{round(y)}"`` → ``obs["label"]``.
    clusters
        Author expression clusters (``ST-cluster/lbl/{S}-cluster-annotation.tsv.gz``) → ``obs["cluster"]``.
    cluster_names
        ``ST-cluster/motivation.csv``: cluster names per patient → ``obs["cluster_name"]``. The patient
        is the first letter of ``section``.
    section
        Section name (e.g. ``"C2"``); default: the counts file name up to the first dot.

    Returns
    -------
    :class:`spatialdata.SpatialData` with table ``"table"`` (raw counts in ``X``, sparse;
    ``obsm["spatial"]`` spot centres in full-resolution pixels), circles ``"{section}_spots"`` (radius =
    half the 100 µm spot diameter, in pixels derived from the 200 µm grid) and, when given, the image
    ``"{section}_image"`` (multiscale, dask-backed) in the same ``global`` coordinate system. The table
    also carries squidpy's ``uns["spatial"]["{section}_spots"]`` (``hires``/``lowres`` thumbnails of the
    image, read at reduced size, scale factors and ``spot_diameter_fullres``), so ``sq.pl.spatial_scatter``
    and ``sc.pl.spatial`` plot it as is.
    ``obs["cancer"]`` is derived from the labels (invasive cancer or cancer in situ) when present,
    else from cluster names starting with "cancer"; spots without any label are ``False``.

    Examples
    --------
    >>> import stfuse as sf
    >>> d = "../shared/data/her2st"
    >>> sdata = sf.io.read_st(f"{d}/ST-cnts/C2.tsv.gz", f"{d}/ST-spotfiles/C2_selection.tsv")  # doctest: +SKIP
    >>> sdata.tables["table"].n_obs  # doctest: +SKIP
    187
    """
    counts_path = _path(counts, "Counts")
    spots_path = _path(spots, "Spot")
    section = section or counts_path.name.split(".")[0]
    if not image_scale > 0:
        raise InputError(f"image_scale must be positive, got {image_scale}.")
    df = _read_counts(counts_path)
    sp = _read_spots(spots_path)

    joined = df.index.isin(sp.index)
    if not joined.any():
        raise InputError(
            f"No spot id of {str(counts_path)!r} (e.g. {df.index[:3].tolist()}) matches a selected spot "
            f"'x'x'y' of {str(spots_path)!r} (e.g. {sp.index[:3].tolist()}): are they the same section?"
        )
    if not joined.all():
        log.warning(
            f"{int((~joined).sum())} of {len(df)} spots of {section} have no coordinates in the spot file; dropped."
        )
        df = df[joined]
    sp = sp.loc[df.index]
    xy = sp[["pixel_x", "pixel_y"]].to_numpy(np.float64)
    px_per_um = _pixels_per_micron(sp)
    diameter_px = ST_SPOT_DIAMETER_UM * px_per_um

    obs = pd.DataFrame(index=df.index)
    obs[K.SECTION] = pd.Categorical([section] * len(df))
    obs[K.ARRAY_COL] = sp["x"].to_numpy(int)
    obs[K.ARRAY_ROW] = sp["y"].to_numpy(int)

    if labels is not None:
        lb = pd.read_csv(_path(labels, "Labels"), sep="\t")
        if not {"x", "y", "label"} <= set(lb.columns):
            raise InputError(f"Labels file {str(labels)!r} needs columns x, y and label.")
        lb = lb[lb["x"].notna() & lb["y"].notna()]  # HER2ST F1 has a label row without coordinates
        lb.index = [f"{round(x)}x{round(y)}" for x, y in zip(lb["x"], lb["y"])]
        lb = lb[~lb.index.duplicated()]
        lab = lb["label"].reindex(obs.index)
        if lab.notna().sum() == 0:
            raise InputError(f"No label of {str(labels)!r} joins a spot of {section}: wrong section?")
        obs[K.LABEL] = pd.Categorical(lab.astype("string").str.strip().to_numpy(dtype=object))
    if clusters is not None:
        cl = pd.read_csv(_path(clusters, "Clusters"), sep="\t")
        if not {"x", "y", "label"} <= set(cl.columns):
            raise InputError(f"Clusters file {str(clusters)!r} needs columns x, y and label.")
        cl.index = [f"{int(x)}x{int(y)}" for x, y in zip(cl["x"], cl["y"])]
        cl = cl[~cl.index.duplicated()]
        cid = cl["label"].reindex(obs.index)
        obs[K.CLUSTER] = pd.Categorical([None if pd.isna(v) else str(int(v)) for v in cid])
        if cluster_names is not None:
            mot = _read_motivation(_path(cluster_names, "Cluster names"))
            names = dict(zip(mot.loc[mot["patient"] == section[0], "cluster"], mot.loc[mot["patient"] == section[0], "name"]))
            obs[K.CLUSTER_NAME] = pd.Categorical([names.get(c) if isinstance(c, str) else None for c in obs[K.CLUSTER]])
    if K.LABEL in obs:
        obs[K.CANCER] = obs[K.LABEL].isin(CANCER_LABELS).to_numpy(bool)
    elif K.CLUSTER_NAME in obs:
        obs[K.CANCER] = obs[K.CLUSTER_NAME].astype("string").str.startswith("cancer").fillna(False).to_numpy(bool)

    img = hires = None
    if image is not None:
        w, h, _ = image_size(_path(image, "Image"))
        full_w, full_h = w / image_scale, h / image_scale
        outside = (xy[:, 0] < 0) | (xy[:, 1] < 0) | (xy[:, 0] >= full_w) | (xy[:, 1] >= full_h)
        if outside.any():
            raise InputError(
                f"{int(outside.sum())} of {len(xy)} spot centres of {section} lie outside the image "
                f"({w}x{h} px at image_scale={image_scale}, i.e. {full_w:.0f}x{full_h:.0f} full-resolution px): "
                "wrong image for this section, or wrong image_scale?"
            )
        img = lazy_image(image)
        thumb = file_thumbnail(image, thumbnail_scale(h, w))
        hires = (thumb, thumb.shape[1] / w * image_scale)
    sdata = build_spatialdata(
        df, obs, xy, section=section, spot_diameter_px=diameter_px, spot_diameter_um=ST_SPOT_DIAMETER_UM,
        image=img, image_scale=image_scale, hires=hires, platform="ST",
    )
    log.info(f"read ST section {section}: {len(df)} spots, {df.shape[1]} genes, image={'yes' if img is not None else 'no'}")
    return sdata
