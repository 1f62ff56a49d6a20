"""stfuse tables plot with squidpy and scanpy as they are (uns["spatial"] written by the readers)."""

from __future__ import annotations

import sys
import types

import anndata as ad
import matplotlib.pyplot as plt
import numpy as np
import pytest
import spatialdata as sd

import stfuse as sf
from stfuse import _keys as K
from stfuse._spots import get_spots
from stfuse.io._squidpy import HIRES_MAX, LOWRES_MAX, add_spatial_uns

pytestmark = pytest.mark.filterwarnings("ignore:Use `squidpy.pl.spatial_scatter` instead:FutureWarning")

sq = pytest.importorskip("squidpy")
sc = pytest.importorskip("scanpy")


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def _entry(sdata, library_id):
    t = sdata.tables["table"]
    assert list(t.uns[K.SPATIAL]) == [library_id] == t.obs[K.REGION_KEY].cat.categories.tolist()
    return t.uns[K.SPATIAL][library_id]


def _check_layout(entry, full_hw):
    hires, lowres = entry["images"]["hires"], entry["images"]["lowres"]
    sf_ = entry["scalefactors"]
    for img, scalef, most in ((hires, sf_["tissue_hires_scalef"], HIRES_MAX), (lowres, sf_["tissue_lowres_scalef"], LOWRES_MAX)):
        assert img.dtype == np.uint8 and img.ndim == 3 and img.shape[2] == 3 and img.flags.c_contiguous
        assert max(img.shape[:2]) <= most
        assert max(img.shape[:2]) <= max(full_hw) / 2  # never the full-resolution image again
        assert img.shape[0] == pytest.approx(full_hw[0] * scalef, abs=1.0)
        assert img.shape[1] == pytest.approx(full_hw[1] * scalef, abs=1.0)
    assert set(entry) == {"images", "scalefactors", "metadata"}


def _drawn_on_image(ax, table, entry):
    """One image and the spots drawn over it, at the positions squidpy/scanpy compute from uns."""
    assert len(ax.images) == 1
    left, right, bottom, top = ax.images[0].get_extent()
    xy = table.obsm["spatial"] * entry["scalefactors"]["tissue_hires_scalef"]
    assert left <= xy[:, 0].min() and xy[:, 0].max() <= right
    assert min(top, bottom) <= xy[:, 1].min() and xy[:, 1].max() <= max(top, bottom)
    # squidpy draws one circle patch per spot, scanpy one circle collection of all spots
    assert max(max(len(c.get_paths()), len(c.get_offsets())) for c in ax.collections) == table.n_obs


def test_toy_table_layout_and_thumbnail(toy):
    entry = _entry(toy, "toy_spots")
    level0 = np.asarray(toy.images["toy_image"]["scale0"].ds["image"].data.compute())
    _check_layout(entry, level0.shape[1:])
    sf_ = entry["scalefactors"]
    assert sf_["spot_diameter_fullres"] == 24.0 and sf_["spot_diameter_um"] == 55.0
    step = round(1 / sf_["tissue_hires_scalef"])
    # every step-th pixel of the image, without its pixel noise (sd 6)
    diff = entry["images"]["hires"].astype(float) - level0[:, ::step, ::step].transpose(1, 2, 0)
    assert np.abs(diff).mean() < 6.0 and np.abs(diff.mean()) < 0.5
    assert entry["metadata"] == {"platform": "toy", "image_key": "toy_image"}


def test_squidpy_and_scanpy_plot_toy_table(toy):
    t = toy.tables["table"]
    entry = _entry(toy, "toy_spots")
    ax = sq.pl.spatial_scatter(t, color="region", return_ax=True)
    _drawn_on_image(ax, t, entry)
    (ax,) = sc.pl.spatial(t, color="region", show=False)
    _drawn_on_image(ax, t, entry)
    (ax,) = sc.pl.spatial(t, color="region", img_key="lowres", show=False)
    assert ax.images[0].get_array().shape[:2] == entry["images"]["lowres"].shape[:2]


def test_spatialdata_plot_on_toy(toy):
    """The `plot` extra: spatialdata-plot draws the image and the spots coloured by a table column."""
    pytest.importorskip("spatialdata_plot")
    ax = plt.figure().gca()
    toy.pl.render_images("toy_image").pl.render_shapes("toy_spots", color="region").pl.show(ax=ax)
    assert len(ax.images) == 1 and ax.collections


def test_anndata_path_matches_spatialdata_path(toy):
    """get_spots on the table alone (uns['spatial']) resolves the same spots as on the SpatialData."""
    s = get_spots(toy)
    assert s.image_key == "toy_image" and s.table_key == "table"  # the SpatialData path, unchanged
    a = get_spots(toy.tables["table"])
    scalef = toy.tables["table"].uns[K.SPATIAL]["toy_spots"]["scalefactors"]["tissue_hires_scalef"]
    assert a.library_id == "toy_spots"
    # the AnnData path works in pixels of its finest image (hires): full resolution x tissue_hires_scalef
    assert np.allclose(a.centers / scalef, s.centers)
    assert a.diameter / scalef == pytest.approx(s.diameter)
    assert a.microns_per_pixel * scalef == pytest.approx(s.microns_per_pixel)
    assert a.levels[0].shape_yx == toy.tables["table"].uns[K.SPATIAL]["toy_spots"]["images"]["hires"].shape[:2]


