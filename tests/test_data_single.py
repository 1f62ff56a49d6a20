"""Single-section data preparation (``stfuse.data``) and the shared argument checks (``stfuse._check``)."""

from __future__ import annotations

import numpy as np
import pytest

import stfuse as sf
from stfuse import _check
from stfuse._spots import get_spots
from stfuse.data import image_block, pca, prepare_pcs, prepare_section, standardise


def test_checks_accept_and_refuse():
    t = sf.datasets.toy(n_spots=30, image=False).tables["table"]
    assert _check.key_added("x") == "x" and _check.positive_int("epochs", 3.0) == 3
    assert _check.positive("lr", 1e-3) == 1e-3 and _check.positive("w", 0, zero=True) == 0.0
    assert _check.n_neighs(4, 30) == 4 and _check.n_clusters(None, 30) is None and _check.n_clusters(1, 30, minimum=1) == 1
    assert _check.choice("lattice", "hex", ("square", "hex")) == "hex" and _check.in_range("f", 1.0, 0.0, 1.0) == 1.0
    assert _check.obsm_key(t, "spatial", fix="") == "spatial" and _check.layer(t, None) is None
    bad = [
        (lambda: _check.key_added(""), sf.InputError, "key_added must be a non-empty string"),
        (lambda: _check.positive_int("epochs", 0), sf.InputError, "epochs must be an integer of at least 1"),
        (lambda: _check.positive_int("n_pcs", 2.5), sf.InputError, "n_pcs"),
        (lambda: _check.positive("lr", float("nan")), sf.InputError, "lr must be positive"),
        (lambda: _check.positive("w", -1, zero=True), sf.InputError, "w must be >= 0"),
        (lambda: _check.n_neighs(30, 30), sf.InputError, r"n_neighs must be between 1 and .* \(29\)"),
        (lambda: _check.n_clusters(1, 30), sf.InputError, r"n_clusters must be between 2 and .* \(30\)"),
        (lambda: _check.choice("modality", "rna", ("both", "expression", "image")), sf.InputError,
         "modality must be 'both', 'expression' or 'image', got 'rna'"),
        (lambda: _check.in_range("min_tissue", 2, 0.0, 1.0), sf.InputError, r"min_tissue must be in \[0.0, 1.0\]"),
        (lambda: _check.obsm_key(t, "X_no", fix="Embed first."), sf.KeyNotFoundError, r"No obsm\['X_no'\].*Embed first"),
        (lambda: _check.layer(t, "counts"), sf.KeyNotFoundError, "No layer 'counts'"),
        (lambda: _check.known_kwargs({"latnet": 1}, "sf.tl.senca", model=["latent"]), sf.InputError,
         r"Unknown argument\(s\) \['latnet'\] for sf.tl.senca; model parameters \['latent'\]"),
    ]
    for call, err, msg in bad:
        with pytest.raises(err, match=msg):
            call()


def test_pca_and_standardise():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(40, 6)) @ np.diag([5.0, 3, 1, 1, 1, 1])
    Z, ratio = pca(X, 3)
    assert Z.shape == (40, 3) and np.all(np.diff(ratio) <= 0) and 0 < ratio.sum() <= 1
    assert (Z[np.argmax(np.abs(Z), axis=0), np.arange(3)] > 0).all()  # sign fixed: largest score positive
    wide, _ = pca(rng.normal(size=(10, 50)), 4)  # through the Gram matrix
    assert wide.shape == (10, 4)
    S = standardise(np.column_stack([rng.normal(size=20), np.ones(20)]))
    assert np.allclose(S[:, 0].std(), 1) and np.allclose(S[:, 1], 0)


def test_prepare_section_and_pcs():
    sdata = sf.datasets.toy(n_spots=80, image=False, seed=2)
    spots = get_spots(sdata)
    sec = prepare_section(spots, n_neighs=4, image=False, n_top_genes=20)
    assert sec.X.shape == (80, 20) and len(sec.genes) == 20 and sec.nbr.shape == (80, 4) and sec.F is None
    assert sec.inputs == {"image_features": None, "graph": {"kind": "knn", "n_neighs": 4, "on": "spot centres"}}
    assert sec.new_embeddings == []
    t = sdata.tables["table"]
    t.obsm["X_given"] = np.random.default_rng(0).normal(size=(80, 3)).astype(np.float32)
    sec = prepare_section(spots, n_neighs=4, image_rep="X_given", n_top_genes=20)
    assert np.array_equal(sec.F, t.obsm["X_given"]) and sec.inputs["image_features"] == "X_given"
    t.obsm["X_bad"] = np.full((80, 3), np.nan)
    with pytest.raises(sf.InputError, match="finite"):
        image_block(spots, image_rep="X_bad")
    pcs = prepare_pcs(spots, n_pcs=5, modality="expression")
    assert pcs.Z.shape == (80, 5) and list(pcs.variance_ratio) == ["expression"] and pcs.features is None
    with pytest.raises(sf.InputError, match="n_pcs=500"):
        prepare_pcs(spots, n_pcs=500, modality="expression")


def test_prepare_section_with_genes_repeats_the_training_preparation():
    sdata = sf.datasets.toy(n_spots=100, image=False)
    t = sdata.tables["table"]
    t.X = t.X.copy()
    t.X[:, 5] = 0  # a gene below min_counts: dropped before the library size of the HVG run
    t.X[0, 5] = 1
    spots = get_spots(sdata)
    first = prepare_section(spots, n_neighs=4, image=False, n_top_genes=40)
    assert "G005" not in first.genes
    again = prepare_section(spots, n_neighs=4, image=False, genes=first.genes[::-1])
    assert again.genes == first.genes[::-1] and np.array_equal(again.X, first.X[:, ::-1])
    # a model gene below min_counts on a new section is kept (and counts towards the library size)
    low = prepare_section(spots, n_neighs=4, image=False, genes=["G005", *first.genes[:3]])
    assert low.genes[0] == "G005" and low.X.shape == (100, 4) and low.X[0, 0] > 0
    with pytest.raises(sf.GeneMismatchError, match="absent"):
        prepare_section(spots, n_neighs=4, image=False, genes=["nope"])
