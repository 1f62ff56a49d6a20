"""The shared clustering module: one entry point for Ward, k-means, Gaussian mixture, Louvain and Leiden."""

from __future__ import annotations

import numpy as np
import pytest

import stfuse as sf
from stfuse.tl._clustering import cluster, cluster_n, community, knn_graph, ward_clusters


def _four() -> np.ndarray:
    """Four overlapping blobs in 4-D: a fixed input whose labels were recorded before the merge."""
    rng = np.random.default_rng(7)
    return np.concatenate([rng.normal(c, 1.0, (15, 4)) for c in (0.0, 2.0, 4.0, 6.0)])


def _blobs(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Three well-separated blobs of 50, 40 and 30 points in 3-D, and their truth."""
    rng = np.random.default_rng(seed)
    centres = np.array([[0.0, 0.0, 0.0], [10.0, 0.0, 0.0], [0.0, 10.0, 0.0]])
    sizes = (50, 40, 30)
    X = np.concatenate([rng.normal(c, 0.5, (s, 3)) for c, s in zip(centres, sizes)])
    return X, np.repeat(np.arange(3), sizes)


def _s(labels: np.ndarray) -> str:
    return "".join(map(str, labels))


# labels of tl._clustering.ward_clusters and tl._community (cluster, cluster_n) before they were merged
BEFORE = {
    "ward_none": "111111111111111000000000100000000000000000000000000000000000",
    "ward_3": "111111111111111000000000100000000000000000000222222220222222",
    "ward_sub": "000000000000000330333333033333111111111111111222222222222222",
    "louvain_3": "111111111111111000000000100000000000000000000222222222222222",
    "louvain_res": "000000000000000333333333033333111111111111111222222222222222",
    "leiden_res": "000000000000000333333333033333111111111111111222222222222222",
}


def test_ward_and_louvain_unchanged():
    X = _four()
    labels, k, info = cluster(X, None, method="ward", k_range=(2, 6))
    assert (_s(labels), k, info["chosen_from"]) == (BEFORE["ward_none"], 2, "dendrogram")
    assert _s(cluster(X, 3, method="ward")[0]) == BEFORE["ward_3"]
    assert _s(cluster(X, 4, method="ward", max_spots=30, random_state=1)[0]) == BEFORE["ward_sub"]
    assert np.array_equal(cluster(X, 3, method="ward")[0], ward_clusters(X, 3)[0])
    labels, k, info = cluster(X, 3, method="louvain", n_neighs=8)
    assert (_s(labels), k, info["exact"], len(info["steps"])) == (BEFORE["louvain_3"], 3, True, 4)
    assert info["resolution"] == pytest.approx(0.1778279410038923, rel=0, abs=0)
    assert info["steps"] == cluster_n(knn_graph(X, 8), 3).steps
    labels, _, info = cluster(X, None, method="louvain", n_neighs=8)  # resolution 1.0 by default
    assert _s(labels) == BEFORE["louvain_res"] and info["resolution"] == 1.0 and info["chosen_from"] == "resolution"
    assert np.array_equal(labels, community(knn_graph(X, 8), 1.0))
    labels, _, _ = cluster(X, None, method="leiden", n_neighs=8, resolution=0.5, random_state=2)
    assert _s(labels) == BEFORE["leiden_res"]


@pytest.mark.parametrize("method", ["ward", "kmeans", "gmm", "louvain", "leiden"])
def test_every_method_recovers_separated_blobs(method):
    X, truth = _blobs()
    kw = {"n_neighs": 10} if method in ("louvain", "leiden") else {}
    labels, k, info = cluster(X, 3, method=method, random_state=0, **kw)
    assert k == 3 and info["method"] == method
    assert sf.metrics.ari(truth, labels) == 1.0
    assert np.array_equal(labels[[0, 50, 90]], [0, 1, 2])  # numbered by decreasing size
    again, _, _ = cluster(X, 3, method=method, random_state=0, **kw)
    assert np.array_equal(labels, again)


@pytest.mark.parametrize("method", ["ward", "kmeans", "gmm"])
def test_number_of_clusters_chosen(method):
    X, truth = _blobs(1)
    labels, k, info = cluster(X, None, method=method, k_range=(2, 6))
    assert k == 3 and sf.metrics.ari(truth, labels) == 1.0
    assert info["k_range"] == [2, 6]
    assert info["chosen_from"] == {"ward": "dendrogram", "kmeans": "silhouette", "gmm": "bic"}[method]
    scores = info.get("silhouette") or info.get("bic") or info["gaps"]
    assert sorted(scores) == ["2", "3", "4", "5", "6"]


def test_gmm_covariance():
    (a, ta), (b, tb) = _blobs(2), _blobs(3)
    X, truth = np.vstack([a, b]), np.concatenate([ta, tb])
    assert cluster(X, 3, method="gmm")[2]["covariance_type"] == "full"  # 240 rows >= 10 x 3 x 6 parameters
    assert cluster(X[:170], 3, method="gmm")[2]["covariance_type"] == "diag"
    wide = np.hstack([X, np.random.default_rng(0).normal(0, 0.1, (len(X), 17))])
    labels, _, info = cluster(wide, 3, method="gmm")
    assert info["covariance_type"] == "diag" and sf.metrics.ari(truth, labels) == 1.0
    assert cluster(X, 3, method="gmm", covariance_type="tied")[2]["covariance_type"] == "tied"
    with pytest.raises(sf.InputError, match="covariance_type"):
        cluster(X, 3, method="gmm", covariance_type="EEE")


def test_bad_input():
    X, _ = _blobs()
    with pytest.raises(sf.InputError, match=r"'ward', 'kmeans', 'gmm', 'leiden', 'louvain'.*'dbscan'"):
        cluster(X, 3, method="dbscan")
    with pytest.raises(sf.InputError, match=r"Unknown option\(s\) \['n_neighs'\]"):
        cluster(X, 3, method="ward", n_neighs=5)
    with pytest.raises(sf.InputError, match="n_clusters must be between 1"):
        cluster(X, 0, method="kmeans")
    with pytest.raises(sf.InputError, match="k_range"):
        cluster(X, None, method="kmeans", k_range=(1, 4))
    with pytest.raises(sf.InputError, match="not both"):
        cluster(X, 3, method="louvain", resolution=1.0)
    with pytest.raises(sf.InputError, match="Too few spots"):
        cluster(X[:2], None, method="gmm")
