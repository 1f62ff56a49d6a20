from __future__ import annotations

import anndata as ad
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
import scanpy as sc
import torch

import stfuse as sf
from stfuse._spots import get_spots
from stfuse.tl._clustering import ward_clusters

#: tiny model and few epochs: the tests check behaviour, not quality
TINY = dict(hidden=16, latent=8, steps=5)
#: a little larger for the toy quality check
SMALL = dict(hidden=32, latent=16, steps=10)


def tiny_encoder() -> sf.im.Encoder:
    """A small random conv net: fast and deterministic."""
    with torch.random.fork_rng():
        torch.manual_seed(0)
        net = torch.nn.Sequential(torch.nn.Conv2d(3, 16, 5, stride=2), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(2),
                                  torch.nn.Flatten())
    return sf.im.Encoder.from_module(net, name="tiny", input_px=32)


@pytest.fixture(scope="module")
def enc():
    return tiny_encoder()


@pytest.fixture(scope="module")
def toy_senca(enc):
    """Toy section with SENCA fused and gene-only results (4 regions)."""
    sdata = sf.datasets.toy(n_spots=400, seed=0)
    sf.tl.senca(sdata, n_clusters=4, encoder=enc, key_added="fused", **SMALL)
    sf.tl.senca(sdata, n_clusters=4, image=False, key_added="gene", **SMALL)
    return sdata


def test_toy_regions_found(toy_senca):
    t = toy_senca.tables["table"]
    ari = {k: sf.metrics.ari(t.obs["region"], t.obs[k]) for k in ("fused", "gene")}
    # both well above chance; the image helps (the toy's C/D differ only in the image)
    assert ari["gene"] > 0.35 and ari["fused"] > 0.5 and ari["fused"] > ari["gene"]
    cd = t.obs["region"].isin(["C", "D"]).to_numpy()
    assert sf.metrics.ari(t.obs["region"][cd], t.obs["fused"][cd]) > sf.metrics.ari(t.obs["region"][cd], t.obs["gene"][cd])


def test_results_written(toy_senca, tmp_path):
    t = toy_senca.tables["table"]
    t.write_h5ad(tmp_path / "t.h5ad")  # everything written is storable
    back = ad.read_h5ad(tmp_path / "t.h5ad")
    assert back.obs["fused"].equals(t.obs["fused"])
    assert isinstance(t.obs["fused"].dtype, pd.CategoricalDtype)
    assert list(t.obs["fused"].cat.categories) == ["0", "1", "2", "3"]
    sizes = t.obs["fused"].value_counts().reindex(["0", "1", "2", "3"]).to_numpy()
    assert (np.diff(sizes) <= 0).all()  # largest region first
    assert t.obsm["X_fused"].shape == (400, 16) and np.isfinite(t.obsm["X_fused"]).all()
    u = t.uns["fused"]
    assert u["n_clusters"] == 4 and u["clustering"]["chosen_from"] == "n_clusters"
    p = u["params"]
    assert p["image"] is True and p["steps"] == 10 and p["latent"] == 16 and p["n_neighs"] == 4 and p["lam"] == 40.0
    assert p["encoder"] == "tiny" and p["image_features"] in t.obsm and p["image_features"] in t.uns["stfuse_embeddings"]
    assert set(u["history"]) == {"loss", "nt_xent_windowed", "nt_xent_pooled", "mse", "steps"}
    assert all(len(v) == 10 and np.isfinite(v).all() for v in u["history"].values())
    assert u["history"]["steps"][-1] == 10 and p["cluster_method"] == "kmeans"
    lo = u["history"]
    assert np.allclose(lo["loss"], lo["nt_xent_windowed"] + lo["nt_xent_pooled"] + 40.0 * lo["mse"], rtol=1e-4)
    assert t.uns["gene"]["params"]["image"] is False and "encoder" not in t.uns["gene"]["params"]
    assert u["inputs"]["image_features"] == p["image_features"] and u["inputs"]["graph"]["n_neighs"] == 4
    assert "image_features" not in t.uns["gene"]["inputs"] and u["stfuse_version"] == sf.__version__


