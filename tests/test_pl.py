from __future__ import annotations

import anndata as ad
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
from matplotlib.collections import EllipseCollection
from matplotlib.colors import to_hex

import stfuse as sf
from stfuse._spots import get_spots
from stfuse.pl import _base


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def _panels(fig):
    """Axes that are panels (not colorbars): they carry a title or an image."""
    return [a for a in fig.axes if a.get_title() or a.images]


def _spot_collections(ax):
    return [c for c in ax.collections if isinstance(c, EllipseCollection)]


def _squidpy_anndata(sdata, *, image=True):
    """A squidpy-style AnnData (obsm['spatial'] + uns['spatial'][lib]) made from a toy SpatialData."""
    t = sdata.tables["table"]
    a = ad.AnnData(X=t.X.copy(), obs=t.obs[["region"]].copy(), var=pd.DataFrame(index=t.var_names))
    a.obsm["spatial"] = np.asarray(t.obsm["spatial"], float)
    if image:
        s = get_spots(sdata)
        hires = np.asarray(s.levels[0].data.compute()).transpose(1, 2, 0)[::2, ::2]
        a.uns["spatial"] = {"lib": {"images": {"hires": hires},
                                    "scalefactors": {"tissue_hires_scalef": 0.5, "spot_diameter_fullres": 24.0,
                                                     "spot_diameter_um": 55.0}}}
    return a


def test_spots_panels_legend_colorbar_and_true_size(toy, tmp_path):
    t = toy.tables["table"]
    t.obs["partial"] = t.obs["region"].astype(object).where(np.arange(t.n_obs) % 5 != 0)  # some NaN
    path = tmp_path / "spots.png"
    fig = sf.pl.spots(toy, color=[None, "partial", "G000"], vmax="p90", save=path, dpi=40)
    assert isinstance(fig, plt.Figure)
    assert path.stat().st_size > 1000
    panels = _panels(fig)
    assert [a.get_title() for a in panels] == ["H&E", "partial", "G000"]
    assert all(len(a.images) == 1 for a in panels)  # the image under every panel
    assert len(fig.axes) == 4  # three panels + one colorbar
    spots = get_spots(toy)
    for a in panels:
        (coll,) = _spot_collections(a)
        assert len(coll.get_offsets()) == t.n_obs
        assert np.allclose(coll._widths * 2, spots.diameter)  # circles of the true spot diameter (half-widths)
    # categorical legend lists the categories present, then NA for the missing values
    labels = [x.get_text() for x in panels[1].get_legend().get_texts()]
    assert labels == ["A", "B", "C", "D", "NA"]
    face = panels[1].collections[0].get_facecolors()
    na = np.flatnonzero(t.obs["partial"].isna().to_numpy())
    assert to_hex(face[na[0]]) == to_hex(_base.NA_COLOR)
    # continuous: percentile limit
    norm = _spot_collections(panels[2])[0].norm
    g = t[:, "G000"].X.toarray().ravel()
    assert norm.vmax == pytest.approx(np.percentile(g, 90))


def test_spots_scalebar_and_titles(toy):
    fig = sf.pl.spots(toy, color="region", title="my title", legend=False)
    (ax,) = _panels(fig)
    assert ax.get_title() == "my title"
    assert ax.get_legend() is None
    texts = [t.get_text() for art in ax.artists for t in art.findobj(plt.Text)]
    assert any(t.endswith("µm") or t.endswith("mm") for t in texts)


def test_spots_into_existing_axes(toy):
    _fig, axes = plt.subplots(1, 2)
    out = sf.pl.spots(toy, color="region", ax=axes[1])
    assert out is axes[1]
    assert _spot_collections(axes[1]) and not _spot_collections(axes[0])
    out2 = sf.pl.spots(toy, color=["region", "G001"], ax=list(axes))
    assert out2 == list(axes)
    with pytest.raises(sf.InputError, match="2 panels but ax= holds 1"):
        sf.pl.spots(toy, color=["region", "G001"], ax=axes[0])


def test_spots_without_image_and_anndata():
    sdata = sf.datasets.toy(n_spots=100, image=False)
    fig = sf.pl.spots(sdata, color="region")
    (ax,) = _panels(fig)
    assert not ax.images and _spot_collections(ax)
    assert ax.get_ylim()[0] > ax.get_ylim()[1]  # y points down, as on the image
    # squidpy-style AnnData with a hires image at half resolution
    a = _squidpy_anndata(sf.datasets.toy(n_spots=100))
    fig = sf.pl.spots(a, color="region", level=0)
    (ax,) = _panels(fig)
    assert len(ax.images) == 1
    left, right, _bottom, _top = ax.images[0].get_extent()
    centers = get_spots(a).centers  # level 0 = the hires image: full-resolution pixels x tissue_hires_scalef
    assert np.allclose(centers, a.obsm["spatial"] * 0.5)
    assert left <= centers[:, 0].min() and right >= centers[:, 0].max()
    # AnnData without uns['spatial']: no image, no µm scale -> scalebar skipped quietly
    b = _squidpy_anndata(sf.datasets.toy(n_spots=100), image=False)
    fig = sf.pl.spots(b, color="G002")
    (ax,) = _panels(fig)
    assert not ax.images and not ax.artists


