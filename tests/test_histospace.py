from __future__ import annotations

import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch

import stfuse as sf
from stfuse._spots import get_spots
from stfuse.models import HistoSPACE
from stfuse.models._histospace import dihedral

# small tiles and the random encoder keep these tests fast; the method is the same at 160 px
FAST = {"tile_px": 32, "encoder_weights": "random"}
MARKERS = [f"G{i:03d}" for i in range(30, 45)] + ["G050", "G060"]  # programme 2 (regions C, D) + background


def _toy(n_spots: int, seed: int, **kw):
    """A toy section whose image is rendered once (the toy image is otherwise regenerated on every read)."""
    from spatialdata.models import Image2DModel
    from spatialdata.transformations import Identity

    sdata = sf.datasets.toy(n_spots=n_spots, seed=seed, **kw)
    if "toy_image" in sdata.images:
        arr = get_spots(sdata).levels[0].data.compute()
        sdata.images["toy_image"] = Image2DModel.parse(arr, dims=("c", "y", "x"), c_coords=["r", "g", "b"],
                                                       transformations={"global": Identity()})
    return sdata


def _tiles(n=24, px=32, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 255, (n, 3, px, px), dtype=np.uint8), rng.normal(size=(n, 4)).astype(np.float32)


# --- model ---------------------------------------------------------------------------------------
def test_model_save_load_roundtrip_and_determinism(tmp_path):
    tiles, Y = _tiles()
    genes = ["a", "b", "c", "d"]
    m = HistoSPACE(genes, device="cpu", **FAST).fit(tiles, Y, val_tiles=tiles[:8], val_Y=Y[:8], epochs=2)
    p = m.predict(tiles)
    assert p.shape == (24, 4) and p.dtype == np.float32
    assert m.info["train"]["epochs_run"] == 2 and len(m.info["history"]["val_loss"]) == 2
    m.save(tmp_path / "m")
    back = HistoSPACE.load(tmp_path / "m", device="cpu")
    assert back.genes == genes and back.params == m.params and back.is_trained
    np.testing.assert_array_equal(back.predict(tiles), p)
    # same seed on CPU: same result bit for bit; another seed differs
    again = HistoSPACE(genes, device="cpu", **FAST).fit(tiles, Y, val_tiles=tiles[:8], val_Y=Y[:8], epochs=2)
    np.testing.assert_array_equal(again.predict(tiles), p)
    other = HistoSPACE(genes, device="cpu", random_state=1, **FAST).fit(tiles, Y, epochs=2)
    assert not np.array_equal(other.predict(tiles), p)
    with pytest.raises(sf.InputError, match="not empty"):
        m.save(tmp_path / "m")
    # a fresh process loads the saved model and predicts the same values
    np.save(tmp_path / "tiles.npy", tiles)
    code = ("import sys, numpy as np; from stfuse.models import HistoSPACE; "
            "m = HistoSPACE.load(sys.argv[1], device='cpu'); np.save(sys.argv[3], m.predict(np.load(sys.argv[2])))")
    subprocess.run([sys.executable, "-c", code, str(tmp_path / "m"), str(tmp_path / "tiles.npy"),
                    str(tmp_path / "p.npy")], check=True)
    np.testing.assert_array_equal(np.load(tmp_path / "p.npy"), p)


def test_model_frozen_vs_finetuned_encoder():
    tiles, Y = _tiles(16)
    frozen = HistoSPACE(list("abcd"), device="cpu", **FAST)
    before = {k: v.clone() for k, v in frozen.module.encoder.state_dict().items()}
    frozen.fit(tiles, Y, epochs=1, augment=False)
    assert all(torch.equal(before[k], v) for k, v in frozen.module.encoder.state_dict().items())
    tuned = HistoSPACE(list("abcd"), device="cpu", finetune_encoder=True, **FAST)
    before = {k: v.clone() for k, v in tuned.module.encoder.state_dict().items()}
    tuned.fit(tiles, Y, epochs=1)
    assert any(not torch.equal(before[k], v) for k, v in tuned.module.encoder.state_dict().items())


