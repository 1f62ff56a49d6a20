from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

import stfuse as sf
from stfuse.models import SpaCRD, SpaCRDModule, gmm_threshold
from stfuse.models._spacrd import _gaussian_crossings

# tiny widths so the suite stays fast; the paper's widths are the defaults
TINY = {"dim": 16, "hidden": (32,), "heads": 2, "vae_hidden": (16,), "latent": 4}
FAST = {"epochs": 8, "pretrain_epochs": 2, "lr": 1e-2, "n_top_genes": 60, "batch_size": 128, "device": "cpu", **TINY}


def _table(sd):
    return sd.tables["table"]


@pytest.fixture(scope="module")
def sections():
    return sf.datasets.toy(n_spots=300, seed=0), sf.datasets.toy(n_spots=300, seed=1)


def _arrays(n=80, g=12, seed=0):
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 2
    X = rng.random((n, g), dtype=np.float32)
    X[y == 1, :4] += 1.0
    img = rng.random((n, 5), dtype=np.float32) + y[:, None]
    nb, _ = sf.gr.knn(rng.random((n, 2)), 6)
    return X, img, nb, y


# --- threshold ---------------------------------------------------------------------------------
def test_gmm_threshold_intersection_between_the_modes():
    rng = np.random.default_rng(0)
    s = np.concatenate([rng.normal(0.1, 0.05, 400), rng.normal(0.8, 0.1, 150)])
    t = gmm_threshold(s)
    assert t.method == "gmm_intersection"
    assert t.means[0] < t.threshold < t.means[1]
    assert 0.3 < t.threshold < 0.6
    assert gmm_threshold(s).threshold == t.threshold  # deterministic
    assert set(t.as_dict()) == {"threshold", "method", "means", "variances", "weights"}


def test_gaussian_crossings_and_midpoint_fallback(monkeypatch):
    # equal variances: one crossing, shifted away from the heavier component
    (x,) = _gaussian_crossings(np.array([0.0, 1.0]), np.array([1.0, 1.0]), np.array([0.5, 0.5]))
    assert x == pytest.approx(0.5)
    (x,) = _gaussian_crossings(np.array([0.0, 1.0]), np.array([1.0, 1.0]), np.array([0.99, 0.01]))
    assert x > 1.0  # the light component never wins between the means
    # a mixture without a crossing between its means falls back to the midpoint, and says so
    import stfuse.models._spacrd as mod

    monkeypatch.setattr(mod, "_gaussian_crossings", lambda m, v, w: [])
    t = gmm_threshold(np.r_[np.zeros(50), np.ones(50)])
    assert t.method == "gmm_midpoint"
    assert t.threshold == pytest.approx(np.mean(t.means))


def test_gmm_threshold_constant_and_bad_scores():
    assert gmm_threshold(np.full(10, 0.3)).method == "constant"
    with pytest.raises(sf.InputError, match="finite"):
        gmm_threshold([0.1, np.nan])


# --- module and model --------------------------------------------------------------------------
def test_fusion_layernorm_is_over_features_not_neighbours():
    net = SpaCRDModule(10, 6, **TINY).eval()
    assert isinstance(net.norm, torch.nn.LayerNorm) and net.norm.normalized_shape == (TINY["dim"],)
    tokens = sf.nn.neighbourhood_tokens(torch.tensor([[1, 2], [0, 2], [0, 1]]))
    out = net(torch.randn(3, 10), torch.randn(3, 6), tokens)
    h = out["h"]
    # every spot's fused vector is normalised on its own (before the affine part, which starts at 1, 0)
    assert torch.allclose(h.mean(dim=1), torch.zeros(3), atol=1e-5)
    assert out["mu"].shape == (3, TINY["latent"]) and out["logit"].shape == (3,)