def test_deterministic(enc):
    a = sf.datasets.toy(n_spots=200, seed=1)
    b = sf.datasets.toy(n_spots=200, seed=1)
    for s in (a, b):
        sf.tl.senca(s, n_clusters=3, encoder=enc, **TINY)
    ta, tb = a.tables["table"], b.tables["table"]
    assert np.array_equal(ta.obsm["X_senca"], tb.obsm["X_senca"])
    assert ta.obs["senca"].equals(tb.obs["senca"])
    # another seed gives another model
    sf.tl.senca(b, n_clusters=3, encoder=enc, random_state=1, key_added="s1", **TINY)
    assert not np.array_equal(ta.obsm["X_senca"], tb.obsm["X_s1"])


@pytest.mark.parametrize(
    "kw, terms",
    [
        (dict(cross_attention=False), {"nt_xent_windowed", "nt_xent_pooled"}),
        (dict(hierarchical=False), {"nt_xent"}),
        (dict(combine="concat"), {"nt_xent_windowed", "nt_xent_pooled"}),
        (dict(contrast="shared", image_mask_rate=0.2), {"nt_xent_windowed", "nt_xent_pooled"}),
        (dict(contrast="none"), set()),
    ],
)
def test_switches(enc, kw, terms):
    sdata = sf.datasets.toy(n_spots=150, seed=3)
    model = sf.tl.senca(sdata, n_clusters=3, encoder=enc, return_model=True, **TINY, **kw)
    t = sdata.tables["table"]
    assert set(t.uns["senca"]["history"]) == terms | {"loss", "mse", "steps"}
    assert t.obs["senca"].nunique() == 3
    for k, v in kw.items():
        assert t.uns["senca"]["params"][k] == v and model.params[k] == v
    assert model.module.cross_attention == kw.get("cross_attention", True)


def test_contrast_on_shared_embedding_trains_the_shared_encoder():
    # with contrast="branches" the NT-Xent acts on R and H only: it sends no gradient to the shared encoder;
    # with contrast="shared" it does (two masked views of S)
    rng = np.random.default_rng(0)
    xy = np.stack(np.meshgrid(np.arange(10.0), np.arange(10.0)), -1).reshape(-1, 2)
    nbr, _ = sf.gr.knn(xy, 4)
    X = rng.poisson(2.0, (100, 20)).astype("float32")
    grads = {}
    for mode in ("branches", "shared"):
        m = sf.models.SENCA(20, None, hidden=16, latent=8, device="cpu", contrast=mode, lam=0.0)
        b = m._tiling(nbr, xy).batch(np.arange(m._tiling(nbr, xy).n_tiles), torch.from_numpy(X), None)
        m.module.train()
        m._losses(m.module, b)["loss"].backward()
        grads[mode] = float(m.module.encoder.weight.grad.abs().sum()) if m.module.encoder.weight.grad is not None else 0.0
    assert grads["branches"] == 0.0 and grads["shared"] > 0.0


def test_decoder_target_is_the_neighbourhood_mean_of_the_data():
    # target_hops=1 (default): S reconstructs the mean of each spot's data over itself and its graph neighbours
    rng = np.random.default_rng(0)
    xy = np.stack(np.meshgrid(np.arange(6.0), np.arange(6.0)), -1).reshape(-1, 2)
    nbr, _ = sf.gr.knn(xy, 4)
    X = torch.from_numpy(rng.poisson(2.0, (36, 12)).astype("float32"))
    targets = {}
    for hops in (0, 1, 2):
        m = sf.models.SENCA(12, None, hidden=16, latent=8, device="cpu", target_pcs=None, target_hops=hops)
        assert m.halo >= hops
        m.module.eval()
        targets[hops] = m.module(X, None, torch.from_numpy(nbr))["E"].detach().numpy()
    np.testing.assert_allclose(targets[0], X.numpy())  # the spot's own data
    ok = nbr >= 0
    mean1 = (X.numpy() + np.where(ok[..., None], X.numpy()[nbr.clip(0)], 0).sum(1)) / (1 + ok.sum(1))[:, None]
    np.testing.assert_allclose(targets[1], mean1, rtol=1e-5)
    mean2 = (mean1 + np.where(ok[..., None], mean1[nbr.clip(0)], 0).sum(1)) / (1 + ok.sum(1))[:, None]
    np.testing.assert_allclose(targets[2], mean2, rtol=1e-5)
    assert sf.models.SENCA(12, None, reconstruct="input", device="cpu").module.target_hops == 0  # R ⊕ H: unsmoothed
    with pytest.raises(sf.InputError, match="target_hops"):
        sf.models.SENCA(12, None, target_hops=-1, device="cpu")