def test_model_bounded_cache_matches_cached_training():
    tiles, Y = _tiles(16)
    a = HistoSPACE(list("abcd"), device="cpu", **FAST).fit(tiles, Y, epochs=2, loss="mse")
    b = HistoSPACE(list("abcd"), device="cpu", **FAST).fit(tiles, Y, epochs=2, loss="mse", cache_gb=0)
    # float16 cache vs maps recomputed per batch: same training up to float16 rounding
    np.testing.assert_allclose(a.info["history"]["loss"], b.info["history"]["loss"], rtol=1e-2)
    np.testing.assert_allclose(a.predict(tiles), b.predict(tiles), atol=1e-2)


def test_model_options_and_tta():
    tiles, Y = _tiles(12)
    m = HistoSPACE(list("abcd"), head="conv", device="cpu", fc_activation="relu", dropout=0.2, **FAST)
    assert isinstance(m.module.fc[2], torch.nn.ReLU)
    m.fit(tiles, Y, epochs=1)
    assert m.predict(tiles, tta=True).shape == (12, 4)
    # tiles of another size are resized to tile_px
    assert m.predict(np.repeat(np.repeat(tiles, 2, axis=2), 2, axis=3)).shape == (12, 4)


def test_model_bad_inputs(tmp_path):
    tiles, Y = _tiles(8)
    with pytest.raises(sf.InputError, match="not unique"):
        HistoSPACE(["a", "a"], **FAST)
    with pytest.raises(sf.InputError, match="fc_activation"):
        HistoSPACE(["a"], fc_activation="swish", **FAST)
    m = HistoSPACE(list("abcd"), device="cpu", **FAST)
    with pytest.raises(sf.InputError, match="not trained"):
        m.predict(tiles)
    with pytest.raises(sf.InputError, match="uint8"):
        m.fit(tiles.astype(np.float32), Y)
    with pytest.raises(sf.InputError, match=r"\(n_tiles, n_genes\)"):
        m.fit(tiles, Y[:, :2])
    with pytest.raises(sf.InputError, match="NaN"):
        m.fit(tiles, np.full_like(Y, np.nan))
    with pytest.raises(sf.InputError, match="both val_tiles and val_Y"):
        m.fit(tiles, Y, val_tiles=tiles)
    with pytest.raises(sf.DataNotFoundError):
        HistoSPACE.load(tmp_path)
    with pytest.raises(sf.WeightsUnavailableError, match="not found"):
        HistoSPACE(list("abcd"), encoder_weights=tmp_path / "none.pt", tile_px=32).fit(tiles, Y, epochs=1)


def test_dihedral_group():
    x = torch.arange(9.0).view(1, 1, 3, 3)
    variants = [dihedral(x, k) for k in range(8)]
    assert len({tuple(v.flatten().tolist()) for v in variants}) == 8
    assert torch.equal(dihedral(dihedral(x, 1), 3), x)


# --- tool ----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def trained():
    """A model trained on one toy section, and the section it predicts."""
    ref = _toy(300, 0)
    target = _toy(300, 1)
    model = sf.tl.histospace(target, ref, genes=MARKERS, epochs=8, lr=1e-3, device="cpu", return_model=True, **FAST)
    return ref, target, model


def test_histospace_writes_prediction_table(trained):
    from spatialdata.models import get_table_keys

    _, target, model = trained
    pred = target.tables["histospace"]
    t = target.tables["table"]
    assert pred.var_names.tolist() == MARKERS == model.genes
    assert pred.obs_names.equals(t.obs_names)
    assert get_table_keys(pred) == ("toy_spots", "library_id", "spot_id")
    np.testing.assert_array_equal(pred.obsm["spatial"], t.obsm["spatial"])
    np.testing.assert_array_equal(t.obsm["X_histospace_pred"], pred.X)
    assert t.uns["histospace"]["genes"] == MARKERS
    assert t.uns["histospace"]["normalisation"] == {"target_sum": 1e4, "log1p": True}
    assert "val_loss" in t.uns["histospace"]["history"]["selection"]  # the run that chose the epochs
    assert model.registry.tile["size_um"] == pytest.approx(110.0)  # 2 spot diameters of 55 µm
    # the measured expression, normalised like the training targets, beside the predictions
    np.testing.assert_array_equal(pred.layers["measured"], sf.pp.prepare_expression(t, genes=MARKERS).X)
    # the image tells regions C/D (programme 2) from A/B: the marker genes are predicted
    r = sf.metrics.gene_correlation(target)
    assert r.loc[MARKERS[:15], "r"].mean() > 0.3
    assert list(r.columns[:3]) == ["r", "mean_measured", "mean_predicted"]