def test_skip_fuses_the_centre_spots_own_embeddings_beside_the_attention():
    tokens = sf.nn.neighbourhood_tokens(torch.tensor([[1, 2], [0, 2], [0, 1]]))
    g, i = torch.randn(3, 10), torch.randn(3, 6)
    plain, skip = SpaCRDModule(10, 6, **TINY).eval(), SpaCRDModule(10, 6, skip=True, **TINY).eval()
    assert plain.fuse.in_features == 2 * TINY["dim"] and skip.fuse.in_features == 4 * TINY["dim"]
    assert skip(g, i, tokens)["logit"].shape == (3,)
    # the skip carries the centre's own embeddings: zeroing the attention's share of the fusion leaves them
    with torch.no_grad():
        skip.fuse.weight[:, : 2 * TINY["dim"]] = 0
        emb = skip.embed(g, i)
        own = torch.cat([emb["image"], emb["gene"]], dim=1)
        expected = skip.norm(own @ skip.fuse.weight[:, 2 * TINY["dim"]:].T + skip.fuse.bias)
        torch.testing.assert_close(skip(g, i, tokens)["h"], expected)
    # without the attention there is nothing to skip past: the centre embeddings are fused once
    assert SpaCRDModule(10, 6, cross_attention=False, skip=True, **TINY).fuse.in_features == 2 * TINY["dim"]


def test_summed_vae_terms_are_the_means_times_the_widths():
    tokens = sf.nn.neighbourhood_tokens(torch.tensor([[1], [0], [3], [2]]))
    g, i, labels = torch.randn(4, 10), torch.randn(4, 6), torch.tensor([1, 0, -1, 1])
    kw = dict(alignment=True, beta=0.5, gamma=0.1, temperature=0.07, alpha=0.5)
    # the paper's sums over features / latent dimensions = the means times the widths
    mean = SpaCRDModule(10, 6, vae_reduction="mean", **TINY).eval()
    summed = SpaCRDModule(10, 6, **TINY).eval()  # the default: the paper's sums
    assert summed.vae_reduction == "sum"
    summed.load_state_dict(mean.state_dict())
    out = mean(g, i, tokens)
    a, b = mean.losses(out, labels, **kw), summed.losses(out, labels, **kw)
    torch.testing.assert_close(b["recon"], a["recon"] * TINY["dim"])
    torch.testing.assert_close(b["kl"], a["kl"] * TINY["latent"])
    torch.testing.assert_close(a["recon"], torch.nn.functional.mse_loss(out["recon"], out["h"]))
    with pytest.raises(sf.InputError, match="vae_reduction"):
        SpaCRDModule(10, 6, vae_reduction="max", **TINY)


def test_model_options_train_save_and_reload(tmp_path):
    X, img, nb, y = _arrays()
    m = SpaCRD(n_genes=12, n_image=5, device="cpu", vae_reduction="mean", skip=True, **TINY)
    m.fit(X, img, nb, y, epochs=2, pretrain_epochs=1, lr=1e-2, batch_size=32, patience=None)
    back = SpaCRD.load(m.save(tmp_path / "m"), device="cpu")
    assert back.params["skip"] and back.params["vae_reduction"] == "mean" and back.module.skip
    np.testing.assert_array_equal(back.predict(X, img, nb), m.predict(X, img, nb))


def test_models_saved_before_vae_reduction_load_with_mean_vae_terms(tmp_path):
    import json

    X, img, nb, y = _arrays()
    old = SpaCRD(n_genes=12, n_image=5, device="cpu", vae_reduction="mean", **TINY)
    old.fit(X, img, nb, y, epochs=1, pretrain_epochs=0, batch_size=32, patience=None)
    path = old.save(tmp_path / "old")
    config = json.loads((path / "config.json").read_text())
    for key in ("skip", "vae_reduction"):  # what models saved before these options lack
        config["params"].pop(key)
    (path / "config.json").write_text(json.dumps(config))
    back = SpaCRD.load(path, device="cpu")
    assert back.params["vae_reduction"] == "mean" and not back.params["skip"]
    assert back.module.vae_reduction == "mean"
    np.testing.assert_array_equal(back.predict(X, img, nb), old.predict(X, img, nb))