def test_recon_image_weight_weighs_the_image_part_of_the_reconstruction():
    # 0: S reconstructs the expression part only (no gradient from the image part of the target);
    # 1 (default): both parts weigh the same (mean of the two MSEs)
    rng = np.random.default_rng(0)
    xy = np.stack(np.meshgrid(np.arange(8.0), np.arange(8.0)), -1).reshape(-1, 2)
    nbr, _ = sf.gr.knn(xy, 4)
    X, F = rng.poisson(2.0, (64, 20)).astype("float32"), rng.normal(size=(64, 6)).astype("float32")
    out = {}
    for w in (0.0, 0.5, 1.0):
        m = sf.models.SENCA(20, 6, hidden=16, latent=8, device="cpu", contrast="none", target_pcs=None,
                            recon_image_weight=w, mask_rate=0.0)
        assert m.params["recon_image_weight"] == w
        tiling = m._tiling(nbr, xy)
        b = tiling.batch(np.arange(tiling.n_tiles), torch.from_numpy(X), torch.from_numpy(F))
        m.module.train()
        res = m.module(b.x, b.f, b.nbr)
        parts = [torch.nn.functional.mse_loss(d, e).item()
                 for d, e in zip(res["D"].split(m.module.e_parts, 1), res["E"].split(m.module.e_parts, 1))]
        loss = m._losses(m.module, b)
        assert loss["mse"].item() == pytest.approx((parts[0] + w * parts[1]) / (1 + w), rel=1e-5)
        loss["loss"].backward()
        img_rows = m.module.decoder[-1].weight.grad[20:]  # decoder outputs of the image part
        out[w] = float(img_rows.abs().sum())
    assert out[0.0] == 0.0 and out[0.5] > 0.0 and out[1.0] > 0.0
    assert sf.models.SENCA(20, 6, device="cpu").params["recon_image_weight"] == 1.0
    with pytest.raises(sf.InputError, match="recon_image_weight"):
        sf.models.SENCA(20, 6, device="cpu", recon_image_weight=-1.0)


def test_cluster_methods_and_user_graph():
    sdata = sf.datasets.toy(n_spots=150, seed=5, image=False)
    t = sdata.tables["table"]
    for method in ("ward", "gmm", "leiden"):
        sf.tl.senca(sdata, n_clusters=3, image=False, cluster_method=method, key_added=method, **TINY)
        assert t.obs[method].nunique() == 3 and t.uns[method]["clustering"]["method"] == method
    assert t.uns["ward"]["inputs"]["graph"]["kind"] == "knn"  # no obsp graph yet: built from n_neighs
    # a squidpy-style graph in obsp is used as given (here: 6 neighbours instead of the 4 SENCA would build)
    sf.gr.spatial_graph(sdata, coord_type="generic", n_neighs=6)
    sf.tl.senca(sdata, n_clusters=3, image=False, key_added="g", **TINY)
    g = t.uns["g"]["inputs"]["graph"]
    assert g["kind"] == "obsp" and g["key"] == "spatial_connectivities" and g["max_degree"] >= 6
    sf.tl.senca(sdata, n_clusters=3, image=False, key_added="k", connectivity_key=None, **TINY)
    assert t.uns["k"]["inputs"]["graph"]["kind"] == "knn"
    with pytest.raises(sf.InputError, match="cluster_method"):
        sf.tl.senca(sdata, n_clusters=3, image=False, cluster_method="dbscan", **TINY)


def test_n_clusters_from_dendrogram():
    # three well separated blobs: the largest merge-height gap is at k=3
    rng = np.random.default_rng(0)
    X = np.concatenate([rng.normal(c, 0.1, (30, 2)) for c in ((0, 0), (5, 0), (0, 5))])
    labels, k, info = ward_clusters(X, None, k_range=(2, 8))
    assert k == 3 and info["chosen_from"] == "dendrogram" and set(info["gaps"]) == {str(i) for i in range(2, 9)}
    assert sf.metrics.ari(np.repeat([0, 1, 2], 30), labels) == 1.0
    # beyond max_spots: tree on a subsample, the rest by the nearest mean
    labels2, _, info2 = ward_clusters(X, 3, max_spots=40)
    assert info2["n_tree_spots"] == 40 and sf.metrics.ari(np.repeat([0, 1, 2], 30), labels2) == 1.0
    sdata = sf.datasets.toy(n_spots=150, seed=4, image=False)
    sf.tl.senca(sdata, image=False, k_range=(2, 5), cluster_method="ward", **TINY)
    u = sdata.tables["table"].uns["senca"]
    assert u["clustering"]["chosen_from"] == "dendrogram" and 2 <= u["n_clusters"] <= 5
    assert sdata.tables["table"].obs["senca"].nunique() == u["n_clusters"]


