from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import spatialdata as sd

import stfuse as sf
from stfuse import _keys as K
from stfuse._spots import get_spots


def test_toy_regions_and_modalities(toy):
    t = toy.tables["table"]
    assert t.n_obs == 400
    assert list(t.obs["region"].cat.categories) == ["A", "B", "C", "D"]
    counts = t.obs["region"].value_counts()
    assert (counts > 20).all()
    # expression: A differs from B, C equals D (programme 2)
    X = np.log1p(t.X.toarray() / t.X.sum(axis=1).A * 1e4)
    mean = pd.DataFrame(X).groupby(t.obs["region"].to_numpy(), observed=True).mean()
    assert np.abs(mean.loc["A"] - mean.loc["B"]).max() > 0.8
    assert np.abs(mean.loc["C", :45] - mean.loc["D", :45]).max() < 0.5
    # image: A looks like B, C differs from D (mean RGB of spot patches)
    spots = get_spots(toy)
    img = spots.levels[0].data.compute().astype(float)
    r = int(spots.diameter / 2)
    rgb = np.array([img[:, int(y) - r : int(y) + r, int(x) - r : int(x) + r].mean(axis=(1, 2)) for x, y in spots.centers])
    m = pd.DataFrame(rgb).groupby(t.obs["region"].to_numpy(), observed=True).mean()
    assert np.abs(m.loc["A"] - m.loc["B"]).max() < 5
    assert np.abs(m.loc["C"] - m.loc["D"]).max() > 30


def test_toy_deterministic_and_chunk_independent():
    a = sf.datasets.toy(n_spots=100, seed=3, chunks=256)
    b = sf.datasets.toy(n_spots=100, seed=3, chunks=1000)
    ia = get_spots(a).levels[0].data.compute()
    ib = get_spots(b).levels[0].data.compute()
    assert np.array_equal(ia, ib)
    assert (a.tables["table"].X != b.tables["table"].X).nnz == 0
    c = sf.datasets.toy(n_spots=100, seed=4)
    assert (a.tables["table"].X != c.tables["table"].X).nnz > 0


def test_toy_bad_args():
    with pytest.raises(sf.InputError, match="at least 16"):
        sf.datasets.toy(n_spots=3)


def test_spots_view_resolves_geometry(toy):
    s = get_spots(toy)
    assert s.centers.shape == (400, 2)
    assert s.diameter == pytest.approx(24.0)
    assert s.microns_per_pixel == pytest.approx(55 / 24)
    assert s.image_key == "toy_image" and s.shapes_key == "toy_spots"
    assert len(s.levels) >= 1 and s.levels[0].scale == 1.0
    assert np.allclose(s.centers, toy.tables["table"].obsm["spatial"])


def test_spots_view_follows_transformations(toy):
    from spatialdata.transformations import Scale, set_transformation

    # image stored at half size: level-0 pixels of the image are half the global units
    img = toy.images["toy_image"]
    set_transformation(img, Scale([2.0, 2.0], axes=("x", "y")), to_coordinate_system="global")
    s = get_spots(toy)
    assert np.allclose(s.centers, toy.tables["table"].obsm["spatial"] / 2)
    assert s.diameter == pytest.approx(12.0)


def test_spots_ambiguous_image_lists_candidates(toy):
    toy.images["other"] = toy.images["toy_image"]
    with pytest.raises(sf.KeyNotFoundError, match=r"\['other', 'toy_image'\]"):
        get_spots(toy)
    assert get_spots(toy, image_key="other").image_key == "other"


def test_spots_no_shared_coordinate_system(toy):
    from spatialdata.transformations import Identity, remove_transformation, set_transformation

    img = toy.images["toy_image"]
    set_transformation(img, Identity(), to_coordinate_system="elsewhere")
    remove_transformation(img, "global")
    with pytest.raises(sf.InputError, match="share no coordinate system"):
        get_spots(toy, image_key="toy_image")
    assert not get_spots(toy).has_image  # inferred: no image in the spots' coordinate system


def test_spots_missing_table_key(toy):
    with pytest.raises(sf.KeyNotFoundError, match="available tables"):
        get_spots(toy, table_key="nope")


def test_spots_wrong_type():
    with pytest.raises(sf.InputError, match=r"Expected a spatialdata\.SpatialData"):
        get_spots(np.zeros((3, 3)))