def test_levels_auto_and_explicit(toy):
    spots = get_spots(toy)
    assert len(spots.levels) == 2
    box = _base.crop_box(spots)
    assert _base.choose_level(spots, box, 10) == 1
    assert _base.choose_level(spots, box, 10_000) == 0
    fig = sf.pl.spots(toy, color="region", level=1)
    img = _panels(fig)[0].images[0].get_array()
    fig0 = sf.pl.spots(toy, color="region", level=0)
    img0 = _panels(fig0)[0].images[0].get_array()
    assert img0.shape[0] > 1.8 * img.shape[0]
    with pytest.raises(sf.InputError, match="level"):
        sf.pl.spots(toy, color="region", level=5)


def test_read_region_derived_level_matches_stored_level(toy):
    spots = get_spots(toy)
    box = _base.crop_box(spots, False)
    rgb, extent = _base._read_region(spots, 1, box)  # read level 0 and downsample
    direct = np.asarray(spots.levels[1].data.compute()).transpose(1, 2, 0)
    h, w = min(rgb.shape[0], direct.shape[0]), min(rgb.shape[1], direct.shape[1])
    diff = np.abs(rgb[:h, :w].astype(float) - direct[:h, :w].astype(float)).mean()
    assert diff < 12  # same picture, within the difference of the two downsampling kernels
    assert extent[0] == 0 and extent[3] == 0


def test_palettes():
    cols = _base.category_colors(["a", "b"], uns_colors=["#ff0000", "#00ff00"])
    assert cols == {"a": "#ff0000", "b": "#00ff00"}
    assert _base.category_colors(["a", "b"], palette={"a": "blue", "b": "red"})["b"] == "#ff0000"
    assert len(set(_base.category_colors(list(range(30))).values())) == 30
    with pytest.raises(sf.InputError, match="no colour"):
        _base.category_colors(["a", "b"], palette={"a": "blue"})
    truth = pd.Series(list("aabbcc"))
    pred = pd.Series([2, 2, 0, 0, 1, 1])
    tcol = _base.category_colors(["a", "b", "c"])
    m = _base.matched_colors(pred, truth, tcol)
    assert m == {0: tcol["b"], 1: tcol["c"], 2: tcol["a"]}


def test_compare_titles_ari_and_colours(toy, tmp_path):
    t = toy.tables["table"]
    relabel = {"A": "x", "B": "y", "C": "z", "D": "w"}
    t.obs["perfect"] = t.obs["region"].map(relabel).astype("category")
    t.obs["half"] = np.where(t.obsm["spatial"][:, 0] > np.median(t.obsm["spatial"][:, 0]), "r", "l")
    fig = sf.pl.compare(toy, keys=["perfect", "half"], truth="region", save=tmp_path / "c.png", dpi=30)
    titles = [a.get_title() for a in _panels(fig)]
    ari_half = sf.metrics.ari(t.obs["region"], t.obs["half"])
    assert titles == ["H&E", "perfect  ARI 1.000", f"half  ARI {ari_half:.3f}", "region (truth)"]
    # a perfect relabelling is drawn in the truth's colours
    p, truth = _panels(fig)[1], _panels(fig)[3]
    assert np.allclose(p.collections[0].get_facecolors(), truth.collections[0].get_facecolors())
    # without a truth or an image panel: the domains alone, scalebar on the first panel
    fig = sf.pl.compare(toy, keys="half", image_panel=False, titles=["my method"])
    (only,) = _panels(fig)
    assert only.get_title() == "my method" and len(only.images) == 1 and only.artists
    with pytest.raises(sf.KeyNotFoundError, match="neither an obs column nor a gene"):
        sf.pl.compare(toy, keys=["nope"], truth="region")


def test_bad_inputs(toy):
    with pytest.raises(sf.InputError, match="empty"):
        sf.pl.spots(toy, color=[])
    with pytest.raises(sf.InputError, match="crop"):
        sf.pl.spots(toy, color="region", crop=(10, 10, 5, 5))
    with pytest.raises(sf.InputError, match="percentile"):
        sf.pl.spots(toy, color="G000", vmin="high")


@pytest.mark.her2st
def test_her2st_c2_spots_over_tissue(c2):
    fig = sf.pl.spots(c2, color="cluster", dpi=40)
    (ax,) = _panels(fig)
    spots = get_spots(c2)
    left, right, bottom, top = ax.images[0].get_extent()
    assert left <= spots.centers[:, 0].min() and right >= spots.centers[:, 0].max()
    assert top <= spots.centers[:, 1].min() and bottom >= spots.centers[:, 1].max()
    # spots lie on tissue: the image under spot centres is darker than the slide background
    rgb = ax.images[0].get_array()
    s = rgb.shape[1] / (right - left)
    px = ((spots.centers - [left, top]) * s).astype(int)
    under = rgb[px[:, 1], px[:, 0]].astype(float).mean()
    corners = np.concatenate([rgb[:5, :5], rgb[-5:, -5:]]).astype(float).mean()
    assert under < corners - 20
    labels = [x.get_text() for x in ax.get_legend().get_texts()]
    assert labels[:7] == [str(i) for i in range(7)]
