from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from sklearn.neighbors import NearestNeighbors

import stfuse as sf
from stfuse import _keys as K


def _sk(xy, k):
    d, i = NearestNeighbors(n_neighbors=k).fit(xy).kneighbors()
    return i, d


@pytest.mark.parametrize("n,k", [(50, 1), (1000, 6), (5000, 15)])
def test_knn_matches_sklearn(n, k):
    xy = np.random.default_rng(n).uniform(0, 1000, (n, 2))
    i, d = sf.gr.knn(xy, k)
    i2, d2 = _sk(xy, k)
    assert np.allclose(d, d2)
    assert np.array_equal(np.sort(i, axis=1), np.sort(i2, axis=1))


def test_knn_clustered_points():
    rng = np.random.default_rng(0)
    xy = np.concatenate([rng.normal(0, 1, (2000, 2)), rng.normal(1e4, 1, (10, 2)), [[5e3, -3e3]]])
    _i, d = sf.gr.knn(xy, 8)
    _i2, d2 = _sk(xy, 8)
    assert np.allclose(d, d2)


finite = st.floats(-1e4, 1e4, allow_nan=False, width=64)


@settings(max_examples=60, deadline=None)
@given(arrays(np.float64, st.tuples(st.integers(2, 60), st.just(2)), elements=finite), st.integers(1, 6))
def test_knn_property_agrees_with_sklearn(xy, k):
    k = min(k, len(xy) - 1)
    i, d = sf.gr.knn(xy, k)
    _, d2 = _sk(xy, k)
    assert np.allclose(d, d2, atol=1e-9)
    assert (i != np.arange(len(xy))[:, None]).all()  # never itself
    assert (np.diff(d, axis=1) >= 0).all()


@settings(max_examples=40, deadline=None)
@given(arrays(np.float64, st.tuples(st.integers(2, 80), st.just(2)), elements=finite),
       st.floats(1.0, 5e3))
def test_radius_property(xy, r):
    dst = sf.gr.radius_neighbors(xy, r)
    full = np.sqrt(((xy[:, None] - xy[None]) ** 2).sum(-1))
    want = (full <= r) & ~np.eye(len(xy), dtype=bool)
    got = dst.toarray() > 0
    # exact zero distances (duplicate points) are stored explicitly
    got |= np.zeros_like(got)
    coo = dst.tocoo()
    mask = np.zeros_like(want)
    mask[coo.row, coo.col] = True
    assert np.array_equal(mask, want)
    assert np.allclose(coo.data, full[coo.row, coo.col])


@settings(max_examples=30, deadline=None)
@given(st.integers(10, 200), st.integers(1, 8), st.integers(0, 1000))
def test_symmetric_graph_property(n, k, seed):
    from stfuse.gr._graph import _to_csr

    xy = np.random.default_rng(seed).uniform(0, 100, (n, 2))
    k = min(k, n - 1)
    i, d = sf.gr.knn(xy, k)
    conn, _ = _to_csr(i, d, n)
    assert (np.diff(conn.indptr) == k).all()  # k per node
    sym = conn.maximum(conn.T)
    assert (sym != sym.T).nnz == 0
    assert (np.asarray(sym.sum(axis=1)).ravel() >= k).all()


def test_spatial_graph_writes_squidpy_keys_and_nhood_enrichment_works(toy):
    import squidpy as sq

    assert sf.gr.spatial_graph(toy, coord_type="generic", n_neighs=6) is None  # like squidpy with copy=False
    t = toy.tables["table"]
    assert K.connectivities() in t.obsp and K.distances() in t.obsp
    assert t.uns["spatial_neighbors"]["connectivities_key"] == "spatial_connectivities"
    g = sf.gr.spatial_graph(toy, coord_type="generic", n_neighs=6, copy=True)
    assert g.indices.shape == (400, 6)
    assert (g.connectivities != t.obsp["spatial_connectivities"]).nnz == 0
    # same as squidpy's generic kNN (on a lattice, ties at equal distance may be broken differently)
    a = t.copy()
    sq.gr.spatial_neighbors_knn(a, n_neighs=6, key_added="sq")
    d_sq, d_sf = a.obsp["sq_distances"], t.obsp["spatial_distances"]
    for i in range(0, 400, 7):
        assert np.allclose(np.sort(d_sq[i].data), np.sort(d_sf[i].data))
    same = np.asarray((a.obsp["sq_connectivities"] != t.obsp["spatial_connectivities"]).sum(axis=1)).ravel() == 0
    assert same.mean() > 0.8
    assert t.uns["spatial_neighbors"]["params"] | a.uns["sq_neighbors"]["params"] == t.uns["spatial_neighbors"]["params"]
    sq.gr.nhood_enrichment(t, cluster_key="region", show_progress_bar=False)
    assert t.uns["region_nhood_enrichment"]["zscore"].shape == (4, 4)


