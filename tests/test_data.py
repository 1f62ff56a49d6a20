"""The data-preparation floor (stfuse.data): sections, genes, splits, neighbours, tiles, the registry."""

from __future__ import annotations

import contextlib
import json

import numpy as np
import pytest

import stfuse as sf
from stfuse._spots import get_spots
from stfuse.data import (
    Registry,
    TileStore,
    as_list,
    binary_labels,
    block_split,
    measured_expression,
    neighbour_index,
    prediction_table,
    reference_sections,
    select_genes,
    shared_variable_genes,
    stack_neighbours,
    standardise,
    stratified_split,
    tile_batches,
    training_tiles,
)
from stfuse.models import HistoSPACE, SpaCRD


@pytest.fixture(scope="module")
def toys():
    return sf.datasets.toy(n_spots=100, seed=0), sf.datasets.toy(n_spots=100, seed=1)


# --- sections ------------------------------------------------------------------------------------
def test_reference_sections_names_labels_and_checks(toys):
    a, b = toys
    assert as_list(None) == [] and as_list(a) == [a] and as_list((a, b)) == [a, b]
    refs = reference_sections([a, b], label_key="cancer", positive=True)
    assert [r.name for r in refs] == ["toy", "toy"]
    y = binary_labels(refs, "cancer", True)
    assert y.shape == (200,) and set(np.unique(y)) == {0, 1}
    with pytest.raises(sf.KeyNotFoundError, match="obs\\['tumour'\\]"):
        reference_sections([a], label_key="tumour")
    with pytest.raises(sf.InputError, match="single class"):
        binary_labels(reference_sections([a], label_key="region", positive="nothing"), "region", "nothing")
    with pytest.raises(sf.InputError, match="needs an H&E image"):
        reference_sections([sf.datasets.toy(n_spots=50, image=False)], image_for="HistoSPACE")


# --- genes ---------------------------------------------------------------------------------------
def test_gene_selection_across_sections(toys):
    a, b = (t.tables["table"] for t in toys)
    b_part = b[:, 10:].copy()
    genes = select_genes([a, b_part], n_top_genes=20)
    assert len(genes) == 20 and all(g in b_part.var_names for g in genes)
    assert select_genes([a, b_part], n_top_genes=None) == b_part.var_names.tolist()
    assert select_genes([a], ["G003", "G001"]) == ["G003", "G001"]
    with pytest.raises(sf.GeneMismatchError, match="not measured in reference 1"):
        select_genes([a, b_part], ["G001"])
    with pytest.raises(sf.InputError, match="duplicates"):
        select_genes([a], ["G001", "G001"])
    shared = shared_variable_genes([a], b_part, n_top_genes=30)
    assert len(shared) == 30 and set(shared) <= set(b_part.var_names)
    renamed = b.copy()
    renamed.var_names = [f"X{i}" for i in range(renamed.n_vars)]
    with pytest.raises(sf.GeneMismatchError, match="share no gene"):
        shared_variable_genes([a], renamed, n_top_genes=30)


def test_registry_expression_and_measured(toys):
    spots = get_spots(toys[1])
    reg = Registry("histospace", genes=["G030", "G031"], normalisation={"target_sum": 1e4, "log1p": True})
    np.testing.assert_array_equal(reg.expression(spots.table),
                                  sf.pp.prepare_expression(spots.table, genes=["G030", "G031"]).X)
    np.testing.assert_array_equal(measured_expression(spots, reg), reg.expression(spots.table))
    minmax = Registry("spacrd", genes=["G030"], normalisation={"target_sum": 1e4, "log1p": True, "scale": "minmax"})
    X = minmax.expression(spots.table)
    assert X.min() == 0 and X.max() == 1
    # nothing to compare: genes not measured, a layer that is absent
    assert measured_expression(spots, Registry("histospace", genes=["NOPE"])) is None
    assert measured_expression(spots, reg, layer="counts") is None