def test_histospace_deterministic_and_copy():
    ref, target = _toy(100, 0), _toy(100, 1)
    kw = {"genes": MARKERS, "epochs": 2, "device": "cpu", "random_state": 3, **FAST}
    a, model = sf.tl.histospace(target, ref, copy=True, return_model=True, **kw)
    b = sf.tl.histospace(target, ref, copy=True, **kw)
    assert "histospace" not in target.tables and "X_histospace_pred" not in target.tables["table"].obsm
    np.testing.assert_array_equal(a.tables["histospace"].X, b.tables["histospace"].X)
    # reusing the model gives the same predictions
    with pytest.warns(UserWarning, match="Replacing"):
        sf.tl.histospace(b, model=model)
    np.testing.assert_array_equal(a.tables["histospace"].X, b.tables["histospace"].X)


def test_histospace_slide_without_expression(trained, tmp_path):
    import scanpy as sc
    import spatialdata as sd
    import squidpy as sq

    _, _, model = trained
    slide = _toy(300, 2)
    del slide.tables["table"]
    del slide.shapes["toy_spots"]
    sf.tl.tile_tissue(slide, size_um=55, spacing=2.0, microns_per_pixel=55 / 24)
    sf.tl.histospace(slide, model=model)
    pred = slide.tables["histospace"]
    assert pred.n_obs == len(slide.shapes["tissue_tiles"]) and pred.var_names.tolist() == MARKERS
    assert "measured" not in pred.layers  # tiles have no measurement
    assert pred.uns["stfuse"]["tissue_tiles"]["spot_diameter_um"] == pytest.approx(55.0)
    # scanpy / squidpy work on the predictions unchanged
    sq.gr.spatial_neighbors_knn(pred, n_neighs=6)
    sq.gr.spatial_autocorr(pred, mode="moran", genes=MARKERS[:3], n_perms=None)
    assert np.isfinite(pred.uns["moranI"]["I"]).all() and pred.uns["moranI"]["I"].max() > 0
    sc.pl.spatial(pred, color=MARKERS[0], spot_size=24, show=False)
    fig = sf.pl.histospace(slide, genes=MARKERS[:2])  # predictions alone: no measurement to compare
    assert [a.get_title() for a in fig.axes if a.get_title()] == [f"{g} predicted" for g in MARKERS[:2]]
    # and the object round-trips through zarr
    slide.write(tmp_path / "slide.zarr")
    back = sd.read_zarr(tmp_path / "slide.zarr")
    s = get_spots(back, table_key="histospace")
    assert s.microns_per_pixel == pytest.approx(55 / 24)


def test_histospace_anndata_target(trained):
    _, target, model = trained
    spots = get_spots(target)
    t = target.tables["table"]
    import anndata as ad

    a = ad.AnnData(X=t.X.copy(), obs=t.obs[["region"]].copy(), var=t.var.copy())
    a.obsm["spatial"] = t.obsm["spatial"]
    a.uns["spatial"] = {"lib": {"images": {"hires": spots.levels[0].data.compute().transpose(1, 2, 0)},
                                "scalefactors": {"tissue_hires_scalef": 1.0, "spot_diameter_fullres": 24.0}}}
    sf.tl.histospace(a, model=model)
    np.testing.assert_allclose(a.obsm["X_histospace_pred"], target.tables["histospace"].X, atol=1e-5)
    np.testing.assert_array_equal(a.obsm["X_histospace_measured"], target.tables["histospace"].layers["measured"])
    assert sf.metrics.gene_correlation(a).shape[0] == len(MARKERS)