def test_vae_prior_term_is_bounded_by_zero():
    net = SpaCRDModule(10, 6, **TINY).train()
    tokens = sf.nn.neighbourhood_tokens(torch.tensor([[1], [0], [3], [2]]))
    out = net(torch.randn(4, 10), torch.randn(4, 6), tokens)
    terms = net.losses(out, torch.tensor([1, 0, -1, 1]), alignment=True, beta=0.5, gamma=0.1, temperature=0.07,
                       alpha=0.5)
    assert terms["kl"] >= 0 and terms["recon"] >= 0
    assert torch.isclose(terms["loss"], terms["bce"] + 0.1 * (terms["align"] + terms["vae"]))


def test_model_fit_predict_save_load_round_trip(tmp_path):
    X, img, nb, y = _arrays()
    genes = [f"g{i}" for i in range(X.shape[1])]
    m = SpaCRD(n_genes=X.shape[1], n_image=img.shape[1], genes=genes, device="cpu", **TINY)
    m.fit(X, img, nb, y, epochs=4, pretrain_epochs=2, lr=1e-2, batch_size=32, patience=None)
    s = m.predict(X, img, nb)
    assert s.shape == (80,) and (s >= 0).all() and (s <= 1).all()
    assert set(m.info["history"]) >= {"loss", "bce", "align", "vae", "val_loss", "pretrain"}
    m.save(tmp_path / "model")
    m2 = SpaCRD.load(tmp_path / "model", device="cpu")
    assert m2.genes == genes and m2.params == m.params and m2.is_trained
    np.testing.assert_array_equal(m2.predict(X, img, nb), s)
    with pytest.raises(sf.GeneMismatchError, match="missing"):
        m2.check_genes(genes[:-1])
    with pytest.raises(sf.InputError, match="image"):
        m2.predict(X, None, nb)


def test_model_fit_is_deterministic_and_validates():
    X, _, nb, y = _arrays()

    def run(seed):
        m = SpaCRD(n_genes=12, n_image=0, use_image=False, device="cpu", random_state=seed, **TINY)
        return m.fit(X, None, nb, y, epochs=3, lr=1e-2, batch_size=32).predict(X, None, nb)

    np.testing.assert_array_equal(run(0), run(0))
    assert not np.array_equal(run(0), run(1))
    m = SpaCRD(n_genes=12, n_image=0, use_image=False, device="cpu", **TINY)
    with pytest.raises(sf.InputError, match="single class"):
        m.fit(X, None, nb, np.ones(80, int))
    with pytest.raises(sf.InputError, match="not trained"):
        m.predict(X, None, nb)
    with pytest.raises(sf.InputError, match="no input"):
        SpaCRD(n_genes=12, use_image=False, use_genes=False)


