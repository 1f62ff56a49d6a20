"""Bad input matrix: every tool refuses each kind of bad input with stfuse's own error naming the problem and the
fix, and leaves the user's object exactly as it was (compared against a deep copy)."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import torch
from scipy import sparse

import stfuse as sf
from _tiny import SPACRD_TINY, assert_unchanged

# ---------------------------------------------------------------- the tools, with tiny settings


def _stmic(s, **kw):
    return sf.tl.stmic(s, **{"n_clusters": 3, **kw})


def _senca(s, **kw):
    return sf.tl.senca(s, **{"n_clusters": 3, "hidden": 8, "latent": 4, "steps": 1, **kw})


def _spacrd(s, **kw):
    ref = sf.datasets.toy(n_spots=120, n_genes=80, seed=6)
    return sf.tl.spacrd(s, ref, **{**SPACRD_TINY, **kw})


def _embed(s, **kw):
    return sf.im.embed(s, **kw)


def _graph(s, **kw):
    return sf.gr.spatial_graph(s, **kw)


def _patches(s, **kw):
    return list(sf.im.extract_patches(s, size_px=16, **kw))


def _histospace(s, **kw):
    return sf.tl.histospace(s, genes=["G030", "G031"], epochs=1, tile_px=32, encoder_weights="random", tta=False, **kw)


def _plot(s, **kw):
    return sf.pl.spots(s, "region", **kw)


TOOLS: dict[str, Callable[..., Any]] = {"stmic": _stmic, "senca": _senca, "spacrd": _spacrd, "histospace": _histospace,
                                        "embed": _embed, "spatial_graph": _graph, "extract_patches": _patches,
                                        "pl.spots": _plot}
IMAGE_TOOLS = {"stmic", "senca", "spacrd", "embed", "extract_patches", "histospace"}
COUNT_TOOLS = {"stmic", "senca", "spacrd", "histospace"}
CLUSTER_TOOLS = {"stmic", "senca"}

# ---------------------------------------------------------------- the corruptions: mutate, return extra kwargs


def _table(s):
    return s.tables["table"]


def nan_counts(s):
    X = _table(s).X.toarray() if sparse.issparse(_table(s).X) else np.array(_table(s).X)
    X[0, 0] = np.nan
    _table(s).X = sparse.csr_matrix(X)
    return {}


def inf_counts(s):
    X = _table(s).X.toarray()
    X[1, 2] = np.inf
    _table(s).X = sparse.csr_matrix(X)
    return {}


def negative_counts(s):
    X = _table(s).X.toarray()
    X[2, 1] = -3
    _table(s).X = sparse.csr_matrix(X)
    return {}


def empty_spot(s):
    X = _table(s).X.toarray()
    X[3] = 0
    _table(s).X = sparse.csr_matrix(X)
    return {}


def all_zero(s):
    _table(s).X = sparse.csr_matrix(_table(s).shape, dtype=np.float32)
    return {}


def duplicated_spots(s):
    t = _table(s)
    t.obs_names = [t.obs_names[0], *list(t.obs_names[1:-1]), t.obs_names[0]]
    return {}


def duplicated_genes(s):
    t = _table(s)
    t.var_names = [t.var_names[0]] * 2 + list(t.var_names[2:])
    return {}


def missing_table(s):
    return {"table_key": "tabel"}


def missing_image_key(s):
    return {"image_key": "he_image"}


def missing_shapes_key(s):
    return {"shapes_key": "cells"}


def two_images(s):
    from spatialdata.models import Image2DModel

    s.images["other_image"] = Image2DModel.parse(np.zeros((3, 32, 32), np.uint8), dims=("c", "y", "x"))
    return {}


def other_coordinate_system(s):
    from spatialdata.transformations import Identity, set_transformation

    set_transformation(s.images["toy_image"], {"elsewhere": Identity()}, set_all=True)
    return {}


def outside_image(s):
    from spatialdata.transformations import Scale, set_transformation

    set_transformation(s.images["toy_image"], Scale([0.25, 0.25], axes=("y", "x")), to_coordinate_system="global")
    return {}


def nan_centres(s):
    import shapely

    gdf = s.shapes["toy_spots"]
    gdf.loc[gdf.index[0], "geometry"] = shapely.Point(np.nan, np.nan)
    return {}


def wrong_encoder(s):
    return {"encoder": torch.nn.Conv2d(3, 4, 3)}


def too_many_clusters(s):
    return {"n_clusters": 500}


def too_many_neighbours(s):
    return {"n_neighs": 500}


def not_sdata(s):
    return "not_sdata"


CORRUPTIONS: dict[str, tuple[Callable, str, set[str] | None]] = {
    "nan_counts": (nan_counts, "NaN or infinite", COUNT_TOOLS),
    "inf_counts": (inf_counts, "NaN or infinite", COUNT_TOOLS),
    "negative_counts": (negative_counts, "negative values", COUNT_TOOLS),
    "empty_spot": (empty_spot, "no counts", COUNT_TOOLS),
    "all_zero": (all_zero, "no counts", COUNT_TOOLS),
    "duplicated_spots": (duplicated_spots, "duplicated spot names", None),
    "duplicated_genes": (duplicated_genes, "duplicated gene names", COUNT_TOOLS),
    "missing_table": (missing_table, "No table 'tabel'.*available", None),
    "missing_image_key": (missing_image_key, "No image 'he_image'.*available", IMAGE_TOOLS),
    "missing_shapes_key": (missing_shapes_key, "cells", None),
    "two_images": (two_images, "Several images fit.*other_image", IMAGE_TOOLS),
    "other_coordinate_system": (other_coordinate_system, "coordinate system", IMAGE_TOOLS),
    "outside_image": (outside_image, "lie outside image", IMAGE_TOOLS),
    "nan_centres": (nan_centres, "NaN or infinite", None),
    "wrong_encoder": (wrong_encoder, r"must return \(batch, features\)", {"stmic", "senca", "spacrd", "embed"}),
    "too_many_clusters": (too_many_clusters, "n_clusters", CLUSTER_TOOLS),
    "too_many_neighbours": (too_many_neighbours, "n_neighs", {"spatial_graph", "senca", "stmic"}),
    "not_sdata": (not_sdata, "SpatialData or .*AnnData", None),
}

@pytest.fixture(scope="module")
def small():
    return sf.datasets.toy(n_spots=120, n_genes=80, seed=5)


CASES = [(t, c) for c, (_, _, only) in CORRUPTIONS.items() for t in TOOLS if only is None or t in only]


@pytest.mark.parametrize(("tool", "corruption"), CASES, ids=[f"{t}-{c}" for t, c in CASES])
def test_bad_input_refused_and_object_unchanged(small, tool, corruption):
    mutate, match, _ = CORRUPTIONS[corruption]
    sdata = copy.deepcopy(small)
    kwargs = mutate(sdata)
    if isinstance(kwargs, str):  # the wrong object type itself
        with pytest.raises(sf.StfuseError, match=match):
            TOOLS[tool](np.zeros((3, 3)))
        return
    before = copy.deepcopy(sdata)
    with pytest.raises(sf.StfuseError, match=match):
        TOOLS[tool](sdata, **kwargs)
    assert_unchanged(before, sdata)


@pytest.mark.parametrize("tool", sorted(COUNT_TOOLS))
def test_failing_tool_records_no_assumed_spot_size(small, tool):
    # an AnnData without spot_diameter_um: the spot size is assumed from the lattice, but recorded in
    # uns["stfuse"] only with the results, so a refused call leaves the object as it was
    adata = small.tables["table"].copy()
    del adata.uns["stfuse"]
    for lib in adata.uns["spatial"].values():
        lib["scalefactors"].pop("spot_diameter_um", None)
    before = copy.deepcopy(adata)
    kwargs = too_many_neighbours(None) if tool in CLUSTER_TOOLS else {"layer": "nope"}
    with pytest.warns(UserWarning, match="assuming Visium"), pytest.raises(sf.StfuseError):
        TOOLS[tool](adata, **kwargs)
    assert set(adata.uns) == set(before.uns) and "stfuse" not in adata.uns
    assert list(adata.obs) == list(before.obs) and set(adata.obsm) == set(before.obsm)