def test_histospace_bad_input_leaves_object_unchanged(trained):
    ref, target, model = trained
    before = set(target.tables)
    no_image = _toy(100, 0, image=False)
    with pytest.raises(sf.InputError, match="needs an H&E image"):
        sf.tl.histospace(no_image, model=model)
    with pytest.raises(sf.InputError, match="needs an H&E image"):
        sf.tl.histospace(target, no_image, **FAST)
    with pytest.raises(sf.GeneMismatchError, match="not measured in reference 0"):
        sf.tl.histospace(target, ref, genes=["G001", "NOPE"], **FAST)
    with pytest.raises(sf.InputError, match="either reference"):
        sf.tl.histospace(target, ref, model=model)
    with pytest.raises(sf.InputError, match="not trained"):
        sf.tl.histospace(target, model=HistoSPACE(["G001"], **FAST))
    with pytest.raises(sf.InputError, match="genes cannot be changed"):
        sf.tl.histospace(target, model=model, genes=["G001"])
    with pytest.raises(sf.InputError, match="epochs"):
        sf.tl.histospace(target, ref, epochs=0)
    with pytest.raises(sf.InputError, match="loss must be"):
        sf.tl.histospace(target, ref, loss="l1")
    with pytest.raises(sf.InputError, match="lr must be"):
        sf.tl.histospace(target, ref, lr=0)
    blank = _toy(100, 0)
    del blank.tables["table"]
    with pytest.raises(sf.InputError, match="no expression to train on"):
        sf.tl.histospace(blank)
    assert set(target.tables) == before
    assert "X_histospace_pred" in target.tables["table"].obsm  # from the fixture only


def test_histospace_stain_normalisation_is_recorded_and_reapplied():
    ref, target = _toy(100, 0), _toy(100, 1)
    model = sf.tl.histospace(target, ref, genes=["G030", "G031"], epochs=1, stain="reinhard", return_model=True,
                             **FAST)
    assert model.registry.tile["stain"] == "reinhard"
    first = target.tables["histospace"].X.copy()
    with pytest.warns(UserWarning, match="Replacing"):
        sf.tl.histospace(target, model=model)
    np.testing.assert_array_equal(target.tables["histospace"].X, first)
    plain = sf.tl.histospace(target, ref, genes=["G030", "G031"], epochs=1, copy=True, **FAST)
    assert not np.array_equal(plain.tables["histospace"].X, first)
    with pytest.raises(sf.InputError, match="stain"):
        sf.tl.histospace(target, ref, stain="vahadane", **FAST)


def test_histospace_trains_on_target_itself_by_default():
    sdata = _toy(100, 3)
    # bounded memory: tiles in a temporary file, encoder maps recomputed per batch
    model = sf.tl.histospace(sdata, genes=["G030", "G031"], epochs=1, val_fraction=0.0, return_model=True,
                             tile_ram_gb=0, cache_gb=0, **FAST)
    assert sdata.tables["histospace"].shape == (100, 2)
    assert model.info["train"]["n_val"] == 0 and model.registry.references == ["toy_spots"]


# --- metrics -------------------------------------------------------------------------------------
def test_gene_correlation_perfect_and_constant():
    import anndata as ad
    from spatialdata.models import TableModel

    sdata = sf.datasets.toy(n_spots=100, seed=0)
    t = sdata.tables["table"]
    from scipy import sparse

    X = t.X.toarray()
    X[:, 5] = 0  # a gene never detected is constant: r is NaN
    t.X = sparse.csr_matrix(X)
    Y = sf.pp.prepare_expression(t, genes=t.var_names[:10].tolist()).X
    pred = ad.AnnData(X=Y * 2 + 1, obs=t.obs[["library_id", "spot_id"]].copy(),
                      var=pd.DataFrame(index=t.var_names[:10]))
    sdata.tables["histospace"] = TableModel.parse(pred, region="toy_spots", region_key="library_id",
                                                  instance_key="spot_id")
    df = sf.metrics.gene_correlation(sdata)
    assert df.attrs == {"n_spots": 100, "n_constant": 1}
    assert np.isnan(df.loc["G005", "r"]) and df.index[-1] == "G005"
    np.testing.assert_allclose(df["r"].dropna(), 1.0)
    assert sf.metrics.gene_correlation(sdata, genes=["G001"]).shape == (1, 6)
    with pytest.raises(sf.KeyNotFoundError, match="run"):
        sf.metrics.gene_correlation(sdata, key="nope")
    with pytest.raises(sf.KeyNotFoundError, match="not predicted"):
        sf.metrics.gene_correlation(sdata, genes=["G099"])