# --- splits --------------------------------------------------------------------------------------
def test_block_split_holds_out_whole_blocks():
    xy = np.c_[np.arange(400) % 20, np.arange(400) // 20].astype(float)
    rng = np.random.default_rng(0)
    m = block_split(xy, 1.0, 0.15, rng)
    assert 0.15 <= m.mean() <= 0.5
    blocks = {tuple(b) for b in np.floor(xy[m] / 4.0).astype(int)}
    assert all(m[(np.floor(xy / 4.0).astype(int) == b).all(axis=1)].all() for b in blocks)  # whole blocks
    # sections split in turn draw their own blocks; the same seed gives the same masks
    again = np.random.default_rng(0)
    np.testing.assert_array_equal(block_split(xy, 1.0, 0.15, again), m)
    assert not block_split(xy, 1.0, 0.0, rng).any() and not block_split(xy[:5], 1.0, 0.5, rng).any()


def test_stratified_split_and_validation_indices():
    y = np.r_[np.zeros(40, int), np.ones(20, int), -np.ones(5, int)]
    train, val = stratified_split(y, 0.25, np.random.default_rng(0))
    assert len(val) == 15 and (y[val] == 1).sum() == 5 and (y[val] >= 0).all()
    assert np.array_equal(np.sort(np.r_[train, val]), np.arange(len(y)))
    with pytest.raises(sf.InputError, match="val_fraction"):
        stratified_split(y, 1.0, np.random.default_rng(0))
    # the model trains on what the split leaves (here: one whole "section" held out)
    rng = np.random.default_rng(0)
    X = rng.random((60, 6), dtype=np.float32)
    yy = np.arange(60) % 2
    X[yy == 1, :2] += 1
    nb = stack_neighbours([neighbour_index(rng.random((30, 2)), 4), neighbour_index(rng.random((30, 2)), 4)])
    m = SpaCRD(n_genes=6, n_image=0, use_image=False, hidden=(8,), dim=8, heads=2, vae_hidden=(8,), latent=2,
               device="cpu")
    m.fit(X, None, nb, yy, epochs=2, batch_size=16, validation=np.arange(30, 60))
    assert m.info["training"]["n_val"] == 30 and m.info["training"]["n_train"] == 30
    with pytest.raises(sf.InputError, match="outside"):
        m.fit(X, None, nb, yy, epochs=1, validation=np.array([60]))


# --- neighbours ----------------------------------------------------------------------------------
def test_neighbours_stay_within_their_section():
    xy = np.c_[np.arange(10), np.zeros(10)].astype(float)
    a, b = neighbour_index(xy, 3), neighbour_index(xy[:2], 3)
    assert a.shape == (10, 3) and (b[:, 1:] == -1).all() and neighbour_index(xy[:1], 2).tolist() == [[-1, -1]]
    nb = stack_neighbours([a, b])
    assert nb.shape == (12, 3) and (nb[:10] < 10).all() and set(nb[10:].ravel()) == {-1, 10, 11}
    z = standardise(np.c_[np.arange(5.0), np.ones(5)])
    assert np.allclose(z.mean(0), 0, atol=1e-12) and np.allclose(z[:, 1], 0) and np.allclose(z[:, 0].std(), 1)


# --- tiles ---------------------------------------------------------------------------------------
def test_tile_store_in_memory_or_on_disk_and_training_tiles(toys):
    with contextlib.ExitStack() as stack:
        assert not TileStore(4, 16, 1.0, stack, "a").on_disk
        disk = TileStore(4, 16, 0.0, stack, "b")
        assert disk.on_disk and isinstance(disk.array, np.memmap) and disk.array.shape == (4, 3, 16, 16)
        spots = [get_spots(t) for t in toys]
        Ys = [np.arange(s.n_obs, dtype=np.float32)[:, None] for s in spots]
        masks = [np.arange(s.n_obs) % 5 == 0 for s in spots]
        tt = training_tiles(spots, Ys, masks, size=1.0, px=16, stain=None, ram_gb=0.0, stack=stack)
        assert tt.tiles.shape == (160, 3, 16, 16) and tt.val_tiles.shape == (40, 3, 16, 16)
        np.testing.assert_array_equal(tt.val_Y[:20, 0], np.arange(0, 100, 5))
        # the tiles of prediction are those of training, for the same spots and size
        got = np.zeros((spots[0].n_obs, 3, 16, 16), np.uint8)
        for index, tiles in tile_batches(spots[0], {"size": 1.0}, 16, batch_size=32):
            got[index] = tiles
        np.testing.assert_array_equal(tt.val_tiles[:20], got[masks[0]])
        np.testing.assert_array_equal(tt.tiles[:80], got[~masks[0]])


# --- registry --------------------------------------------------------------------------------------
def test_registry_round_trip_through_save_and_load(tmp_path):
    rng = np.random.default_rng(0)
    tiles = rng.integers(0, 255, (8, 3, 32, 32), dtype=np.uint8)
    m = HistoSPACE(["a", "b"], encoder_weights="random", tile_px=32, device="cpu")
    m.fit(tiles, rng.normal(size=(8, 2)).astype(np.float32), epochs=1)
    m.registry = Registry("histospace", genes=["a", "b"], layer="counts",
                          normalisation={"target_sum": 1e4, "log1p": True},
                          tile={"size": 1.0, "size_um": np.float64(55.0), "out_px": 32, "stain": "reinhard"},
                          references=["s1", "s2"])
    m.save(tmp_path / "m")
    config = json.loads((tmp_path / "m" / "config.json").read_text())
    assert config["registry"]["tile"]["stain"] == "reinhard" and config["format_version"] == 3
    assert "tile" not in config["info"]  # the data contract lives in the registry, not in info
    back = HistoSPACE.load(tmp_path / "m", device="cpu")
    assert back.registry == m.registry and back.registry.tile_spec["size_um"] == 55.0
    # a model saved before registries existed: its info held the contract
    config["registry"] = None
    config["info"].update(normalisation={"target_sum": 1e4, "log1p": True}, tile={"size": 2.0, "stain": None},
                          references=["old"])
    (tmp_path / "m" / "config.json").write_text(json.dumps(config))
    old = HistoSPACE.load(tmp_path / "m", device="cpu")
    assert old.registry.tile == {"size": 2.0, "stain": None} and old.registry.references == ["old"]
    assert Registry.from_info("histospace", None, {}) is None
    assert Registry("x").tile_spec == {"size": 1.0, "size_um": None, "stain": None}
    with pytest.raises(sf.InputError, match="encoder"):
        Registry("spacrd", image_encoder={"encoder": "a"}).require_encoder({"encoder": "b"}, "b")


def test_prediction_table_with_measured_layer(toys):
    spots = get_spots(toys[0])
    pred = np.zeros((spots.n_obs, 2), np.float32)
    t = prediction_table(spots, pred, ["G001", "G002"], {"genes": ["G001", "G002"]}, "p", measured=pred + 1)
    assert t.obs_names.equals(spots.table.obs_names) and t.uns["p"]["genes"] == ["G001", "G002"]
    np.testing.assert_array_equal(t.layers[sf._keys.MEASURED], pred + 1)
    assert "measured" not in prediction_table(spots, pred, ["G001", "G002"], {}, "p").layers


def test_all_training_tiles_keeps_tiles_and_targets_aligned_in_memory_and_on_disk():
    from stfuse.data import all_training_tiles

    spots = get_spots(sf.datasets.toy(n_spots=60))
    Y = [np.arange(60, dtype=float)[:, None]]  # each target names its spot
    with contextlib.ExitStack() as stack:
        ref = training_tiles([spots], Y, [np.zeros(60, bool)], size=1.0, px=16, stain=None, ram_gb=1.0, stack=stack)
        tt = training_tiles([spots], Y, [np.arange(60) % 4 == 0], size=1.0, px=16, stain=None, ram_gb=1.0,
                            stack=stack)
        for ram_gb in (1.0, 0.0):  # joined in memory / cut again into a file
            tiles, targets = all_training_tiles([spots], Y, tt, size=1.0, px=16, stain=None, ram_gb=ram_gb,
                                                stack=stack)
            assert tiles.shape == (60, 3, 16, 16) and sorted(targets[:, 0]) == list(range(60))
            np.testing.assert_array_equal(tiles, ref.tiles[targets[:, 0].astype(int)])
