"""New tables of results: predictions as genes × spots, annotating the target's circles."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from .. import _keys as K
from .._spots import Spots, _spot_meta

__all__ = ["prediction_table"]


def prediction_table(spots: Spots, pred: np.ndarray, genes: list[str], uns: dict[str, Any], key_added: str,
                     *, measured: np.ndarray | None = None) -> Any:
    """A new table of predictions: genes as variables, one row per spot, annotating the same circles.

    Parameters
    ----------
    spots
        The predicted section (a SpatialData's spots).
    pred
        ``(n_spots, n_genes)`` predictions, rows in the order of ``spots``.
    genes
        Variable names.
    uns
        ``uns[key_added]`` of the new table.
    key_added
        Its key.
    measured
        ``(n_spots, n_genes)`` measured expression normalised like the predictions, written as layer
        :data:`stfuse._keys.MEASURED` (``None``: no measurement).

    Returns
    -------
    A :class:`anndata.AnnData` parsed by :class:`spatialdata.models.TableModel`, with ``obsm["spatial"]``.

    Examples
    --------
    >>> import numpy as np
    >>> import stfuse as sf
    >>> from stfuse._spots import get_spots
    >>> from stfuse.data import prediction_table
    >>> spots = get_spots(sf.datasets.toy(n_spots=50))
    >>> t = prediction_table(spots, np.zeros((50, 2), np.float32), ["G001", "G002"], {}, "pred")
    >>> t.shape, "spatial" in t.obsm
    ((50, 2), True)
    """
    import anndata as ad
    from spatialdata.models import TableModel, get_table_keys

    if spots.table_in_data:
        obs = spots.table.obs.copy()
        _, region_key, instance_key = get_table_keys(spots.table)
        instances = spots.table.obs[instance_key].to_numpy()
        obs = obs.drop(columns=[c for c in (region_key, instance_key) if c in obs.columns])
    else:
        obs = spots.table.obs.drop(columns=[K.REGION_KEY, K.INSTANCE_KEY])
        instances = spots.table.obs[K.INSTANCE_KEY].to_numpy()
    obs[K.REGION_KEY] = pd.Categorical([spots.shapes_key] * len(obs))
    obs[K.INSTANCE_KEY] = instances
    table = ad.AnnData(X=pred, obs=obs, var=pd.DataFrame(index=pd.Index(genes, dtype=object)))
    if measured is not None:
        table.layers[K.MEASURED] = measured
    spatial = spots.table.obsm.get(K.SPATIAL) if spots.table_in_data else None
    table.obsm[K.SPATIAL] = np.asarray(spatial if spatial is not None else spots.centers, dtype=np.float64)
    meta = dict(_spot_meta(spots.data, spots.table, spots.shapes_key))
    if meta:
        table.uns[K.META] = {spots.shapes_key: meta}
    table.uns[key_added] = uns
    return TableModel.parse(table, region=spots.shapes_key, region_key=K.REGION_KEY, instance_key=K.INSTANCE_KEY)