def test_spots_from_squidpy_anndata(toy):
    s0 = get_spots(toy)
    t = toy.tables["table"]
    hires = s0.levels[0].data.compute().transpose(1, 2, 0)
    a = ad.AnnData(X=t.X.copy(), obs=t.obs[["region"]].copy())
    a.obsm["spatial"] = t.obsm["spatial"] * 4.0  # full-res pixels, hires = 1/4 of full res
    a.uns["spatial"] = {"lib": {"images": {"hires": hires},
                                "scalefactors": {"tissue_hires_scalef": 0.25, "spot_diameter_fullres": 96.0}}}
    s = get_spots(a)
    assert np.allclose(s.centers, s0.centers)
    assert s.diameter == pytest.approx(24.0)
    assert s.microns_per_pixel == pytest.approx(55 / 24)
    assert s.library_id == "lib"


def test_spots_multi_region_table_refused(toy):
    t = toy.tables["table"]
    t2 = t.copy()
    t2.obs[K.REGION_KEY] = pd.Categorical(["toy_spots"] * 200 + ["other_spots"] * 200)
    t2.uns.pop("spatialdata_attrs")
    from spatialdata.models import TableModel

    toy.shapes["other_spots"] = toy.shapes["toy_spots"]
    toy.tables["table"] = TableModel.parse(t2, region=["toy_spots", "other_spots"], region_key=K.REGION_KEY,
                                           instance_key=K.INSTANCE_KEY)
    with pytest.raises(sf.KeyNotFoundError, match="Several shapes elements"):
        get_spots(toy)
    with pytest.raises(sf.InputError, match="one section at a time"):
        get_spots(toy, shapes_key="toy_spots")


def test_write_copy_and_warning(toy):
    s = get_spots(toy)
    out = s.write("x", obs={"x": np.arange(400)}, copy=True)
    assert "x" in out.tables["table"].obs and "x" not in toy.tables["table"].obs
    assert out.images["toy_image"] is toy.images["toy_image"]
    s.write("x", obs={"x": np.arange(400)})
    with pytest.warns(UserWarning, match="Replacing existing results"):
        s.write("x", obs={"x": np.zeros(400)})


def test_toy_roundtrip(tmp_path):
    sdata = sf.datasets.toy(n_spots=100)
    sdata.write(tmp_path / "toy.zarr")
    back = sd.read_zarr(tmp_path / "toy.zarr")
    assert back.tables["table"].obs["region"].tolist() == sdata.tables["table"].obs["region"].tolist()
    assert np.allclose(get_spots(back).centers, get_spots(sdata).centers)


def test_settings():
    assert sf.settings.resolve_device("auto") in ("cpu", "cuda", "mps")
    assert sf.settings.resolve_device("cpu") == "cpu"
    with pytest.raises(ValueError, match="verbosity"):
        sf.settings.verbosity = 9
    old = sf.settings.verbosity
    sf.settings.verbosity = None
    import scanpy as sc

    assert sf.settings.verbosity == int(sc.settings.verbosity)
    sf.settings.verbosity = old


def test_spots_from_circles_without_table(toy):
    s = get_spots(toy, table_key="nope", require_table=False)
    assert not s.table_in_data and s.shapes_key == "toy_spots" and s.n_obs == 400
    assert s.table.n_vars == 0 and s.table.obs[K.INSTANCE_KEY].tolist() == list(range(400))
    assert np.allclose(s.centers, toy.tables["table"].obsm["spatial"])
    assert s.microns_per_pixel == pytest.approx(55 / 24)  # found in the table annotating the circles
    assert s.has_image
    # a table that annotates other circles: the given circles are used on their own
    toy.shapes["other"] = toy.shapes["toy_spots"].iloc[:10]
    s2 = get_spots(toy, shapes_key="other", require_table=False)
    assert s2.n_obs == 10 and not s2.table_in_data
    with pytest.raises(sf.KeyNotFoundError, match="not shapes 'other'"):
        get_spots(toy, shapes_key="other")
    with pytest.raises(sf.KeyNotFoundError, match="Several circles"):
        get_spots(toy, table_key="nope", require_table=False)
    # results of such spots can only be written as new tables
    with pytest.raises(sf.InputError, match="only be written as new tables"):
        s2.write("x", obs={"x": np.zeros(10)})


def test_spots_without_any_circles():
    from spatialdata import SpatialData

    sdata = sf.datasets.toy(n_spots=100)
    empty = SpatialData(images=dict(sdata.images))
    with pytest.raises(sf.KeyNotFoundError, match="tile_tissue"):
        get_spots(empty, require_table=False)


def test_spots_outside_image_refused(toy):
    from spatialdata.transformations import Scale, set_transformation

    # the image claims to cover only a quarter of the global space: most spots fall outside it
    set_transformation(toy.images["toy_image"], Scale([0.25, 0.25], axes=("x", "y")), to_coordinate_system="global")
    with pytest.raises(sf.InputError, match="lie outside image"):
        get_spots(toy)