def test_copy_and_failures_leave_object_unchanged(enc):
    sdata = sf.datasets.toy(n_spots=150, seed=2)
    t = sdata.tables["table"]
    before = (set(t.obs), set(t.obsm), set(t.uns))
    out = sf.tl.senca(sdata, n_clusters=3, encoder=enc, copy=True, **TINY)
    assert (set(t.obs), set(t.obsm), set(t.uns)) == before
    assert out.tables["table"].obs["senca"].nunique() == 3
    bad = [
        (dict(n_neighs=150), sf.InputError, "n_neighs"),
        (dict(n_clusters=1), sf.InputError, "n_clusters"),
        (dict(steps=0), sf.InputError, "steps"),
        (dict(lr=0), sf.InputError, "lr"),
        (dict(combine="mean"), sf.InputError, "combine"),
        (dict(mask_rate=1.5), sf.InputError, "mask_rate"),
        (dict(latnet=8), sf.InputError, "Unknown argument"),
        (dict(image_rep="X_nothing"), sf.KeyNotFoundError, "X_nothing"),
        (dict(layer="counts"), sf.InputError, "layer"),
        (dict(key_added=""), sf.InputError, "key_added"),
    ]
    for kw, err, msg in bad:
        with pytest.raises(err, match=msg):
            sf.tl.senca(sdata, encoder=enc, **{**dict(n_clusters=3), **kw})
    assert (set(t.obs), set(t.obsm), set(t.uns)) == before


def test_image_required_unless_gene_only():
    sdata = sf.datasets.toy(n_spots=100, image=False)
    with pytest.raises(sf.InputError, match="image=False"):
        sf.tl.senca(sdata, n_clusters=3)
    sf.tl.senca(sdata, n_clusters=3, image=False, **TINY)
    assert sdata.tables["table"].obs["senca"].nunique() == 3


def test_image_rep_reuses_features(enc):
    sdata = sf.datasets.toy(n_spots=150, seed=5)
    sf.im.embed(sdata, enc, key_added="tiny")
    t = sdata.tables["table"]
    sf.tl.senca(sdata, n_clusters=3, image_rep="X_tiny", **TINY)
    assert t.uns["senca"]["params"]["image_features"] == "X_tiny" and t.uns["senca"]["params"]["image"] is True


def test_anndata_and_scanpy_composition(enc):
    sdata = sf.datasets.toy(n_spots=200, seed=0)
    t = sdata.tables["table"]
    a = ad.AnnData(X=t.X.copy(), obs=t.obs[["region"]].copy(), var=pd.DataFrame(index=t.var_names))
    a.obsm["spatial"] = np.asarray(t.obsm["spatial"], float)
    hires = np.asarray(get_spots(sdata).levels[0].data.compute()).transpose(1, 2, 0)[::2, ::2]
    a.uns["spatial"] = {"lib": {"images": {"hires": hires},
                                "scalefactors": {"tissue_hires_scalef": 0.5, "spot_diameter_fullres": 24.0}}}
    sf.tl.senca(a, n_clusters=4, encoder=enc, **TINY)
    assert a.obs["senca"].nunique() == 4 and a.obsm["X_senca"].shape == (200, 8)
    sc.pp.neighbors(a, use_rep="X_senca", n_neighbors=10)
    sc.tl.umap(a, random_state=0)
    assert a.obsm["X_umap"].shape == (200, 2)
    fig = sf.pl.senca(a, truth="region")
    assert [x.get_title().split(" ")[0] for x in fig.axes if x.get_title()] == ["H&E", "SENCA", "region"]
    plt.close(fig)


def test_model_save_load_and_embed(tmp_path):
    sdata = sf.datasets.toy(n_spots=150, seed=6, image=False)
    model = sf.tl.senca(sdata, n_clusters=3, image=False, return_model=True, **TINY)
    model.save(tmp_path / "senca.pt")
    back = sf.models.SENCA.load(tmp_path / "senca.pt")
    t = sdata.tables["table"]
    X = sf.pp.prepare_expression(t, min_counts=10, n_top_genes=500, flavor="seurat").X
    nbr, _ = sf.gr.knn(t.obsm["spatial"], 4)
    assert np.allclose(back.embed(X, None, nbr, t.obsm["spatial"]), t.obsm["X_senca"], atol=1e-5)