def test_image_less_table(tmp_path):
    s = sf.datasets.toy(n_spots=100, image=False)
    t = s.tables["table"]
    entry = _entry(s, "toy_spots")
    assert entry["images"] == {} and entry["scalefactors"]["tissue_hires_scalef"] == 1.0
    ax = sq.pl.spatial_scatter(t, color="region", img=False, return_ax=True)
    assert not ax.images and ax.collections
    (ax,) = sc.pl.spatial(t, color="region", img_key=None, show=False)
    assert not ax.images
    a = get_spots(t)
    assert not a.has_image and a.diameter == 24.0 and a.microns_per_pixel == pytest.approx(55 / 24)
    t.write_zarr(tmp_path / "t.zarr")
    back = ad.read_zarr(tmp_path / "t.zarr").uns[K.SPATIAL]["toy_spots"]
    assert dict(back["images"]) == {} and back["scalefactors"] == pytest.approx(entry["scalefactors"])


def test_zarr_roundtrip_keeps_uns_spatial(tmp_path):
    s = sf.datasets.toy(n_spots=100)
    s.write(tmp_path / "toy.zarr")
    back = sd.read_zarr(tmp_path / "toy.zarr")
    e0, e1 = _entry(s, "toy_spots"), _entry(back, "toy_spots")
    for res in ("hires", "lowres"):
        assert np.array_equal(np.asarray(e1["images"][res]), e0["images"][res])
    assert e1["scalefactors"] == pytest.approx(e0["scalefactors"])
    assert dict(e1["metadata"]) == e0["metadata"]
    ax = sq.pl.spatial_scatter(back.tables["table"], color="region", return_ax=True)
    _drawn_on_image(ax, back.tables["table"], e1)
    s0, s1 = get_spots(s), get_spots(back)
    assert np.allclose(s0.centers, s1.centers) and s0.diameter == s1.diameter


def test_add_spatial_uns_from_pyramid(toy):
    """Without the reader's thumbnail, the entry comes from the image's own pyramid (same geometry)."""
    ref = toy.tables["table"].uns.pop(K.SPATIAL)["toy_spots"]
    add_spatial_uns(toy)
    entry = _entry(toy, "toy_spots")
    assert entry["scalefactors"] == pytest.approx(ref["scalefactors"])
    assert entry["images"]["hires"].shape == ref["images"]["hires"].shape
    # an existing entry is left alone
    toy.tables["table"].uns[K.SPATIAL] = {"mine": {"images": {}}}
    add_spatial_uns(toy)
    assert list(toy.tables["table"].uns[K.SPATIAL]) == ["mine"]


def _visium_like(toy):
    """A SpatialData laid out as spatialdata-io's visium writes it: hires and lowres images, no full-res one."""
    from spatialdata.models import Image2DModel
    from spatialdata.transformations import Scale

    level0 = np.asarray(toy.images["toy_image"]["scale0"].ds["image"].data.compute())
    images = {}
    for name, f in (("hires", 2), ("lowres", 8)):
        images[f"v_{name}_image"] = Image2DModel.parse(
            np.ascontiguousarray(level0[:, ::f, ::f]), dims=("c", "y", "x"),
            transformations={"global": Scale([f, f], axes=("x", "y"))},
        )
    table = toy.tables["table"]
    table.uns.pop(K.SPATIAL)
    table.uns.pop(K.META)
    return sd.SpatialData(images=images, shapes=dict(toy.shapes), tables={"table": table})


def test_read_visium_adds_uns_spatial(toy, monkeypatch):
    fake = types.SimpleNamespace(visium=lambda path, dataset_id=None, **kw: _visium_like(toy))
    monkeypatch.setitem(sys.modules, "spatialdata_io", fake)
    sdata = sf.io.read_visium("outs/")
    entry = _entry(sdata, "toy_spots")
    sf_ = entry["scalefactors"]
    # finest image (hires, 1/2 of full res), thumbnail at half of it
    assert entry["metadata"] == {"image_key": "v_hires_image", "platform": "Visium"}
    assert sf_["tissue_hires_scalef"] == pytest.approx(0.25, rel=1e-3)
    assert sf_["spot_diameter_fullres"] == pytest.approx(24.0) and sf_["spot_diameter_um"] == 55.0
    t = sdata.tables["table"]
    ax = sq.pl.spatial_scatter(t, color="region", return_ax=True)
    _drawn_on_image(ax, t, entry)
    a = get_spots(t)
    assert np.allclose(a.centers / sf_["tissue_hires_scalef"], t.obsm["spatial"])
    assert a.microns_per_pixel * a.diameter == pytest.approx(55.0)


@pytest.mark.her2st
def test_squidpy_and_scanpy_plot_her2st_c2(c2):
    t = c2.tables["table"]
    entry = _entry(c2, "C2_spots")
    level0 = c2.images["C2_image"]["scale0"].ds["image"]
    _check_layout(entry, (level0.sizes["y"], level0.sizes["x"]))
    assert max(entry["images"]["hires"].shape[:2]) == HIRES_MAX
    assert max(entry["images"]["lowres"].shape[:2]) == LOWRES_MAX
    assert entry["scalefactors"]["spot_diameter_um"] == 100.0
    ax = sq.pl.spatial_scatter(t, color="cluster", return_ax=True)
    _drawn_on_image(ax, t, entry)
    (ax,) = sc.pl.spatial(t, color="cluster", show=False)
    _drawn_on_image(ax, t, entry)
    s, a = get_spots(c2), get_spots(t)
    scalef = entry["scalefactors"]["tissue_hires_scalef"]
    assert np.allclose(a.centers / scalef, s.centers)
    assert a.diameter / scalef == pytest.approx(s.diameter)
    assert a.microns_per_pixel * scalef == pytest.approx(s.microns_per_pixel)
    # the thumbnail is the section's image: same mean colour as the image's coarsest level
    coarse = np.asarray(c2.images["C2_image"]["scale5"].ds["image"].data.compute()).reshape(3, -1).mean(axis=1)
    assert np.allclose(entry["images"]["hires"].reshape(-1, 3).mean(axis=0), coarse, atol=3.0)
