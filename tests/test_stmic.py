from __future__ import annotations

import anndata as ad
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
import scanpy as sc
import torch
from scipy import sparse

import stfuse as sf
from stfuse.tl._clustering import cluster_n, community, knn_graph


def tiny_encoder() -> sf.im.Encoder:
    """A small random conv net: fast, deterministic, enough to tell the toy textures apart."""
    with torch.random.fork_rng():
        torch.manual_seed(0)
        net = torch.nn.Sequential(torch.nn.Conv2d(3, 16, 5, stride=2), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(2),
                                  torch.nn.Flatten())
    return sf.im.Encoder.from_module(net, name="tiny", input_px=32)


@pytest.fixture(scope="module")
def enc():
    return tiny_encoder()


@pytest.fixture(scope="module")
def toy_stmic(enc):
    """Toy section with stMIC fused, expression-only and image-only results (n_clusters=4)."""
    sdata = sf.datasets.toy(n_spots=400, seed=0)
    for mod in ("both", "expression", "image"):
        sf.tl.stmic(sdata, n_clusters=4, modality=mod, encoder=enc, key_added=mod)
    return sdata


def test_fused_beats_each_modality_on_toy(toy_stmic):
    t = toy_stmic.tables["table"]
    ari = {m: sf.metrics.ari(t.obs["region"], t.obs[m]) for m in ("both", "expression", "image")}
    assert ari["both"] > ari["expression"] + 0.1
    assert ari["both"] > ari["image"] + 0.1
    assert ari["both"] > 0.7


def test_results_written(toy_stmic, tmp_path):
    t = toy_stmic.tables["table"]
    t.write_h5ad(tmp_path / "t.h5ad")  # everything written is storable
    back = ad.read_h5ad(tmp_path / "t.h5ad")
    assert back.uns["both"]["n_clusters"] == 4 and back.obs["both"].equals(t.obs["both"])
    assert isinstance(t.obs["both"].dtype, pd.CategoricalDtype)
    assert list(t.obs["both"].cat.categories) == ["0", "1", "2", "3"]
    sizes = t.obs["both"].value_counts().reindex(["0", "1", "2", "3"]).to_numpy()
    assert (np.diff(sizes) <= 0).all()  # largest cluster first
    assert t.obsm["X_both"].shape == (400, 20)
    assert t.obsm["X_expression"].shape == (400, 10) and t.obsm["X_image"].shape == (400, 10)
    u = t.uns["both"]
    assert u["n_clusters"] == 4 and u["exact"]
    assert u["params"]["n_neighs"] == 39 and u["params"]["modality"] == "both"
    # one result schema: None is dropped, not written as -1/""; inputs name the image features and the graph
    assert "resolution" not in u["params"] and "layer" not in u["params"] and u["params"]["n_clusters"] == 4
    assert u["inputs"]["image_features"] == u["image_obsm"] and u["inputs"]["graph"]["n_neighs"] == 39
    assert "image_features" not in t.uns["expression"]["inputs"] and u["stfuse_version"] == sf.__version__
    assert u["search"].shape[1] == 2 and u["search"][-1, 1] == 4 and u["resolution"] == u["search"][-1, 0]
    assert u["encoder"]["encoder"] == "tiny" and len(u["variance_ratio_image"]) == 10
    # the image embedding is cached with its provenance; expression-only records no encoder
    assert u["image_obsm"] in t.obsm and u["image_obsm"] in t.uns["stfuse_embeddings"]
    assert "encoder" not in t.uns["expression"]


def test_deterministic_and_image_weight(enc):
    a = sf.datasets.toy(n_spots=200, seed=1)
    b = sf.datasets.toy(n_spots=200, seed=1)
    sf.tl.stmic(a, resolution=0.5, encoder=enc, n_neighs=15)
    sf.tl.stmic(b, resolution=0.5, encoder=enc, n_neighs=15)
    ta, tb = a.tables["table"], b.tables["table"]
    assert np.array_equal(ta.obsm["X_stmic"], tb.obsm["X_stmic"])
    assert ta.obs["stmic"].equals(tb.obs["stmic"])
    with pytest.warns(UserWarning, match="Replacing existing results"):
        sf.tl.stmic(a, resolution=0.5, encoder=enc, n_neighs=15, image_weight=2.0)  # reuses the cached features
    X1, X2 = tb.obsm["X_stmic"], ta.obsm["X_stmic"]
    assert np.allclose(X2[:, :10], X1[:, :10]) and np.allclose(X2[:, 10:], 2 * X1[:, 10:], atol=1e-5)
    sf.tl.stmic(a, resolution=0.5, encoder=enc, n_neighs=15, cluster_method="leiden", key_added="leiden")
    assert ta.obs["leiden"].nunique() >= 2
    with pytest.warns(FutureWarning, match="cluster_method"):
        sf.tl.stmic(a, resolution=0.5, encoder=enc, n_neighs=15, flavor="leiden", key_added="leiden_old")
    assert ta.obs["leiden_old"].equals(ta.obs["leiden"])