def test_tiled_training_matches_full_embedding():
    # mini-batches of spatial tiles with halos compute every embedding exactly as on the whole section
    rng = np.random.default_rng(0)
    xy = np.stack(np.meshgrid(np.arange(20.0), np.arange(20.0)), -1).reshape(-1, 2)
    nbr, _ = sf.gr.knn(xy, 4)
    X = rng.poisson(2.0, (400, 20)).astype("float32")
    F = rng.normal(size=(400, 6)).astype("float32")
    m = sf.models.SENCA(20, 6, hidden=16, latent=8, device="cpu", batch_size=50, tile_side=4)
    hist = m.fit(X, F, nbr, xy, steps=20)  # several batches per pass: 20 steps end within the third pass
    assert hist["steps"][-1] == 20 and len(hist["loss"]) == len(hist["steps"]) >= 2
    tiled = m.embed(X, F, nbr, xy)
    m.params["batch_size"] = 10_000
    full = m.embed(X, F, nbr, xy)
    assert np.allclose(tiled, full, atol=1e-5)


def test_plots(toy_senca, tmp_path):
    fig = sf.pl.senca(toy_senca, "fused", truth="region", save=tmp_path / "s.png", dpi=40)
    titles = [a.get_title() for a in fig.axes if a.get_title()]
    assert titles[0] == "H&E" and titles[1].startswith("SENCA (4 regions)") and "ARI" in titles[1]
    assert (tmp_path / "s.png").stat().st_size > 1000
    plt.close(fig)
    fig = sf.pl.senca(toy_senca, "gene", image=False)
    assert [a.get_title().split("\n")[0] for a in fig.axes if a.get_title()] == ["SENCA (4 regions, gene-only)"]
    plt.close(fig)
    fig = sf.pl.loss(toy_senca, "fused", logy=True, save=tmp_path / "l.png")
    assert [a.get_title() for a in fig.axes] == ["loss", "nt_xent_windowed", "nt_xent_pooled", "mse"]
    assert len(fig.axes[0].lines[0].get_ydata()) == 10
    plt.close(fig)
    _, axes = plt.subplots(1, 2)
    out = sf.pl.loss(toy_senca, "gene", terms=["mse", "loss"], ax=axes)
    assert list(out) == list(axes) and axes[0].get_title() == "mse"
    # generic: any uns entry with a {term: per-epoch values} mapping
    toy_senca.tables["table"].uns["other"] = {"history": {"recon": [3.0, 2.0, 1.0]}}
    fig = sf.pl.loss(toy_senca, "other")
    assert [a.get_title() for a in fig.axes] == ["recon"]
    plt.close("all")
    with pytest.raises(sf.KeyNotFoundError, match=r"run sf\.tl\.senca"):
        sf.pl.senca(toy_senca, "nothing")
    with pytest.raises(sf.KeyNotFoundError, match="no per-epoch losses"):
        toy_senca.tables["table"].uns["nolog"] = {"params": {}}
        sf.pl.loss(toy_senca, "nolog")
    with pytest.raises(sf.KeyNotFoundError, match="terms"):
        sf.pl.loss(toy_senca, "fused", terms=["kl"])


@pytest.mark.her2st
def test_her2st_c2_fused_and_gene_only(her2st_dir):
    sdata = sf.datasets.her2st("C2", her2st_dir)
    kw = dict(hidden=32, latent=16, steps=50)  # 5 steps of a tiny model are too close to chance here
    sf.tl.senca(sdata, n_clusters=4, encoder=tiny_encoder(), **kw)
    sf.tl.senca(sdata, n_clusters=4, image=False, key_added="gene", **kw)
    t = sdata.tables["table"]
    assert t.obs["senca"].nunique() == 4 and t.obs["gene"].nunique() == 4
    # regions follow the tissue: clearly related to the authors' clusters
    assert sf.metrics.ari(t.obs["cluster"], t.obs["senca"]) > 0.05
    assert sf.metrics.ari(t.obs["cluster"], t.obs["gene"]) > 0.05