def test_batches_are_contiguous_and_cover_every_spot():
    rng = np.random.default_rng(0)
    xy = np.c_[np.arange(400) % 20, np.arange(400) // 20].astype(float)
    xy[200:] += 100  # two sections far apart: two components
    nb, _ = sf.gr.knn(xy, 6)
    g = sf.gr.adjacency(nb)
    order = sf.gr.bfs_order(g, torch.Generator().manual_seed(0))
    assert np.array_equal(np.sort(order), np.arange(400))
    tokens = sf.nn.neighbourhood_tokens(torch.from_numpy(nb)).numpy()
    chunk = order[:64]
    assert len(np.unique(tokens[chunk])) < 2.5 * 64  # random 64 spots would need ~6 x 64
    m = SpaCRD(n_genes=3, n_image=0, use_image=False, device="cpu", **TINY)
    batches = list(m._batches(np.arange(400), 128, g, torch.Generator().manual_seed(0)))
    assert sorted(np.concatenate(batches).tolist()) == list(range(400))
    used = [len(np.unique(tokens[b])) for b in batches if len(b) == 128]
    assert max(used) < 3.5 * 128  # patches of 16 contiguous spots
    del rng


# --- the tool ----------------------------------------------------------------------------------
def test_spacrd_tool_expression_only(sections):
    ref, tgt = sections
    before = _table(ref).obs.copy()
    out = sf.tl.spacrd(tgt, ref, use_image=False, copy=True, **FAST)
    t = _table(out)
    s = t.obs["spacrd_score"].to_numpy()
    assert ((s >= 0) & (s <= 1)).all()
    assert list(t.obs["spacrd"].cat.categories) == ["normal", "cancer"]
    u = t.uns["spacrd"]
    assert u["threshold"]["method"] in ("gmm_intersection", "gmm_midpoint", "constant")
    assert ((s >= u["threshold"]["threshold"]) == (t.obs["spacrd"] == "cancer")).all()
    assert u["references"] == ["toy"] and len(u["genes"]) == 60
    assert u["params"]["use_image"] is False and len(u["history"]["loss"]) >= 1
    # neither the target (copy=True) nor the reference was touched
    assert "spacrd" not in _table(tgt).obs and "spacrd" not in _table(ref).uns
    pd.testing.assert_frame_equal(_table(ref).obs, before)
    # deterministic on CPU, bit for bit
    again = sf.tl.spacrd(tgt, ref, use_image=False, copy=True, **FAST)
    np.testing.assert_array_equal(_table(again).obs["spacrd_score"].to_numpy(), s)
    # the toy cancer regions B (expression) and C (image) : expression alone finds B at least
    auc = sf.metrics.classification(_table(tgt).obs["region"] == "B", s)["auc"]
    assert auc > 0.7


def test_spacrd_tool_reuses_a_saved_model(sections, tmp_path):
    ref, tgt = sections
    out, model = sf.tl.spacrd(tgt, [ref], use_image=False, copy=True, return_model=True, **FAST)
    model.save(tmp_path / "m")
    loaded = SpaCRD.load(tmp_path / "m", device="cpu")
    assert loaded.registry == model.registry and loaded.registry.labels == {"label_key": "cancer", "positive": True}
    again = sf.tl.spacrd(tgt, model=loaded, copy=True, device="cpu")
    np.testing.assert_array_equal(_table(again).obs["spacrd_score"].to_numpy(),
                                  _table(out).obs["spacrd_score"].to_numpy())
    assert _table(again).uns["spacrd"]["params"]["reused_model"] is True
    # a fresh Python process loads the saved model and scores the same section
    script = (
        "import sys, numpy as np, stfuse as sf\n"
        "tgt = sf.datasets.toy(n_spots=300, seed=1)\n"
        "sf.tl.spacrd(tgt, model=sf.models.SpaCRD.load(sys.argv[1], device='cpu'), device='cpu')\n"
        "np.save(sys.argv[2], tgt.tables['table'].obs['spacrd_score'].to_numpy())\n"
    )
    env = os.environ | {"PYTHONPATH": os.pathsep.join([str(Path(sf.__file__).parents[1]), os.environ.get("PYTHONPATH", "")])}
    subprocess.run([sys.executable, "-c", script, str(tmp_path / "m"), str(tmp_path / "s.npy")], check=True, env=env)
    # same scores up to float32 rounding: another process may reduce the matrix products in another order
    # (thread count, memory alignment), which moves the last bits
    np.testing.assert_allclose(np.load(tmp_path / "s.npy"), _table(out).obs["spacrd_score"].to_numpy(), rtol=1e-5,
                               atol=1e-7)
    # a target without the model's genes
    other = sf.datasets.toy(n_spots=100, seed=3)
    t = _table(other)
    t.var_names = [f"X{i}" for i in range(t.n_vars)]
    with pytest.raises(sf.GeneMismatchError, match="missing from the target"):
        sf.tl.spacrd(other, model=loaded)
    with pytest.raises(sf.InputError, match="not both"):
        sf.tl.spacrd(tgt, ref, model=loaded)


def test_spacrd_tool_bad_input(sections):
    ref, tgt = sections
    with pytest.raises(sf.InputError, match="reference"):
        sf.tl.spacrd(tgt)
    renamed = sf.datasets.toy(n_spots=100, seed=2, image=False)
    _table(renamed).var_names = [f"X{i}" for i in range(_table(renamed).n_vars)]
    with pytest.raises(sf.GeneMismatchError, match="share no gene"):
        sf.tl.spacrd(renamed, ref, use_image=False, **FAST)
    with pytest.raises(sf.KeyNotFoundError, match="obs\\['tumour'\\]"):
        sf.tl.spacrd(tgt, ref, label_key="tumour", use_image=False, **FAST)
    with pytest.raises(sf.InputError, match="single class"):
        sf.tl.spacrd(tgt, ref, label_key="region", positive="nothing", use_image=False, **FAST)
    no_image = sf.datasets.toy(n_spots=100, seed=2, image=False)
    with pytest.raises(sf.InputError, match="needs an H&E image"):
        sf.tl.spacrd(no_image, ref, **FAST)
    with pytest.raises(sf.InputError, match="epochs"):
        sf.tl.spacrd(tgt, ref, use_image=False, epochs=0)
    assert "spacrd" not in _table(tgt).obs


def test_spacrd_tool_labels_from_values_and_missing(sections):
    _, tgt = sections
    r = sf.datasets.toy(n_spots=300, seed=0)
    reg = _table(r).obs["region"].astype(object).to_numpy()
    reg[:30] = None  # unlabelled spots: neighbours only
    _table(r).obs["region"] = reg
    out = sf.tl.spacrd(tgt, r, label_key="region", positive=["B", "C"], use_image=False, copy=True, **FAST)
    assert _table(out).uns["spacrd"]["params"]["label_key"] == "region"
    # AnnData in, AnnData out (obsm["spatial"] only; no image needed for expression only)
    a_ref, a_tgt = _table(r).copy(), _table(tgt).copy()
    for a in (a_ref, a_tgt):
        del a.uns["spatialdata_attrs"]
    sf.tl.spacrd(a_tgt, [a_ref], label_key="region", positive=["B", "C"], use_image=False, **FAST)
    np.testing.assert_array_equal(a_tgt.obs["spacrd_score"].to_numpy(), _table(out).obs["spacrd_score"].to_numpy())


@pytest.fixture(scope="module")
def image_sections():
    """Small-image toy sections with a tiny encoder's embeddings cached (as sf.im.embed leaves them)."""
    with sf.nn.seeded(0):
        net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, stride=2), torch.nn.AdaptiveAvgPool2d(2),
                                  torch.nn.Flatten())
    enc = sf.im.Encoder.from_module(net, name="tiny", input_px=16)
    ref, tgt = (sf.datasets.toy(n_spots=300, seed=s, spot_diameter_px=8.0) for s in (0, 1))
    sf.im.embed(ref, enc)
    return ref, tgt, enc