def test_grid_default_on_lattices(toy):
    g = sf.gr.spatial_graph(toy, copy=True)
    assert g.indices.shape[1] == 6  # hex lattice
    n_nb = (g.indices >= 0).sum(axis=1)
    assert np.median(n_nb) == 6 and n_nb.min() >= 2
    assert "spatial_connectivities" not in toy.tables["table"].obsp  # copy=True writes nothing
    sq = sf.gr.spatial_graph(sf.datasets.toy(n_spots=100, lattice="square"), copy=True)
    assert sq.indices.shape[1] == 4


def _visium_lattice(n_rows: int = 24, n_cols: int = 32) -> np.ndarray:
    """Spot centres as Space Ranger writes them: a hex lattice, slightly rotated, rounded to whole pixels."""
    r, c = np.meshgrid(np.arange(n_rows), np.arange(n_cols), indexing="ij")
    keep = (r + c) % 2 == 0  # Visium's array_row/array_col checkerboard
    x = c[keep] * 0.5 * 137.7
    y = r[keep] * np.sqrt(3) / 2 * 137.7
    a = np.deg2rad(0.7)
    xy = np.column_stack([x * np.cos(a) - y * np.sin(a), x * np.sin(a) + y * np.cos(a)]) + 1000.0
    return np.round(xy)


def _squidpy_grid(xy, **kw):
    import anndata as ad
    import squidpy as sq

    a = ad.AnnData(obsm={"spatial": xy})
    sq.gr.spatial_neighbors(a, coord_type="grid", **kw)
    return a.obsp["spatial_connectivities"], a.obsp["spatial_distances"], a.uns["spatial_neighbors"]["params"]


def _assert_same_graph(ours, theirs):
    conn, dst, params = theirs
    t = ours.tables["table"] if hasattr(ours, "tables") else ours
    assert (t.obsp["spatial_connectivities"] != conn).nnz == 0
    assert (t.obsp["spatial_distances"] != dst).nnz == 0  # ring index, as squidpy stores it in grid mode
    assert t.obsp["spatial_distances"].dtype == dst.dtype
    mine = t.uns["spatial_neighbors"]["params"]
    assert {k: mine[k] for k in params} == params  # squidpy's keys, squidpy's values


@pytest.mark.parametrize("kw", [{}, {"n_rings": 2}, {"n_rings": 3, "transform": "spectral"}, {"transform": "cosine"}])
def test_grid_matches_squidpy_on_visium_lattice(kw):
    import warnings

    import anndata as ad

    xy = _visium_lattice()
    adata = ad.AnnData(obsm={"spatial": xy})
    sf.gr.spatial_graph(adata, coord_type="grid", **kw)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        _assert_same_graph(adata, _squidpy_grid(xy, n_neighs=6, **kw))
    assert adata.uns["spatial_neighbors"]["params"]["lattice"] == "hex"


