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
