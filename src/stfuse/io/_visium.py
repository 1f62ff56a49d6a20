"""Visium through spatialdata-io (a thin wrapper that records the physical spot size)."""

from __future__ import annotations

import os
from typing import Any

from .. import _keys as K
from .._spots import VISIUM_SPOT_DIAMETER_UM
from ._squidpy import add_spatial_uns

__all__ = ["read_visium"]


def read_visium(path: str | os.PathLike, *, dataset_id: str | None = None, **kwargs: Any):
    """Read a 10x Visium Space Ranger output folder with :func:`spatialdata_io.visium`.

    stfuse adds only what it needs: the 55 µm spot diameter in ``table.uns["stfuse"]``, so tools can
    convert between pixels and microns, and, where spatialdata-io left none, squidpy's
    ``uns["spatial"][library_id]`` (small ``hires``/``lowres`` thumbnails of the finest image, scale
    factors, spot diameter), so ``sq.pl.spatial_scatter`` and ``sc.pl.spatial`` work on the table as is.

    Parameters
    ----------
    path
        The Space Ranger ``outs`` folder.
    dataset_id
        Passed to :func:`spatialdata_io.visium` (prefix of element names).
    **kwargs
        Passed to :func:`spatialdata_io.visium`.

    Returns
    -------
    :class:`spatialdata.SpatialData` as spatialdata-io returns it, with the spot size and squidpy's
    ``uns["spatial"]`` recorded in its table.

    Examples
    --------
    >>> import stfuse as sf
    >>> sdata = sf.io.read_visium("outs/")  # doctest: +SKIP
    >>> sf.tl.stmic(sdata, n_clusters=7)  # doctest: +SKIP
    """
    try:
        import spatialdata_io
    except ImportError:
        raise ImportError(
            "Reading Visium needs spatialdata-io: `pip install 'stfuse[visium]'` (or `pip install spatialdata-io`)."
        ) from None
    sdata = spatialdata_io.visium(path, dataset_id=dataset_id, **kwargs)
    for table in sdata.tables.values():
        attrs = table.uns.get("spatialdata_attrs", {})
        region = attrs.get("region")
        regions = [region] if isinstance(region, str) else list(region or [])
        meta = dict(table.uns.get(K.META, {}))
        for r in regions:
            meta[r] = {"spot_diameter_um": VISIUM_SPOT_DIAMETER_UM, "platform": "Visium"}
        table.uns[K.META] = meta
    add_spatial_uns(sdata, metadata={"platform": "Visium"})
    return sdata