def test_spacrd_tool_with_images_and_ablations(image_sections):
    ref, tgt, enc = image_sections
    ref_obsm = set(_table(ref).obsm)
    model = sf.tl.spacrd(tgt, ref, encoder=enc, return_model=True, **FAST)
    t = _table(tgt)
    assert "X_tiny_55um" in t.obsm and t.uns["stfuse_embeddings"]["X_tiny_55um"]["encoder"] == "tiny"  # cached
    assert set(_table(ref).obsm) == ref_obsm  # the reference is not modified
    assert model.uses_image and model.info["history"]["pretrain"]["loss"]
    assert np.isfinite(t.obs["spacrd_score"]).all()
    other = sf.im.Encoder.from_module(torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.AdaptiveAvgPool2d(2),
                                                          torch.nn.Flatten()), name="other", input_px=16)
    with pytest.raises(sf.InputError, match="encoder"):
        sf.tl.spacrd(tgt, model=model, encoder=other, key_added="again")
    fast = FAST | {"epochs": 2}
    for flags in ({"use_genes": False}, {"cross_attention": False}, {"vae": False}, {"alignment": False},
                  {"schedule": "joint"}):
        out = sf.tl.spacrd(tgt, ref, encoder=enc, copy=True, key_added="abl", **fast, **flags)
        u = _table(out).uns["abl"]
        assert np.isfinite(_table(out).obs["abl_score"]).all()
        for k, v in flags.items():
            if k != "schedule":
                assert u["params"][k] is v
    assert "abl" not in _table(tgt).obs