# --- plot ----------------------------------------------------------------------------------------
def test_pl_histospace_measured_vs_predicted(trained, tmp_path):
    _, target, _ = trained
    fig = sf.pl.histospace(target, genes=["G030", "G031"], save=tmp_path / "hs.png")
    titles = [a.get_title() for a in fig.axes if a.get_title()]
    assert titles[0] == "G030 measured" and titles[1].startswith("G030 predicted (r = ")
    assert titles[-1].startswith(f"per-gene r ({len(MARKERS)} genes")
    assert (tmp_path / "hs.png").stat().st_size > 10_000
    # default genes: the best predicted ones
    best = sf.metrics.gene_correlation(target).index[0]
    fig = sf.pl.histospace(target, n_genes=1, hist=False)
    assert next(a.get_title() for a in fig.axes if a.get_title()) == f"{best} measured"
    with pytest.raises(sf.KeyNotFoundError, match="not predicted"):
        sf.pl.histospace(target, genes=["NOPE"])
    with pytest.raises(sf.KeyNotFoundError, match=r"run sf\.tl\.histospace"):
        sf.pl.histospace(target, key="other")


@pytest.mark.her2st
def test_her2st_tiles_cover_the_spots_and_predictions_run(c2):
    from scipy.spatial import cKDTree

    sdata = c2  # session fixture: work on a copy
    out = sf.tl.tile_tissue(sdata, size_um=100, spacing=2, copy=True)
    assert "tissue_tiles" not in sdata.shapes
    tiles = get_spots(out, table_key=None, shapes_key="tissue_tiles", require_table=False)
    spots = get_spots(out)
    assert tiles.diameter == pytest.approx(spots.diameter, rel=1e-3)
    # every spot under tissue has a tile within one spot spacing (200 µm)
    d = cKDTree(tiles.centers).query(spots.centers)[0]
    assert np.mean(d * spots.microns_per_pixel <= 200) > 0.95
    assert 0.7 < tiles.n_obs / spots.n_obs < 1.6
    model = sf.tl.histospace(out, genes=["GNAS", "ERBB2"], epochs=1, augment=False, tta=False,
                             return_model=True)
    assert model.info["encoder_checksum"] != "random"
    sf.tl.histospace(out, model=model, shapes_key="tissue_tiles", key_added="hs_tiles", tta=False)
    assert out.tables["hs_tiles"].shape == (tiles.n_obs, 2)
    assert out.tables["histospace"].shape == (spots.n_obs, 2)


# --- ridge head, encoder-map cache, section validation --------------------------------------------
def test_model_ridge_head_is_closed_form_ridge_on_pooled_maps(tmp_path):
    from sklearn.linear_model import Ridge

    from stfuse.nn import pooled_maps as pooled

    tiles, Y = _tiles(40)
    m = HistoSPACE(list("abcd"), head="ridge", device="cpu", **FAST)
    m.fit(tiles[:30], Y[:30], val_tiles=tiles[30:], val_Y=Y[30:], augment=False)
    info = m.info["train"]
    assert info["head"] == "ridge" and info["selection"] == "validation mean per-gene r"
    assert len(info["alpha_scores"]) == len(info["alphas"]) == 17 and info["alpha"] in info["alphas"]
    alpha = info["alpha"]
    # the same as sklearn's ridge on the standardised pooled features of the (float16) encoder maps
    F = pooled(m._maps(tiles[:30], [0])[0]).double().numpy()
    mu, sd = F.mean(0), F.std(0) + 1e-8
    ref = Ridge(alpha=alpha).fit((F - mu) / sd, Y[:30])
    Fv = pooled(m._maps(tiles[30:], [0])[0]).double().numpy()
    np.testing.assert_allclose(m.predict(tiles[30:]), ref.predict((Fv - mu) / sd), atol=1e-3)
    # a fixed penalty (the refit), GCV without validation, save/load
    fixed = HistoSPACE(list("abcd"), head="ridge", device="cpu", **FAST).fit(tiles, Y, ridge_alphas=[alpha])
    assert fixed.info["train"]["selection"] == "fixed" and fixed.info["train"]["alpha"] == alpha
    gcv = HistoSPACE(list("abcd"), head="ridge", device="cpu", **FAST).fit(tiles, Y)
    assert gcv.info["train"]["selection"] == "GCV"
    back = HistoSPACE.load(gcv.save(tmp_path / "ridge"), device="cpu")
    np.testing.assert_array_equal(back.predict(tiles), gcv.predict(tiles))
    with pytest.raises(sf.InputError, match="frozen encoder"):
        HistoSPACE(list("abcd"), head="ridge", finetune_encoder=True, device="cpu", **FAST)
    with pytest.raises(sf.InputError, match="head must be"):
        HistoSPACE(list("abcd"), head="lasso", device="cpu", **FAST)


