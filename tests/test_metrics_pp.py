from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import sparse
from scipy.stats import pearsonr

import stfuse as sf


def test_ari_ignores_undetermined_and_nan():
    assert sf.metrics.ari(["a", "a", "b", "b", "undetermined", None], [0, 0, 1, 1, 0, 1]) == 1.0
    assert sf.metrics.ari(["a", "a", "b", "b"], [0, 1, 0, 1]) < 0.01
    with pytest.raises(sf.InputError, match="usable truth"):
        sf.metrics.ari(["undetermined", None], [0, 1])
    with pytest.raises(sf.InputError, match="entries"):
        sf.metrics.ari(["a"], [0, 1])


@settings(max_examples=50, deadline=None)
@given(st.lists(st.integers(0, 4), min_size=4, max_size=60), st.integers(0, 100))
def test_ari_invariant_to_relabeling(labels, seed):
    perm = np.random.default_rng(seed).permutation(5)
    pred = perm[np.asarray(labels)]
    assert sf.metrics.ari(labels, pred) == pytest.approx(1.0) or len(set(labels)) == 1


def test_classification():
    m = sf.metrics.classification([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8], pred=[0, 0, 1, 1])
    assert m == {"auc": 0.75, "ap": pytest.approx(0.8333333), "f1": 1.0}
    assert "f1" not in sf.metrics.classification([0, 1], [0.2, 0.9])
    with pytest.raises(sf.InputError, match="single class"):
        sf.metrics.classification([1, 1], [0.2, 0.9])


@settings(max_examples=50, deadline=None)
@given(st.integers(3, 50), st.integers(1, 6), st.integers(0, 10_000))
def test_pearson_per_gene_matches_scipy(n, g, seed):
    rng = np.random.default_rng(seed)
    a, b = rng.normal(size=(n, g)), rng.normal(size=(n, g))
    r = sf.metrics.pearson_per_gene(a, sparse.csr_matrix(b))
    for j in range(g):
        assert r[j] == pytest.approx(pearsonr(a[:, j], b[:, j])[0], abs=1e-9)


def test_pearson_constant_gene_is_nan():
    r = sf.metrics.pearson_per_gene(np.array([[1.0, 2], [1, 3], [1, 5]]), np.array([[0.0, 1], [1, 2], [2, 2]]))
    assert np.isnan(r[0]) and np.isfinite(r[1])


def test_prepare_expression(toy):
    t = toy.tables["table"]
    before = t.X.copy()
    e = sf.pp.prepare_expression(t, n_top_genes=40, min_counts=10)
    assert e.X.shape == (400, 40) and e.X.dtype == np.float32 and len(e.genes) == 40
    assert (t.X != before).nnz == 0  # untouched
    e2 = sf.pp.prepare_expression(t, genes=e.genes)
    assert np.allclose(e.X, e2.X)
    with pytest.raises(sf.GeneMismatchError, match="absent"):
        sf.pp.prepare_expression(t, genes=["nope", *e.genes])
    s = sf.pp.prepare_expression(t, scale=True)
    assert np.allclose(s.X.mean(0), 0, atol=1e-4)


@pytest.mark.parametrize("bad,match", [(np.nan, "NaN"), (-1.0, "negative")])
def test_check_counts_refuses(toy, bad, match):
    t = toy.tables["table"].copy()
    X = t.X.toarray()
    X[0, 0] = bad
    t.X = sparse.csr_matrix(X)
    with pytest.raises(sf.InputError, match=match):
        sf.pp.check_counts(t)


def test_check_counts_empty_spots(toy):
    t = toy.tables["table"].copy()
    X = t.X.toarray()
    X[5] = 0
    t.X = sparse.csr_matrix(X)
    with pytest.raises(sf.InputError, match="no counts at all"):
        sf.pp.check_counts(t)


def test_prepare_expression_minmax_per_section():
    t = sf.datasets.toy(n_spots=100, seed=0).tables["table"]
    e = sf.pp.prepare_expression(t, scale="minmax")
    varying = e.X.max(axis=0) > e.X.min(axis=0)
    assert np.allclose(e.X.min(axis=0), 0) and np.allclose(e.X.max(axis=0)[varying], 1)
    ref = sf.pp.prepare_expression(t)
    lo, hi = ref.X.min(axis=0), ref.X.max(axis=0)
    np.testing.assert_allclose(e.X[:, varying], ((ref.X - lo) / (hi - lo))[:, varying], rtol=1e-5, atol=1e-6)
    with pytest.raises(sf.InputError, match="scale"):
        sf.pp.prepare_expression(t, scale="robust")


def test_shared_hvg_over_several_tables():
    a = sf.datasets.toy(n_spots=120, seed=0).tables["table"]
    b = sf.datasets.toy(n_spots=120, seed=1).tables["table"][:, 10:].copy()
    genes = sf.pp.shared_hvg(a, b, n_top_genes=30)
    assert len(genes) == 30 and set(genes) <= set(b.var_names)
    assert genes == [g for g in b.var_names if g in set(genes)]  # in the order of the candidates
    # the toy marker programmes (G000-G044) vary most
    assert sum(int(g[1:]) < 45 for g in genes) >= 25
    assert sf.pp.shared_hvg(a, b, n_top_genes=10_000) == sf.pp.common_genes(a, b)
    with pytest.raises(sf.GeneMismatchError, match="share no gene"):
        sf.pp.shared_hvg(a, b, genes=[])