# --- the plot ----------------------------------------------------------------------------------
def test_pl_spacrd(sections, tmp_path):
    import matplotlib.pyplot as plt

    ref, _ = sections
    tgt = sf.datasets.toy(n_spots=300, seed=1)
    sf.tl.spacrd(tgt, ref, use_image=False, **FAST)
    fig = sf.pl.spacrd(tgt, truth="cancer", save=tmp_path / "s.png")
    titles = [a.get_title() for a in fig.axes if a.get_title()]
    assert titles[0].startswith("SpaCRD score\nAUC") and titles[1] == "cancer (truth)"
    assert titles[2].startswith("scores (GMM")
    assert (tmp_path / "s.png").stat().st_size > 0
    thr = _table(tgt).uns["spacrd"]["threshold"]["threshold"]
    hist = fig.axes[2]
    assert any(np.allclose(line.get_xdata(), thr) for line in hist.get_lines())  # the threshold line
    u = _table(tgt).obs["spacrd_score"].to_numpy()
    if u.min() < thr < u.max():  # the contour is drawn on the score map
        assert any(type(c).__name__ in ("QuadContourSet", "TriContourSet", "LineCollection", "ContourSet")
                   for c in fig.axes[0].collections[1:])
    _, axes = plt.subplots(1, 2)
    out = sf.pl.spacrd(tgt, ax=list(axes))
    assert list(out) == list(axes)
    with pytest.raises(sf.KeyNotFoundError, match=r"sf\.tl\.spacrd"):
        sf.pl.spacrd(tgt, key="nope")
    plt.close("all")