def test_encoder_maps_are_computed_once_per_tile_weights_and_variant():
    from stfuse.nn import map_cache

    tiles, Y = _tiles(20)
    map_cache.clear()
    hits, misses = map_cache.hits, map_cache.misses
    a = HistoSPACE(list("abcd"), device="cpu", **FAST).fit(tiles, Y, epochs=1)
    assert map_cache.misses - misses == 8 * 20  # every tile, each of the 8 rotations/flips
    # another fit on the same tiles (another fold, a refit) and test-time augmentation reuse them
    misses = map_cache.misses
    b = HistoSPACE(list("abcd"), device="cpu", **FAST).fit(tiles[::-1], Y[::-1], epochs=1)
    pred = b.predict(tiles, tta=True)
    assert map_cache.misses == misses and map_cache.hits - hits >= 8 * 20 * 2
    # the cached path predicts as the encoder does without the cache, up to float16 rounding
    map_cache.clear()
    b.params["finetune_encoder"] = True  # not frozen: no cache
    np.testing.assert_allclose(b.predict(tiles, tta=True), pred, atol=1e-2)
    b.params["finetune_encoder"] = False
    # other weights are other maps
    c = HistoSPACE(list("abcd"), device="cpu", random_state=1, **FAST)
    assert c._network_key() != a._network_key()
    map_cache.clear()


def test_histospace_validation_section_chooses_epochs_then_refits():
    refs = [_toy(120, 0), _toy(120, 2)]
    target = _toy(120, 1)
    kw = {"genes": MARKERS, "epochs": 3, "device": "cpu", "patience": 1, **FAST}
    model = sf.tl.histospace(target, refs, return_model=True, **kw)
    uns = target.tables["table"].uns["histospace"]
    chose = model.info["selection"]
    assert uns["params"]["validation"].startswith("section toy") and "then refit" in uns["params"]["validation"]
    best = int(chose["best_epoch"])
    assert f"chose {best} epochs" in uns["params"]["validation"]
    assert uns["params"]["n_train"] == 240 and uns["params"]["n_val"] == 0
    assert len(uns["history"]["loss"]) == best and "val_loss" in uns["history"]["selection"]
    # the ridge head in the same call: the penalty is chosen on the held-out section, then refit
    sf.tl.histospace(target, refs, head="ridge", key_added="hs_ridge", **kw)
    p = target.tables["table"].uns["hs_ridge"]["params"]
    assert p["head"] == "ridge" and "chose ridge alpha" in p["validation"] and p["selection"] == "fixed"
    # blocks and none
    sf.tl.histospace(target, refs, validation="blocks", refit=False, key_added="hs_blocks", **kw)
    assert "spatial blocks" in target.tables["table"].uns["hs_blocks"]["params"]["validation"]
    with pytest.raises(sf.InputError, match="validation must be"):
        sf.tl.histospace(target, refs, validation="spots", **kw)