@pytest.fixture(scope="module", params=[False, True], ids=["gene-only", "image"])
def trained(request, enc, tmp_path_factory):
    """A SENCA trained on one toy section, saved and loaded again; the training section."""
    image = request.param
    kw = dict(encoder=enc) if image else dict(image=False)
    train = sf.datasets.toy(n_spots=200, seed=0)
    model = sf.tl.senca(train, n_clusters=3, return_model=True, **kw, **TINY)
    path = model.save(tmp_path_factory.mktemp("senca") / "model")
    return sf.models.SENCA.load(path, device="cpu"), train, image


def test_model_applied_to_new_section(trained, enc):
    model, train, image = trained
    kw = dict(encoder=enc) if image else {}
    new = [sf.datasets.toy(n_spots=200, seed=1) for _ in range(2)]
    for s in new:
        assert sf.tl.senca(s, n_clusters=3, model=model, **kw) is None
    t, t2 = (s.tables["table"] for s in new)
    assert t.obsm["X_senca"].shape == (200, 8) and np.isfinite(t.obsm["X_senca"]).all()
    assert list(t.obs["senca"].cat.categories) == ["0", "1", "2"]
    assert np.array_equal(t.obsm["X_senca"], t2.obsm["X_senca"]) and t.obs["senca"].equals(t2.obs["senca"])
    u, p = t.uns["senca"], t.uns["senca"]["params"]
    assert p["trained_here"] is False and p["image"] is image and p["steps"] == 5 and p["latent"] == 8
    assert p["trained_on"] == list(model.registry.references) and u["history"]["steps"][-1] == 5
    assert list(u["genes"]) == model.genes and u["inputs"]["graph"]["n_neighs"] == 4
    assert (p["encoder"] == "tiny") if image else "encoder" not in p
    assert train.tables["table"].uns["senca"]["params"]["trained_here"] is True
    # the saved model applied to its own training section gives the training run's embedding and regions
    sf.tl.senca(train, n_clusters=3, model=model, key_added="again", **kw)
    tt = train.tables["table"]
    assert np.array_equal(tt.obsm["X_again"], tt.obsm["X_senca"]) and tt.obs["again"].equals(tt.obs["senca"])


def test_model_reuse_refusals_leave_object_unchanged(trained, enc):
    model, _, image = trained
    kw = dict(encoder=enc) if image else {}
    sdata = sf.datasets.toy(n_spots=200, seed=1)
    t = sdata.tables["table"]
    sdata.tables["table"] = t = t[:, [g for g in t.var_names if g not in ("G003", "G007")]].copy()
    before = (set(t.obs), set(t.obsm), set(t.uns))
    bad = [
        (dict(), sf.GeneMismatchError, r"2 are missing .*'G003', 'G007'.*same gene panel"),
        (dict(steps=3), sf.InputError, r"\['steps'\] only apply to training"),
        (dict(hidden=64), sf.InputError, r"\['hidden'\] only apply to training"),
        (dict(n_neighs=6), sf.InputError, "n_neighs=6 differs from the model's n_neighs=4"),
        (dict(n_top_genes=40), sf.InputError, "n_top_genes=40 differs"),
    ]
    if image:
        bad.append((dict(image=False), sf.InputError, "image=False differs"))
    else:
        bad.append((dict(image_rep="X_x"), sf.InputError, "gene-only"))
    for args, err, msg in bad:
        with pytest.raises(err, match=msg):
            sf.tl.senca(sdata, n_clusters=3, model=model, **{**kw, **args})
    assert (set(t.obs), set(t.obsm), set(t.uns)) == before
    full = sf.datasets.toy(n_spots=200, seed=1)
    sf.tl.senca(full, n_clusters=3, model=model, hidden=16, n_neighs=4, **kw)  # the model's own values are accepted
    assert full.tables["table"].obs["senca"].nunique() == 3


def test_model_untrained_or_foreign_refused():
    sdata = sf.datasets.toy(n_spots=100, image=False)
    with pytest.raises(sf.InputError, match=r"trained by sf\.tl\.senca"):
        sf.tl.senca(sdata, image=False, model=sf.models.SENCA(150, None, hidden=16, latent=8, device="cpu"))
    with pytest.raises(sf.InputError, match=r"must be an sf\.models\.SENCA"):
        sf.tl.senca(sdata, image=False, model="senca_model/")
    assert "senca" not in sdata.tables["table"].obs