def test_spacrd_early_stopping_watches_a_whole_reference_section(sections):
    ref, tgt = sections
    other = sf.datasets.toy(n_spots=200, seed=3, image=False)
    _table(other).obs["section"] = "other"
    fast = {**FAST, "epochs": 4, "patience": 2}
    out, model = sf.tl.spacrd(tgt, [ref, other], use_image=False, copy=True, return_model=True, refit=False, **fast)
    held = out.tables["table"].uns["spacrd"]["params"]["validation"]
    assert held in ("section toy", "section other")
    n_held = 300 if held == "section toy" else 200
    # the held-out section is not trained on: every one of its spots validates, no other spot does
    assert model.info["training"]["n_val"] == n_held and model.info["training"]["n_train"] == 500 - n_held
    assert model.info["training"]["monitor"] == "bce"
    assert "best_epoch" in model.info["history"] and "val_bce" in model.info["history"]
    # refit (default): the chosen number of epochs, retrained on every reference
    out, model = sf.tl.spacrd(tgt, [ref, other], use_image=False, copy=True, return_model=True, **fast)
    chosen = model.info["selection"]["best_epoch"]
    assert len(model.info["history"]["loss"]) == chosen and model.info["training"]["n_train"] == 500
    assert _table(out).uns["spacrd"]["params"]["validation"].endswith(f"chose {chosen} epochs, then refit on every reference")
    # several held-out sections: one selection run each, the refit trains for the median of their best epochs
    third = sf.datasets.toy(n_spots=200, seed=4, image=False)
    _table(third).obs["section"] = "third"
    out, model = sf.tl.spacrd(tgt, [ref, other, third], use_image=False, validation_sections=3, copy=True,
                              return_model=True, **fast)
    sel = model.info["selection"]
    assert sorted(sel["sections"]) == ["section other", "section third", "section toy"]
    assert len(sel["histories"]) == 3 and sel["best_epoch"] == max(1, round(float(np.median(sel["best_epochs"]))))
    assert len(model.info["history"]["loss"]) == sel["best_epoch"] and model.info["training"]["n_train"] == 700
    assert _table(out).uns["spacrd"]["params"]["validation"].endswith(
        f"(median {sel['best_epoch']}), then refit on every reference")
    with pytest.raises(sf.InputError, match="validation_sections"):
        sf.tl.spacrd(tgt, [ref, other], use_image=False, validation_sections=0, **FAST)
    # one reference: a whole section cannot be held out, random spots are (and the record says so)
    one = sf.tl.spacrd(tgt, ref, use_image=False, copy=True, **fast)
    assert _table(one).uns["spacrd"]["params"]["validation"].endswith("random reference spots")
    # no validation: every epoch runs
    none, m = sf.tl.spacrd(tgt, [ref, other], use_image=False, validation=None, copy=True, return_model=True, **fast)
    assert _table(none).uns["spacrd"]["params"]["validation"] == "none"
    assert len(m.info["history"]["loss"]) == 4 and "best_epoch" not in m.info["history"]
    with pytest.raises(sf.InputError, match="validation must be"):
        sf.tl.spacrd(tgt, ref, use_image=False, validation="random", **FAST)
    X, _, nb, y = _arrays()
    with pytest.raises(sf.InputError, match="monitor must be"):
        SpaCRD(n_genes=12, n_image=0, use_image=False, device="cpu", **TINY).fit(X, None, nb, y, monitor="auc")


# --- the user's spot graph (obsp) ----------------------------------------------------------------
def _knn_graph(sd, k=6):
    """The directed kNN graph that spacrd builds, as a squidpy-style obsp matrix."""
    from scipy import sparse

    from stfuse._spots import get_spots

    nb = sf.data.neighbour_index(get_spots(sd).centers, k)
    rows = np.repeat(np.arange(len(nb)), nb.shape[1])
    return sparse.csr_matrix((np.ones(nb.size, np.float32), (rows, nb.ravel())), shape=(len(nb),) * 2)