def test_resolution_augmentation_trains_on_coarser_variants_of_every_tile():
    from stfuse.models._histospace import resample
    from stfuse.nn import map_cache

    tiles, Y = _tiles(12)
    map_cache.clear()
    misses = map_cache.misses
    m = HistoSPACE(list("abcd"), resolution_augment=[0.25], device="cpu", **FAST).fit(tiles, Y, epochs=1)
    assert map_cache.misses - misses == 16 * 12  # 8 rotations/flips at full and at 1/4 sampling
    assert m.params["resolution_augment"] == [0.25]
    x = torch.rand(1, 3, 32, 32)
    coarse = resample(x, 0.25)
    # the coarse variant has lost the fine detail: its 8 × 8 version is enough to rebuild it
    assert (coarse - x).abs().mean() > 0.1 and resample(coarse, 0.25).sub(coarse).abs().mean() < 0.05
    with pytest.raises(sf.InputError, match="resolution_augment"):
        HistoSPACE(list("abcd"), resolution_augment=[1.5], device="cpu", **FAST)
    map_cache.clear()


# --- encoders and the mlp head ----------------------------------------------------------------------
def test_mlp_head_standardises_pooled_maps_and_predicts_through_dropout_free_eval():
    from stfuse.models import HistoSPACEModule
    from stfuse.nn import pooled_maps as pooled

    tiles, Y = _tiles(24)
    m = HistoSPACE(list("abcd"), device="cpu", **FAST)
    assert (m.params["encoder"], m.params["head"], m.params["hidden"]) == ("tissue", "mlp", 512)
    assert (m.params["dropout"], m.params["input_dropout"]) == (0.8, 0.5)
    m.fit(tiles, Y, epochs=2)
    # the pooled maps are standardised by the training tiles' statistics (as they are, not rotated)
    F = pooled(m._maps(tiles, [0])[0]).double().numpy()
    np.testing.assert_allclose(m.module.feature_mean.numpy(), F.mean(0), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(m.module.feature_scale.numpy(), F.std(0), rtol=1e-3, atol=1e-5)
    # eval mode: no dropout, so predictions are deterministic
    np.testing.assert_array_equal(m.predict(tiles), m.predict(tiles))
    # the tissue encoder maps a 160 px tile to 192 x 10 x 10, the histospace one a 128 px tile to 128 x 16 x 16
    assert HistoSPACEModule(4).encoder(torch.zeros(1, 3, 160, 160)).shape == (1, 192, 10, 10)
    assert HistoSPACEModule(4, encoder="histospace").encoder(torch.zeros(1, 3, 128, 128)).shape == (1, 128, 16, 16)
    assert HistoSPACE(list("ab"), encoder="histospace").params["tile_px"] == 128
    with pytest.raises(sf.InputError, match="encoder must be"):
        HistoSPACE(list("ab"), encoder="resnet")
    with pytest.raises(sf.InputError, match="input_dropout"):
        HistoSPACE(list("ab"), input_dropout=1.0)


def test_shipped_tissue_encoder_is_the_sf_im_tissue_encoder():
    tiles, _ = _tiles(6, px=160)
    m = HistoSPACE(list("abcd"), device="cpu")
    m._load_pretrained()
    m.module.eval()
    net, checksum = sf.nn.tissue_cnn()
    x = torch.from_numpy(tiles).float() / 255
    with torch.no_grad():
        torch.testing.assert_close(m.module.encoder(x), net.feature_map(x))
    assert m.info["encoder_checksum"] == checksum


def test_models_saved_before_format_3_load_as_the_histospace_encoder_and_conv_head(tmp_path):
    import json

    tiles, Y = _tiles(12)
    old = HistoSPACE(list("abcd"), encoder="histospace", head="conv", device="cpu", **FAST).fit(tiles, Y, epochs=1)
    path = old.save(tmp_path / "old")
    config = json.loads((path / "config.json").read_text())
    for key in ("encoder", "head", "input_dropout"):  # what format 2 did not save
        config["params"].pop(key)
    config["format_version"] = 2
    (path / "config.json").write_text(json.dumps(config))
    back = HistoSPACE.load(path, device="cpu")
    assert (back.params["encoder"], back.params["head"]) == ("histospace", "conv")
    np.testing.assert_array_equal(back.predict(tiles), old.predict(tiles))