@pytest.mark.parametrize("method", ["kmeans", "gmm", "ward"])
def test_cluster_methods_on_the_concatenation(enc, method):
    sdata = sf.datasets.toy(n_spots=200, seed=1)
    sf.tl.stmic(sdata, n_clusters=4, encoder=enc, cluster_method=method)
    t = sdata.tables["table"]
    u = t.uns["stmic"]
    assert t.obs["stmic"].nunique() == 4 and u["params"]["cluster_method"] == method
    assert u["clustering"]["method"] == method and "resolution" not in u and "graph" not in u["inputs"]


def test_copy_and_failures_leave_object_unchanged(enc):
    sdata = sf.datasets.toy(n_spots=150, seed=2)
    t = sdata.tables["table"]
    before = (set(t.obs), set(t.obsm), set(t.uns))
    out = sf.tl.stmic(sdata, n_clusters=3, encoder=enc, n_neighs=10, copy=True)
    assert (set(t.obs), set(t.obsm), set(t.uns)) == before
    assert out.tables["table"].obs["stmic"].nunique() == 3
    bad = [
        (dict(n_clusters=3, resolution=1.0), sf.InputError, "not both"),
        (dict(n_neighs=150), sf.InputError, "n_neighs"),
        (dict(modality="rna"), sf.InputError, "modality"),
        (dict(cluster_method="walktrap"), sf.InputError, "cluster_method"),
        (dict(cluster_method="kmeans", resolution=0.5), sf.InputError, "resolution"),
        (dict(n_pcs=0), sf.InputError, "n_pcs"),
        (dict(n_pcs=70), sf.InputError, "image features"),
        (dict(layer="counts"), sf.KeyNotFoundError, "layer"),
        (dict(n_clusters=500), sf.InputError, "n_clusters"),
    ]
    for kw, err, msg in bad:
        with pytest.raises(err, match=msg):
            sf.tl.stmic(sdata, encoder=enc, **kw)
    assert (set(t.obs), set(t.obsm), set(t.uns)) == before


def test_refuses_sections_without_image():
    sdata = sf.datasets.toy(n_spots=100, image=False)
    with pytest.raises(sf.InputError, match=r"has none.*sf\.tl\.senca\(sdata, image=False\).*scanpy"):
        sf.tl.stmic(sdata, n_clusters=3)
    with pytest.raises(sf.InputError, match="needs an H&E image"):
        sf.tl.stmic(sdata, n_clusters=3, modality="image")
    assert "stmic" not in sdata.tables["table"].obs
    # the expression ablation asks for gene-only clustering explicitly
    sf.tl.stmic(sdata, n_clusters=3, modality="expression", n_neighs=10)
    assert sdata.tables["table"].obs["stmic"].nunique() == 3


@pytest.mark.her2st
@pytest.mark.parametrize("section", ["B1", "G2"])  # all seven: benchmarks/eval_stmic.py --refusals
def test_refuses_pathologist_sections(her2st_dir, section):
    sdata = sf.datasets.her2st(section, her2st_dir)
    with pytest.raises(sf.InputError, match=r"sf\.tl\.senca\(sdata, image=False\)"):
        sf.tl.stmic(sdata, n_clusters=6)
    assert "stmic" not in sdata.tables["table"].obs


