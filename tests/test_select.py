"""The section-choosing keywords (table_key, shapes_key, image_key, library_id, library_key, coordinate_system):
every tool takes them with get_spots' defaults and passes them through, as a scanpy / SpatialData user calls it."""

from __future__ import annotations

import inspect

import anndata as ad
import numpy as np
import pytest
import spatialdata as sd

import stfuse as sf
from stfuse._spots import SELECT, get_spots, selection
from stfuse.cli import main
from stfuse.pl._figure import PlotOptions

TOOLS = [sf.tl.stmic, sf.tl.stmic_markers, sf.tl.senca, sf.tl.spacrd, sf.tl.histospace, sf.im.embed,
         sf.im.extract_patches]


@pytest.mark.parametrize("func", TOOLS, ids=lambda f: f.__name__)
def test_every_tool_takes_the_selection_keywords(func):
    params = inspect.signature(func).parameters
    for name in SELECT:
        assert params[name].default is None, (func.__name__, name)
        assert f"\n    {name}\n" in func.__doc__, (func.__name__, name)  # the shared docs were injected
    tile = inspect.signature(sf.tl.tile_tissue).parameters
    assert all(tile[n].default is None for n in ("table_key", "shapes_key", "image_key", "coordinate_system"))


def test_plot_options_pass_every_selection_keyword():
    opts = PlotOptions(library_id="A", library_key="lib", coordinate_system="cs")
    assert selection(vars(opts)) == {"table_key": None, "shapes_key": None, "image_key": None, "library_id": "A",
                                     "library_key": "lib", "coordinate_system": "cs"}
    params = inspect.signature(sf.pl.spots).parameters
    assert all(params[n].default is None for n in SELECT)


def _section(seed: int, lib: str) -> ad.AnnData:
    """One toy section as a squidpy-style AnnData whose library is ``lib`` (no recorded spot size in µm)."""
    a = sf.datasets.toy(n_spots=120, n_genes=60, seed=seed).tables["table"].copy()
    entry = a.uns["spatial"]["toy_spots"]
    entry["scalefactors"].pop("spot_diameter_um")
    a.uns = {"spatial": {lib: entry}}
    a.obs["library_id"] = lib
    a.obs_names = [f"{lib}_{i}" for i in range(a.n_obs)]
    return a


@pytest.fixture(scope="module")
def concatenated() -> ad.AnnData:
    """Two sections concatenated as a scanpy user does (``uns["spatial"]`` holds both libraries)."""
    a = ad.concat([_section(0, "A"), _section(1, "B")], uns_merge="unique")
    a.obs["library_id"] = a.obs["library_id"].astype("category")
    return a


def test_concatenated_anndata_one_library_at_a_time(concatenated):
    adata = concatenated.copy()
    with pytest.raises(sf.KeyNotFoundError, match=r"Several libraries fit.*library_id="):
        sf.tl.stmic(adata, n_clusters=3, modality="expression")
    with pytest.raises(sf.InputError, match="one section at a time"):
        sf.tl.stmic(adata, n_clusters=3, modality="expression", library_key="library_id")
    assert set(adata.obs) == set(concatenated.obs) and set(adata.uns) == set(concatenated.uns)

    sub = adata[adata.obs["library_id"] == "B"].copy()
    with pytest.warns(UserWarning, match="assuming Visium spots of 55 µm"):
        sf.tl.stmic(sub, n_clusters=3, modality="expression", library_key="library_id")
    assert sub.obs["stmic"].nunique() == 3
    assert sub.uns["stfuse"]["B"]["spot_diameter_um"] == 55.0  # the assumption, recorded with the results
    # library_id alone chooses the image and scale factors of uns["spatial"]
    sf.tl.stmic_markers(sub, library_id="B")
    assert "rank_genes_groups" in sub.uns
    batch = next(sf.im.extract_patches(sub, library_id="B", size_px=16, out_px=16, batch_size=8))
    assert batch.patches.shape == (8, 3, 16, 16)
    other = adata[adata.obs["library_id"] == "A"].copy()
    with pytest.warns(UserWarning, match="assuming Visium"):
        spots = get_spots(other, library_id="A")
    assert spots.library_id == "A" and np.allclose(spots.centers, other.obsm["spatial"] * 0.5)


def test_assumed_spot_size_recorded_in_the_copy_only(concatenated):
    sub = concatenated[concatenated.obs["library_id"] == "A"].copy()
    with pytest.warns(UserWarning, match="assuming Visium"):
        out = sf.tl.stmic(sub, n_clusters=3, modality="expression", library_id="A", copy=True)
    assert "stfuse" not in sub.uns and "stmic" not in sub.obs
    assert out.uns["stfuse"]["A"] == {"spot_diameter_um": 55.0, "platform": "Visium",
                                      "assumed": "spot_diameter_um from the hex lattice"}


def _renamed(n_spots: int = 150) -> sd.SpatialData:
    """The toy with its one table under a name other than ``"table"``."""
    sdata = sf.datasets.toy(n_spots=n_spots, n_genes=60)
    table = sdata.tables["table"]
    del sdata.tables["table"]
    sdata.tables["expression"] = table
    return sdata


def test_one_table_under_another_name_needs_no_table_key():
    sdata = _renamed()
    sf.tl.stmic(sdata, n_clusters=3, modality="expression")
    assert sdata.tables["expression"].obs["stmic"].nunique() == 3
    sf.tl.stmic_markers(sdata)
    assert "rank_genes_groups" in sdata.tables["expression"].uns
    assert len(list(sf.im.extract_patches(sdata, size_px=16, out_px=16))) > 0
    fig = sf.pl.stmic(sdata, return_fig=True, show=False)
    assert fig is not None


def test_cli_infers_the_only_table(tmp_path, capsys):
    path = tmp_path / "renamed.zarr"
    _renamed().write(path)
    assert main(["run", "stmic", str(path), "--n-clusters", "3", "--modality", "expression"]) == 0
    assert "new obs columns: ['stmic']" in capsys.readouterr().out
    assert sd.read_zarr(path).tables["expression"].obs["stmic"].nunique() == 3
    assert main(["run", "stmic", str(path), "--coordinate-system", "nope", "--modality", "expression"]) == 2
    assert "not in coordinate system 'nope'" in capsys.readouterr().err


def test_coordinate_system_reaches_the_tool():
    sdata = sf.datasets.toy(n_spots=150, n_genes=60)
    with pytest.raises(sf.KeyNotFoundError, match="not in coordinate system 'nope'"):
        sf.tl.stmic(sdata, n_clusters=3, coordinate_system="nope")
    assert "stmic" not in sdata.tables["table"].obs
    sf.tl.stmic(sdata, n_clusters=3, modality="expression", coordinate_system="global")
    assert sdata.tables["table"].obs["stmic"].nunique() == 3
