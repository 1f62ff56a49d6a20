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
    with pytest.warns(UserWarning, match="hex lattice, so assuming Visium spots of 55 µm"):
        s = get_spots(a)
    assert np.allclose(s.centers, s0.centers)
    assert s.diameter == pytest.approx(24.0)
    assert s.microns_per_pixel == pytest.approx(55 / 24)
    assert s.library_id == "lib"
    assert "stfuse" not in a.uns  # resolving writes nothing; the assumption is recorded with the results
    assert s.meta_to_record["lib"]["spot_diameter_um"] == 55.0


def _squidpy_anndata(xy: np.ndarray, libs: dict[str, dict]) -> ad.AnnData:
    a = ad.AnnData(X=np.ones((len(xy), 3), np.float32))
    a.obsm["spatial"] = xy
    a.uns["spatial"] = libs
    return a


def _square_lattice(n: int = 12, pitch: float = 272.0) -> np.ndarray:
    r, c = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
    return np.column_stack([c.ravel(), r.ravel()]).astype(float) * pitch + 300.0


def test_spot_size_of_legacy_st_anndata_is_inferred_from_the_lattice():
    # a legacy ST section (square lattice, 200 µm pitch = 272 px) without spot_diameter_um: not Visium's 55 µm
    a = _squidpy_anndata(_square_lattice(), {"st": {"scalefactors": {"spot_diameter_fullres": 136.0}}})
    with pytest.warns(UserWarning, match="square lattice, so assuming ST spots of 100 µm"):
        s = get_spots(a)
    assert s.microns_per_pixel == pytest.approx(100 / 136)
    assert "stfuse" not in a.uns
    s.write(None)  # the one writer records the assumption
    assert a.uns["stfuse"]["st"] == {"spot_diameter_um": 100.0, "platform": "ST",
                                     "assumed": "spot_diameter_um from the square lattice"}
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # recorded: no second warning
        assert get_spots(a).microns_per_pixel == pytest.approx(100 / 136)
    # irregular spots: the size in µm is unknown, not guessed
    rnd = np.random.default_rng(0).uniform(0, 3000, (150, 2))
    b = _squidpy_anndata(rnd, {"x": {"scalefactors": {"spot_diameter_fullres": 50.0}}})
    with pytest.warns(UserWarning, match="size in µm is unknown"):
        assert get_spots(b).microns_per_pixel is None
    # a recorded diameter is used as is, silently
    c = _squidpy_anndata(_square_lattice(), {"v": {"scalefactors": {"spot_diameter_fullres": 136.0,
                                                                     "spot_diameter_um": 55.0}}})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert get_spots(c).microns_per_pixel == pytest.approx(55 / 136)
    assert "stfuse" not in c.uns


def test_anndata_with_several_libraries():
    sc_ = {"spot_diameter_fullres": 136.0, "spot_diameter_um": 100.0}
    xy = _square_lattice()
    a = _squidpy_anndata(xy, {"A": {"scalefactors": sc_}, "B": {"scalefactors": {**sc_, "spot_diameter_um": 50.0}}})
    with pytest.raises(sf.KeyNotFoundError, match=r"Several libraries fit: \['A', 'B'\]. Pass library_id="):
        get_spots(a)
    assert get_spots(a, library_id="B").microns_per_pixel == pytest.approx(50 / 136)
    # a table concatenated from sections: library_key names each spot's library
    a.obs["library_id"] = pd.Categorical(["A"] * 72 + ["B"] * 72)
    with pytest.raises(sf.InputError, match=r"libraries \['A', 'B'\].*one section at a time"):
        get_spots(a, library_key="library_id")
    with pytest.raises(sf.KeyNotFoundError, match="No column 'batch'"):
        get_spots(a, library_key="batch")
    b = a[a.obs["library_id"] == "B"].copy()
    s = get_spots(b, library_key="library_id")
    assert s.library_id == "B" and s.microns_per_pixel == pytest.approx(50 / 136)
    with pytest.raises(sf.InputError, match="not of library 'A' alone"):
        get_spots(b, library_id="A", library_key="library_id")


def test_table_key_inferred_from_the_only_table(toy):
    t = toy.tables["table"]
    del toy.tables["table"]
    toy.tables["expression"] = t
    s = get_spots(toy)
    assert s.table_key == "expression"
    toy.tables["other"] = t.copy()
    with pytest.raises(sf.KeyNotFoundError, match=r"Several tables fit: \['expression', 'other'\]"):
        get_spots(toy)
    assert get_spots(toy, table_key="other").table_key == "other"


def test_coordinate_system_keyword(toy):
    from spatialdata.transformations import Identity, Scale, set_transformation

    set_transformation(toy.shapes["toy_spots"], Identity(), to_coordinate_system="aligned")
    set_transformation(toy.images["toy_image"], Scale([2.0, 2.0], axes=("x", "y")), to_coordinate_system="aligned")
    assert np.allclose(get_spots(toy).centers, toy.tables["table"].obsm["spatial"])  # "global" first
    s = get_spots(toy, coordinate_system="aligned")
    assert np.allclose(s.centers, toy.tables["table"].obsm["spatial"] / 2)
    with pytest.raises(sf.KeyNotFoundError, match="not in coordinate system 'nope'"):
        get_spots(toy, coordinate_system="nope")


