from __future__ import annotations

import numpy as np
import pytest

import stfuse as sf
from stfuse._spots import get_spots
from stfuse.im._stain import MACENKO_REFERENCE, REINHARD_REFERENCE, _rgb_to_lab


def _render(stains: np.ndarray, conc: np.ndarray) -> np.ndarray:
    """uint8 (b, 3, h, w) patches from stain vectors (3 x 2) and concentrations (b, 2, h, w) (Beer–Lambert)."""
    od = np.einsum("cs,bshw->bchw", stains, conc)
    return np.clip(np.rint(255.0 * np.exp(-od)), 0, 255).astype(np.uint8)


def _tissue(seed=0, n=6, px=32):
    rng = np.random.default_rng(seed)
    conc = np.stack([rng.gamma(2.0, 0.35, (n, px, px)), rng.gamma(2.0, 0.25, (n, px, px))], axis=1)
    conc[:, :, :6, :] = 0.0  # a strip of white background in every patch
    return conc


def _unit(v):
    v = np.asarray(v, float)
    return v / np.linalg.norm(v, axis=0, keepdims=True)


SLIDE_A = _unit([[0.65, 0.07], [0.70, 0.99], [0.29, 0.11]])  # classic Ruifrok H, E
SLIDE_B = _unit([[0.45, 0.25], [0.80, 0.90], [0.40, 0.35]])  # another lab: purpler haematoxylin, pinker eosin


def test_macenko_maps_two_stainings_of_the_same_tissue_together():
    conc = _tissue()
    a, b = _render(SLIDE_A, conc), _render(SLIDE_B, 1.3 * conc)
    na, nb = sf.im.normalize_stain(a), sf.im.normalize_stain(b)
    before = np.abs(a.astype(int) - b.astype(int)).mean()
    after = np.abs(na.astype(int) - nb.astype(int)).mean()
    assert na.shape == a.shape and na.dtype == np.uint8
    assert after < before / 3
    norm = sf.im.StainNormalizer("macenko").fit(a)
    est = np.asarray(norm.source["stain_matrix"])
    assert np.abs(est - SLIDE_A).max() < 0.1  # recovers the stain vectors, haematoxylin first
    assert (na[:, :, :6, :] >= 250).all()  # background stays white


def test_reinhard_matches_reference_statistics():
    a = _render(SLIDE_B, _tissue(1))
    out = sf.im.normalize_stain(a, method="reinhard")
    px = np.moveaxis(out, 1, -1).reshape(-1, 3).astype(float)
    tissue = (np.moveaxis(a, 1, -1).reshape(-1, 3) < 219).any(axis=1)
    lab = _rgb_to_lab(px[tissue])
    assert np.allclose(lab.mean(axis=0), REINHARD_REFERENCE["mean"], atol=0.1)
    assert (out[:, :, :6, :] == a[:, :, :6, :]).all()  # background untouched


def test_target_patches_and_fitted_target():
    conc = _tissue(2)
    a, b = _render(SLIDE_A, conc), _render(SLIDE_B, conc)
    to_a = sf.im.normalize_stain(b, target=a)
    assert np.abs(to_a.astype(int) - a.astype(int)).mean() < np.abs(b.astype(int) - a.astype(int)).mean() / 3
    ref = sf.im.StainNormalizer("reinhard").fit(a)
    norm = sf.im.StainNormalizer("reinhard", target=ref).fit(b)
    assert norm.target_name.startswith("custom:") and norm.target == ref.source
    assert sf.im.StainNormalizer("macenko").target == MACENKO_REFERENCE


def test_white_and_invalid_input():
    white = np.full((3, 3, 16, 16), 255, np.uint8)
    for method in ("macenko", "reinhard"):
        assert (sf.im.normalize_stain(white, method=method) == 255).all()  # nothing to fit: unchanged
    with pytest.raises(sf.InputError, match="'macenko' or 'reinhard'"):
        sf.im.StainNormalizer("vahadane")
    with pytest.raises(sf.InputError, match="not fitted"):
        sf.im.StainNormalizer().transform(white)
    with pytest.raises(sf.InputError, match=r"\(\.\.\., 3, height, width\)"):
        sf.im.normalize_stain(np.zeros((16, 16, 3), np.uint8))
    with pytest.raises(sf.InputError, match="no stained tissue"):
        sf.im.StainNormalizer("macenko", target=white)


def test_a_fitted_normaliser_is_applied_batch_by_batch():
    """Same fit, any batching: one spot's normalised patch does not depend on its batch."""
    a = _render(SLIDE_B, _tissue(3, n=8))
    norm = sf.im.StainNormalizer("macenko").fit(a)
    whole = norm.transform(a)
    parts = np.concatenate([norm.transform(a[:3]), norm.transform(a[3:])])
    assert (whole == parts).all()
    assert (norm.transform(a[0]) == whole[0]).all()  # a single (3, h, w) patch works too


@pytest.fixture
def small_toy():
    return sf.datasets.toy(n_spots=36, seed=3)


def test_extract_patches_with_stain_is_fitted_once_per_slide(small_toy):
    big = {int(i): p for b in sf.im.extract_patches(small_toy, out_px=24, batch_size=36, stain="macenko")
           for i, p in zip(b.index, b.patches)}
    small = {int(i): p for b in sf.im.extract_patches(small_toy, out_px=24, batch_size=5, stain="macenko")
             for i, p in zip(b.index, b.patches)}
    raw = {int(i): p for b in sf.im.extract_patches(small_toy, out_px=24, batch_size=36) for i, p in zip(b.index, b.patches)}
    assert all((big[i] == small[i]).all() for i in big)
    assert any((big[i] != raw[i]).any() for i in big)
    with pytest.raises(sf.InputError, match="stain must be"):
        sf.im.extract_patches(small_toy, stain="vahadane")


def test_embed_records_stain_and_keys_the_cache_on_it(small_toy, monkeypatch):
    import torch

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())
    enc = sf.im.Encoder.from_module(net, name="tiny", input_px=16)
    sf.im.embed(small_toy, enc, stain="reinhard")
    t = small_toy.tables["table"]
    prov = t.uns["stfuse_embeddings"]["X_tiny_55um_reinhard"]
    assert prov["stain"] == "reinhard" and prov["stain_params"]["method"] == "reinhard"
    spots = get_spots(small_toy)
    assert sf.im.image_features(spots, enc, stain="reinhard").cached
    assert not sf.im.image_features(spots, enc).cached  # no stain normalisation: another embedding
    assert not sf.im.image_features(spots, enc, stain="macenko").cached
    raw = sf.im.image_features(spots, enc).X
    assert not np.allclose(raw, t.obsm["X_tiny_55um_reinhard"])
