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


def test_outline(toy):
    plain = _spot_collections(_panels(sf.pl.spots(toy, color="region"))[0])[0]
    assert np.allclose(plain.get_linewidths(), 0.0)
    fig = sf.pl.spots(toy, color=["region", "G000"], outline=True)
    for a in _panels(fig):
        (coll,) = _spot_collections(a)
        assert np.allclose(coll.get_linewidths(), 0.5)
        assert to_hex(coll.get_edgecolors()[0]) == "#000000"
    (coll,) = _spot_collections(_panels(sf.pl.spots(toy, color="region", outline="red"))[0])
    assert to_hex(coll.get_edgecolors()[0]) == "#ff0000"


def test_colours_stored_in_uns_and_reused():
    sdata = sf.datasets.toy(n_spots=100)
    t = sdata.tables["table"]
    assert "region_colors" not in t.uns
    with pytest.raises(sf.KeyNotFoundError):  # a failing plot writes nothing
        sf.pl.spots(sdata, color=["region", "nope"])
    assert "region_colors" not in t.uns
    fig = sf.pl.spots(sdata, color="region")
    stored = list(t.uns["region_colors"])
    assert len(stored) == t.obs["region"].nunique()
    face = _spot_collections(_panels(fig)[0])[0].get_facecolors()
    codes = t.obs["region"].astype("category").cat.codes.to_numpy()
    assert [to_hex(face[np.flatnonzero(codes == i)[0]]) for i in range(len(stored))] == stored
    # the stored colours are reused, and an explicit palette is stored for the next plot (as in scanpy)
    t.uns["region_colors"] = ["#000000", "#111111", "#222222", "#333333"]
    face = _spot_collections(_panels(sf.pl.spots(sdata, color="region"))[0])[0].get_facecolors()
    assert to_hex(face[np.flatnonzero(codes == 3)[0]]) == "#333333"
    sf.pl.spots(sdata, color="region", palette="tab10")
    assert list(t.uns["region_colors"]) == [to_hex(c) for c in plt.get_cmap("tab10").colors[:4]]
    # compare stores the matched colours: a later plot of the key draws it as compare did
    del t.uns["region_colors"]
    relabel = {"A": "x", "B": "y", "C": "z", "D": "w"}
    t.obs["perfect"] = t.obs["region"].astype(str).map(relabel).astype("category")  # categories w x y z
    fig = sf.pl.compare(sdata, keys="perfect", truth="region")
    region = dict(zip(t.obs["region"].cat.categories, t.uns["region_colors"]))
    assert list(t.uns["perfect_colors"]) == [region[r] for r in "DABC"]  # the colour of the class each matches
    matched = _spot_collections(_panels(fig)[1])[0].get_facecolors()
    again = _spot_collections(_panels(sf.pl.spots(sdata, color="perfect"))[0])[0].get_facecolors()
    assert np.allclose(matched, again)


def test_show_return_fig_and_save(toy, tmp_path, monkeypatch):
    from stfuse.pl import _figure

    shown = []
    monkeypatch.setattr(plt, "show", lambda *a, **k: shown.append(1))
    # a non-interactive backend (Agg, as here): show=None does not show, the figure is returned
    assert isinstance(sf.pl.spots(toy, color="region"), plt.Figure) and not shown
    monkeypatch.setattr(_figure, "_can_show", lambda: True)  # as in Jupyter or a desktop session
    assert sf.pl.spots(toy, color="region") is None and len(shown) == 1
    assert isinstance(sf.pl.spots(toy, color="region", return_fig=True), plt.Figure) and len(shown) == 2
    assert isinstance(sf.pl.spots(toy, color="region", show=False), plt.Figure) and len(shown) == 2
    # saved: not shown, closed in pyplot (so Jupyter does not draw it again), still returned
    fig = sf.pl.spots(toy, color="region", save=tmp_path / "a.png")
    assert isinstance(fig, plt.Figure) and len(shown) == 2 and not plt.fignum_exists(fig.number)
    assert (tmp_path / "a.png").stat().st_size > 1000
    # into the user's axes: not shown, the axes returned (the figure with return_fig)
    f, ax = plt.subplots()
    assert sf.pl.loss(_with_history(toy), "fit", ax=[ax]) is ax and len(shown) == 2
    assert sf.pl.spots(toy, color="region", ax=ax, return_fig=True) is f
    assert sf.pl.spots(toy, color="region", ax=ax, show=True) is None and len(shown) == 3


def _with_history(sdata):
    sdata.tables["table"].uns["fit"] = {"params": {}, "history": {"loss": [2.0, 1.0]}}
    return sdata


def test_one_signature_for_every_plot(toy):
    import dataclasses
    import inspect

    from stfuse.pl._figure import PlotOptions

    shared = [f.name for f in dataclasses.fields(PlotOptions)]
    for name in ["spots", "compare", "stmic", "senca", "spacrd", "histospace", "loss"]:
        fn = getattr(sf.pl, name)
        params = inspect.signature(fn).parameters
        mine = [p for p in shared if p in params]
        assert {"ncols", "panel_size", "dpi", "ax", "show", "return_fig", "save"} <= set(mine), name
        doc = inspect.getdoc(fn)
        assert all(f"\n{p}\n    " in doc for p in mine) and "Examples" in doc, name
    assert list(inspect.signature(sf.pl.spots).parameters)[3:] == shared  # sdata, color, layer, then the options
    assert inspect.signature(sf.pl.spacrd).parameters["cmap"].default == "magma"
    assert "cmap" not in inspect.signature(sf.pl.compare).parameters
    with pytest.raises(TypeError, match="cmap"):
        sf.pl.compare(toy, keys="region", cmap="magma")


def test_read_rgb_of_an_image_level(toy):
    from stfuse._spots import to_uint8_rgb

    level = get_spots(toy).levels[0]
    rgb = level.read_rgb(3, 13, 5, 25)
    assert rgb.shape == (3, 10, 20) and rgb.dtype == np.uint8
    assert np.array_equal(rgb, np.asarray(level.data[:, 3:13, 5:25].compute()))
    assert to_uint8_rgb(np.ones((1, 2, 2)))[:, 0, 0].tolist() == [255, 255, 255]  # grey, float in [0, 1]
    assert to_uint8_rgb(np.full((4, 1, 1), 65535, np.uint16)).ravel().tolist() == [255, 255, 255]  # alpha dropped
    with pytest.raises(sf.InputError, match="3 channels"):
        to_uint8_rgb(np.zeros((2, 1, 1)))


def test_loss_plots_nested_training_stages():
    sdata = sf.datasets.toy(n_spots=50, image=False)
    sdata.tables["table"].uns["two_stage"] = {"params": {}, "history": {"loss": [3.0, 2.0],
                                                                        "pretrain": {"loss": [5.0, 4.0, 3.0]}}}
    fig = sf.pl.loss(sdata, "two_stage", show=False)
    assert [a.get_title() for a in fig.axes] == ["loss", "pretrain/loss"]
    assert len(fig.axes[1].lines[0].get_ydata()) == 3
    plt.close(fig)