def _visium_like_spatialdata_io(toy) -> sd.SpatialData:
    """A SpatialData laid out as spatialdata-io's Visium reader writes it.

    Spots in full-resolution pixels (``global``, plus ``downscaled_hires``/``downscaled_lowres``), and the
    ``hires`` and ``lowres`` images, each in its own downscaled system and in ``global`` by the inverse scale.
    """
    from spatialdata.models import Image2DModel, ShapesModel, TableModel
    from spatialdata.transformations import Identity, Scale

    full = np.asarray(get_spots(toy).levels[0].data.compute())  # (c, y, x), plays the full-res image
    hires_s, lowres_s = 0.5, 0.125
    hires = full[:, ::2, ::2]
    lowres = full[:, ::8, ::8]
    t = toy.tables["table"]
    xy = np.asarray(t.obsm["spatial"])
    circles = ShapesModel.parse(xy, geometry=0, radius=np.full(len(xy), 12.0), index=np.arange(len(xy)),
                                transformations={"global": Identity(),
                                                 "downscaled_hires": Scale([hires_s, hires_s], axes=("x", "y")),
                                                 "downscaled_lowres": Scale([lowres_s, lowres_s], axes=("x", "y"))})
    images = {
        "ds_hires_image": Image2DModel.parse(hires, dims=("c", "y", "x"), transformations={
            "downscaled_hires": Identity(), "global": Scale([1 / hires_s, 1 / hires_s], axes=("x", "y"))}),
        "ds_lowres_image": Image2DModel.parse(lowres, dims=("c", "y", "x"), transformations={
            "downscaled_lowres": Identity(), "global": Scale([1 / lowres_s, 1 / lowres_s], axes=("x", "y"))}),
    }
    table = ad.AnnData(X=t.X.copy(), obs=pd.DataFrame({"region": pd.Categorical(["ds"] * len(xy)),
                                                       "spot_id": np.arange(len(xy))}, index=t.obs_names))
    table = TableModel.parse(table, region="ds", region_key="region", instance_key="spot_id")
    table.uns["stfuse"] = {"ds": {"spot_diameter_um": 55.0, "platform": "Visium"}}  # as sf.io.read_visium adds
    return sd.SpatialData(images=images, shapes={"ds": circles}, tables={"table": table})


def test_visium_from_spatialdata_io_picks_the_finest_image(toy):
    sdata = _visium_like_spatialdata_io(toy)
    s = get_spots(sdata)
    assert s.image_key == "ds_hires_image"
    assert np.allclose(s.centers, toy.tables["table"].obsm["spatial"] / 2)  # hires pixels
    assert s.diameter == pytest.approx(12.0) and s.microns_per_pixel == pytest.approx(55 / 12)
    assert get_spots(sdata, image_key="ds_lowres_image").image_key == "ds_lowres_image"
    s = get_spots(sdata, coordinate_system="downscaled_lowres")
    assert s.image_key == "ds_lowres_image" and np.allclose(s.centers, toy.tables["table"].obsm["spatial"] / 8)


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


def test_settings_n_jobs_sets_torch_and_numba_threads():
    import numba
    import torch

    before = torch.get_num_threads()
    try:
        sf.settings.n_jobs = 2
        assert torch.get_num_threads() == 2
        assert numba.get_num_threads() == min(2, numba.config.NUMBA_NUM_THREADS)
        assert sf.settings.threads(2) == 1 and sf.settings.threads(3) == 1
        sf.settings.n_jobs = 1
        assert torch.get_num_threads() == 1
        with pytest.raises(sf.InputError, match="n_jobs"):
            sf.settings.n_jobs = 0
    finally:
        sf.settings.n_jobs = None
        torch.set_num_threads(before)


@pytest.mark.parametrize("how", ["env", "torch"])
def test_graph_and_normalisation_keep_torch_threads(how):
    # numba's OpenMP layer resets the shared OpenMP thread count when it first starts, so the check
    # needs a fresh process; both numba starters stfuse meets are called (its kNN, scanpy's normalize_total)
    import os
    import subprocess
    import sys

    code = (
        "import torch, numpy as np, stfuse as sf\n"
        + ("torch.set_num_threads(1)\n" if how == "torch" else "")
        + "sf.pp.prepare_expression(sf.datasets.toy(n_spots=100, image=False).tables['table'], n_top_genes=20)\n"
        "sf.gr.knn(np.random.default_rng(0).random((200, 2)), 4)\n"
        "sf.gr.radius_neighbors(np.random.default_rng(0).random((200, 2)), 0.1)\n"
        "print(torch.get_num_threads())\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "NUMBA_NUM_THREADS")}
    if how == "env":
        env["OMP_NUM_THREADS"] = "1"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == "1"


def test_settings_seed_is_the_default_seed():
    old = sf.settings.seed
    try:
        sf.settings.seed = 3
        assert sf.settings.resolve_seed(None) == 3 and sf.settings.resolve_seed(5) == 5
        a = sf.datasets.toy(n_spots=100).tables["table"].X
        b = sf.datasets.toy(n_spots=100, seed=3).tables["table"].X
        c = sf.datasets.toy(n_spots=100, seed=0).tables["table"].X
        assert (a != b).nnz == 0 and (a != c).nnz > 0
    finally:
        sf.settings.seed = old


def test_cuda_without_cuda_is_an_input_error():
    import torch

    if torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    for device in ("cuda", "cuda:1"):
        with pytest.raises(sf.InputError, match="CUDA is not available"):
            sf.settings.resolve_device(device)
    with pytest.raises(sf.InputError, match="Unknown device 'gpu0'"):
        sf.settings.resolve_device("gpu0")


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
    with pytest.raises(sf.InputError, match="only be written as new elements"):
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


def test_read_visium_example_runs_on_spatialdata_io_layout():
    # sf.io.read_visium's docstring example: a tool on Visium as spatialdata-io lays it out
    sdata = _visium_like_spatialdata_io(sf.datasets.toy(n_spots=120, n_genes=80, seed=5))
    sf.tl.stmic(sdata, n_clusters=3)
    assert sdata.tables["table"].obs["stmic"].nunique() == 3