def test_library_key_builds_one_graph_per_library_like_squidpy():
    import warnings

    import anndata as ad
    import pandas as pd
    import squidpy as sq

    one = _visium_lattice(16, 20)
    two = _visium_lattice(12, 24) + 50.0  # overlapping coordinates: only the library keeps them apart
    xy = np.concatenate([one, two])
    lib = np.array(["a"] * len(one) + ["b"] * len(two))
    perm = np.random.default_rng(0).permutation(len(xy))  # libraries interleaved in the table
    obs = pd.DataFrame({"library_id": pd.Categorical(lib[perm])}, index=[f"s{i}" for i in range(len(xy))])
    adata = ad.AnnData(obs=obs, obsm={"spatial": xy[perm]})
    ref = adata.copy()
    sf.gr.spatial_graph(adata, library_key="library_id", n_rings=2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        sq.gr.spatial_neighbors(ref, coord_type="grid", n_neighs=6, n_rings=2, library_key="library_id")
    _assert_same_graph(adata, (ref.obsp["spatial_connectivities"], ref.obsp["spatial_distances"],
                               ref.uns["spatial_neighbors"]["params"]))
    c = adata.obsp["spatial_connectivities"].tocoo()
    assert (lib[perm][c.row] == lib[perm][c.col]).all()
    with pytest.raises(sf.InputError, match="No column 'batch'"):
        sf.gr.spatial_graph(adata, library_key="batch")


@pytest.mark.her2st
def test_grid_on_her2st(c2):
    import warnings

    from spatialdata import SpatialData

    from stfuse._spots import get_spots

    c2 = SpatialData(shapes=dict(c2.shapes), images=dict(c2.images), tables={"table": c2.tables["table"].copy()})
    g = sf.gr.spatial_graph(c2, copy=True)
    assert g.indices.shape[1] == 4
    assert np.median((g.indices >= 0).sum(axis=1)) == 4
    assert g.connectivities.nnz == 683  # squidpy's count (stfuse once dropped 11 long edges)
    sf.gr.spatial_graph(c2, n_rings=2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        # squidpy's grid mode with 4 neighbours on the ST lattice: 683 edges, every one of them
        _assert_same_graph(c2, _squidpy_grid(get_spots(c2).centers, n_neighs=4, n_rings=2))



def test_radius_mode_and_symmetrize(toy):
    g = sf.gr.spatial_graph(toy, radius=60.0, symmetrize=True, copy=True)
    sf.gr.spatial_graph(toy, radius=60.0, symmetrize=True)
    t = toy.tables["table"]
    c = t.obsp["spatial_connectivities"]
    assert (c != c.T).nnz == 0
    assert (g.distances.data <= 60.0).all()
    assert t.uns["spatial_neighbors"]["params"]["radius"] == 60.0
    assert t.uns["spatial_neighbors"]["params"]["coord_type"] == "generic"


def test_bad_input(toy):
    with pytest.raises(sf.InputError, match="needs more spots"):
        sf.gr.spatial_graph(sf.datasets.toy(n_spots=16), n_neighs=20, coord_type="generic")
    with pytest.raises(sf.InputError, match=r"\(n, 2\)"):
        sf.gr.knn(np.zeros((5, 3)), 2)
    with pytest.raises(sf.InputError, match="NaN"):
        sf.gr.knn(np.array([[0.0, np.nan], [1, 1]]), 1)
    with pytest.raises(sf.InputError, match="'grid'"):
        sf.gr.spatial_graph(toy, coord_type="hexagon")
    assert "spatial_connectivities" not in toy.tables["table"].obsp


def test_detect_lattice():
    xx, yy = np.meshgrid(np.arange(20.0), np.arange(20.0))
    assert sf.gr.detect_lattice(np.column_stack([xx.ravel(), yy.ravel()]))[0] == "square"
    rnd = np.random.default_rng(0).uniform(0, 100, (500, 2))
    assert sf.gr.detect_lattice(rnd)[0] is None


def test_spacing():
    xx, yy = np.meshgrid(np.arange(12.0), np.arange(9.0))
    xy = np.column_stack([xx.ravel(), yy.ravel()]) * 3.0
    assert sf.gr.spacing(xy) == 3.0
    nb, _ = sf.gr.knn(xy, 4)
    assert sf.gr.spacing(xy, nb) == 3.0  # first column of given neighbours: no search
    assert sf.gr.spacing(np.vstack([xy, xy[:5]])) == 3.0  # duplicated centres are left out
    assert np.isnan(sf.gr.spacing(np.zeros((1, 2))))
    assert sf.gr.spacing(np.zeros((3, 2)), default=7.0) == 7.0
    assert sf.gr.spacing(xy, np.full((len(xy), 2), -1), default=1.0) == 1.0
    assert sf.gr.detect_lattice(xy) == ("square", 3.0)


def test_grid_cells():
    xy = np.random.default_rng(0).uniform(0, 10, (300, 2))
    ids = sf.gr.grid_cells(xy, 2.5)
    cell = np.floor((xy - xy.min(0)) / 2.5)
    assert ids.dtype == np.int64 and set(ids.tolist()) == set(range(ids.max() + 1))
    for c in range(ids.max() + 1):  # one id per cell, numbered row by row
        assert len(np.unique(cell[ids == c], axis=0)) == 1
    key = cell[:, 1] * 1e6 + cell[:, 0]
    assert np.array_equal(np.argsort(np.unique(key)), np.unique(ids))
    with pytest.raises(sf.InputError, match="side"):
        sf.gr.grid_cells(xy, 0.0)


def test_hop_tokens_and_grow_mask():
    xy = np.c_[np.arange(50) % 10, np.arange(50) // 10].astype(float)
    nb, _ = sf.gr.knn(xy, 4)
    A = sf.gr.adjacency(nb)
    for hops in (0, 1, 2):
        tok = sf.gr.hop_tokens(nb, hops)
        assert (tok[:, 0] == np.arange(50)).all()
        start = np.zeros(50, bool)
        start[17] = True
        reach = sf.gr.grow_mask(start, nb, hops)
        assert set(tok[17][tok[17] >= 0].tolist()) == set(np.flatnonzero(reach).tolist())
        assert not start[:17].any()  # the input mask is not modified
    one = sf.gr.hop_tokens(nb, 1)
    assert all(set(r[r >= 0]) == {i, *nb[i]} for i, r in enumerate(one))
    assert (A != A.T).nnz == 0 and A.dtype == np.int8
    assert set(A[0].indices) == set(nb[0]) | set(np.flatnonzero(nb == 0) // 4)


def test_bfs_order():
    import torch

    xy = np.c_[np.arange(200) % 10, np.arange(200) // 10].astype(float)
    xy[100:] += 100  # two components
    nb, _ = sf.gr.knn(xy, 4)
    g = sf.gr.adjacency(nb)
    plain = sf.gr.bfs_order(g)
    assert plain[0] == 0 and np.array_equal(np.sort(plain), np.arange(200))
    assert set(plain[:100]) == set(range(100))  # one component after the other
    a = sf.gr.bfs_order(g, torch.Generator().manual_seed(1))
    b = sf.gr.bfs_order(g, torch.Generator().manual_seed(1))
    assert np.array_equal(a, b) and np.array_equal(np.sort(a), np.arange(200))


def test_no_import_circle():
    """The Spots view imports the gr kernels, which import nothing of it: each imports alone."""
    import os
    import re
    import subprocess
    import sys

    pkg = Path(sf.__file__).parent
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(pkg.parent), os.environ.get("PYTHONPATH", "")])}
    for mod in ("stfuse._spots", "stfuse.gr._kernels", "stfuse"):
        subprocess.run([sys.executable, "-c", f"import {mod}"], check=True, env=env)
    for name in ("_kernels.py", "_neighbours.py"):
        imports = re.findall(r"^\s*(?:from|import) (\S+)", (pkg / "gr" / name).read_text(), re.M)
        assert not [m for m in imports if "_spots" in m or "_graph" in m], name


def test_neighbours_from_graph_round_trip():
    from scipy import sparse

    rng = np.random.default_rng(0)
    xy = rng.uniform(0, 10, (60, 2))
    nbr, _ = sf.gr.knn(xy, 5)
    A = sf.gr.adjacency(nbr)
    back = sf.gr.neighbours_from_graph(A)
    assert back.shape[0] == 60 and back.shape[1] >= 5
    for i in range(60):  # the symmetric graph: each row holds i's own neighbours and those listing i
        assert set(back[i][back[i] >= 0]) == set(A[i].indices)
    # the diagonal is ignored; isolated nodes get an all -1 row
    assert sf.gr.neighbours_from_graph(sparse.identity(3, format="csr")).tolist() == [[-1], [-1], [-1]]