def test_community_search():
    rng = np.random.default_rng(0)
    X = np.concatenate([rng.normal(c, 0.6, (40, 2)) for c in ((0, 0), (2.5, 0), (0, 2.5), (2.5, 2.5), (5, 5))])
    g = knn_graph(X, 10)  # five touching blobs, one connected graph
    assert (g != g.T).nnz == 0 and g.diagonal().sum() == 0
    assert (np.asarray(g.sum(axis=1)).ravel() >= 10).all()
    for k in (2, 3, 4, 5):
        res = cluster_n(g, k, random_state=0)
        assert res.n_clusters == k and res.exact and len(res.steps) <= 30
        assert res.steps[-1] == (res.resolution, k)
    five = cluster_n(g, 5).labels
    assert sf.metrics.ari(np.repeat(np.arange(5), 40), five) > 0.9
    assert np.array_equal(community(g, 1.0, random_state=3), community(g, 1.0, random_state=3))
    # two separate edges: 3 clusters cannot be reached -> closest kept, flagged not exact
    pairs = sparse.csr_matrix(([1.0, 1.0, 1.0, 1.0], ([0, 1, 2, 3], [1, 0, 3, 2])), shape=(4, 4))
    res = cluster_n(pairs, 3, max_steps=12)
    assert not res.exact and res.n_clusters in (2, 4) and len(res.steps) <= 12


def test_unreachable_count_warns(enc, monkeypatch):
    import stfuse.tl._clustering as clustering
    from stfuse.tl._clustering import Clustering

    def fake(graph, n, **kw):
        return Clustering(np.arange(graph.shape[0]) % 2, 0.7, 2, False, [(0.7, 2)])

    monkeypatch.setattr(clustering, "cluster_n", fake)
    sdata = sf.datasets.toy(n_spots=100, seed=3)
    with pytest.warns(UserWarning, match="no resolution gave exactly 3 clusters"):
        sf.tl.stmic(sdata, n_clusters=3, encoder=enc, n_neighs=10)
    assert sdata.tables["table"].uns["stmic"]["exact"] is False


def test_markers(toy_stmic):
    t = toy_stmic.tables["table"]
    X = t.X.copy()
    t.obs["truth_domains"] = t.obs["region"].astype(str).astype("category")
    sf.tl.stmic_markers(toy_stmic, key="truth_domains", n_genes=20)
    assert (t.X != X).nnz == 0  # the user's X is untouched
    df = sc.get.rank_genes_groups_df(t, group="A")
    assert len(df) == 20
    # region A expresses programme 0 (genes G000-G014) above the rest
    assert set(df["names"][:5]) <= {f"G{i:03d}" for i in range(15)}
    sf.tl.stmic_markers(toy_stmic, key="both", key_added="stmic_markers")
    assert set(t.uns["stmic_markers"]["names"].dtype.names) == {"0", "1", "2", "3"}
    with pytest.raises(sf.KeyNotFoundError, match=r"run sf\.tl\.stmic"):
        sf.tl.stmic_markers(toy_stmic, key="nope")
    # a cluster of one spot (Louvain can leave one) cannot be tested: the others are ranked, with a warning
    lone = t.obs["region"].astype(str).to_numpy().copy()
    lone[0] = "lone"
    t.obs["lone"] = pd.Categorical(lone)
    with pytest.warns(UserWarning, match=r"\['lone'\].*single spot"):
        sf.tl.stmic_markers(toy_stmic, key="lone", key_added="lone_markers")
    assert set(t.uns["lone_markers"]["names"].dtype.names) == {"A", "B", "C", "D"}
    with pytest.raises(sf.InputError, match="single spot"):
        sf.tl.stmic_markers(toy_stmic, key="lone", reference="lone")


def test_plot_stmic(toy_stmic, tmp_path):
    path = tmp_path / "stmic.png"
    fig = sf.pl.stmic(toy_stmic, "both", truth="region", save=path, dpi=30)
    titles = [a.get_title() for a in fig.axes if a.get_title()]
    t = toy_stmic.tables["table"]
    score = sf.metrics.ari(t.obs["region"], t.obs["both"])
    assert titles[0] == "H&E" and titles[2] == "region (truth)"
    assert titles[1].startswith("stMIC (4 clusters, res.") and titles[1].endswith(f"ARI {score:.3f}")
    assert path.stat().st_size > 1000
    fig = sf.pl.stmic(toy_stmic, "both", image=False)
    assert [a.get_title().split(" ")[0] for a in fig.axes if a.get_title()] == ["stMIC"]
    _, ax = plt.subplots()
    assert sf.pl.stmic(toy_stmic, "expression", image=False, ax=ax) is ax
    with pytest.raises(sf.KeyNotFoundError, match=r"run sf\.tl\.stmic"):
        sf.pl.stmic(toy_stmic, "nope")
    plt.close("all")