def test_spacrd_reads_the_obsp_graph_of_each_section():
    ref, tgt = sf.datasets.toy(n_spots=300, seed=0), sf.datasets.toy(n_spots=300, seed=1)
    base, knn_model = sf.tl.spacrd(tgt, ref, use_image=False, copy=True, return_model=True, **FAST)
    g = _table(base).uns["spacrd"]["inputs"]["graph"]
    assert g["rule"] == {"method": "knn", "n_neighs": 6} == knn_model.registry.graph
    assert g["target"]["kind"] == g["references"]["toy"]["kind"] == "knn"
    s_knn = _table(base).obs["spacrd_score"].to_numpy()
    # the same kNN graph given in obsp: read from there, same neighbours in the same order, same scores
    for sd in (ref, tgt):
        _table(sd).obsp["spatial_connectivities"] = _knn_graph(sd)
    same, model = sf.tl.spacrd(tgt, ref, use_image=False, copy=True, return_model=True, **FAST)
    g = _table(same).uns["spacrd"]["inputs"]["graph"]
    assert g["rule"] == {"method": "obsp", "connectivity_key": "spatial_connectivities", "n_neighs": 6}
    assert g["target"] == g["references"]["toy"] == {"kind": "obsp", "key": "spatial_connectivities",
                                                        "max_degree": 6, "order": "distance"}
    np.testing.assert_array_equal(_table(same).obs["spacrd_score"].to_numpy(), s_knn)
    # another graph (squidpy's symmetric 10-NN graph of sf.gr.spatial_graph): other scores
    for sd in (ref, tgt):
        sf.gr.spatial_graph(sd, n_neighs=10, coord_type="generic")
    other = sf.tl.spacrd(tgt, ref, use_image=False, copy=True, **FAST)
    g = _table(other).uns["spacrd"]["inputs"]["graph"]
    assert g["target"]["kind"] == "obsp" and g["target"]["max_degree"] >= 10
    assert not np.array_equal(_table(other).obs["spacrd_score"].to_numpy(), s_knn)
    # connectivity_key=None: kNN everywhere, the default scores
    none = sf.tl.spacrd(tgt, ref, use_image=False, copy=True, connectivity_key=None, **FAST)
    assert _table(none).uns["spacrd"]["inputs"]["graph"]["target"]["kind"] == "knn"
    np.testing.assert_array_equal(_table(none).obs["spacrd_score"].to_numpy(), s_knn)
    # saved models re-apply their rule: kNN-trained keeps kNN on a section with a graph, obsp-trained reads it
    kept = sf.tl.spacrd(tgt, model=knn_model, copy=True, device="cpu")
    assert _table(kept).uns["spacrd"]["inputs"]["graph"]["target"]["kind"] == "knn"
    np.testing.assert_array_equal(_table(kept).obs["spacrd_score"].to_numpy(), s_knn)
    read = sf.tl.spacrd(tgt, model=model, copy=True, device="cpu")
    assert _table(read).uns["spacrd"]["inputs"]["graph"]["target"]["kind"] == "obsp"
    plain = sf.tl.spacrd(sf.datasets.toy(n_spots=200, seed=3), model=model, copy=True, device="cpu")
    assert _table(plain).uns["spacrd"]["inputs"]["graph"]["target"]["kind"] == "knn"  # no graph there: kNN


def test_spacrd_refuses_a_bad_obsp_graph_and_leaves_the_objects_unchanged():
    from scipy import sparse

    ref, tgt = sf.datasets.toy(n_spots=200, seed=0), sf.datasets.toy(n_spots=200, seed=1)
    t = _table(tgt)
    t.obsp["spatial_connectivities"] = sparse.csr_matrix((t.n_obs, t.n_obs))  # no edges
    with pytest.raises(sf.InputError, match="has no edges"):
        sf.tl.spacrd(tgt, ref, use_image=False, **FAST)
    # another table's graph: AnnData refuses it in obsp; the graph reader (spacrd's and senca's) refuses it too
    from types import SimpleNamespace

    alien = SimpleNamespace(table=SimpleNamespace(obsp={"g": sparse.eye(t.n_obs + 1, format="csr")}), n_obs=t.n_obs)
    reg = sf.data.Registry("spacrd", graph={"method": "obsp", "connectivity_key": "g", "n_neighs": 6})
    with pytest.raises(sf.InputError, match=r"has shape \(201, 201\), expected \(200, 200\)"):
        reg.neighbours(alien, n_neighs=6)
    del t.obsp["spatial_connectivities"]
    r = _table(ref)
    r.obsp["spatial_connectivities"] = sparse.csr_matrix((r.n_obs, r.n_obs))  # a reference's graph is checked too
    with pytest.raises(sf.InputError, match="has no edges"):
        sf.tl.spacrd(tgt, ref, use_image=False, **FAST)
    for sd in (ref, tgt):
        assert "spacrd" not in _table(sd).uns and "spacrd" not in _table(sd).obs and "spacrd_score" not in _table(sd).obs
    with pytest.raises(sf.InputError, match="connectivity_key"):
        sf.tl.spacrd(tgt, ref, use_image=False, connectivity_key=3, **FAST)
