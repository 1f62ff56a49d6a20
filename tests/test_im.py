from __future__ import annotations

import numpy as np
import pytest
import torch

import stfuse as sf
from stfuse._spots import get_spots


def _marker_sdata(n_img=600, chunks=128):
    """A white image with a red square under one spot, blue elsewhere on the spots."""
    import dask.array as da
    import pandas as pd

    from stfuse.io._st import build_spatialdata

    img = np.full((3, n_img, n_img), 255, np.uint8)
    xy = np.array([[100.0, 100.0], [300.0, 250.0], [5.0, 590.0], [590.0, 5.0]])
    img[:, 245:255, 295:305] = np.array([200, 0, 0], np.uint8)[:, None, None]
    counts = pd.DataFrame(np.ones((4, 3)), index=list("abcd"), columns=["g1", "g2", "g3"])
    obs = pd.DataFrame(index=list("abcd"))
    return build_spatialdata(counts, obs, xy, section="m", spot_diameter_px=20.0, spot_diameter_um=55.0,
                             image=da.from_array(img, chunks=(3, chunks, chunks)))


def test_patch_centred_on_marker():
    sdata = _marker_sdata()
    batches = list(sf.im.extract_patches(sdata, size_px=20, batch_size=3))
    assert sum(len(b.index) for b in batches) == 4
    patches = {int(i): p for b in batches for i, p in zip(b.index, b.patches)}
    p = patches[1]
    assert p.shape == (3, 20, 20)
    red = (p[0] == 200) & (p[1] == 0)
    ys, xs = np.nonzero(red)
    assert red.sum() == 100 and ys.mean() == pytest.approx(9.5) and xs.mean() == pytest.approx(9.5)


def test_border_padding_and_inside_fraction():
    sdata = _marker_sdata()
    batches = list(sf.im.extract_patches(sdata, size_px=40, batch_size=8))
    inside = dict(zip(np.concatenate([b.index for b in batches]), np.concatenate([b.inside for b in batches])))
    assert inside[0] == 1.0
    assert inside[2] == pytest.approx((25 / 40) * (30 / 40))  # centre (5, 590) in a 600 px image
    patches = np.concatenate([b.patches for b in batches])
    assert (patches == 255).sum() > 0


def test_resize_and_level_choice(toy):
    spots = get_spots(toy)
    assert len(spots.levels) >= 2
    side = 4 * spots.diameter
    assert spots.level_for_patch(side, 32) >= 1  # a 96 px patch at 32 px output: a coarser level will do
    b = next(sf.im.extract_patches(toy, size=4, out_px=32, batch_size=10))
    assert b.patches.shape == (10, 3, 32, 32) and b.patches.dtype == np.uint8


def test_lazy_reading_never_materialises_whole_image():
    import dask.array as da
    import pandas as pd

    from stfuse.io._st import build_spatialdata

    n = 4096

    computed = []

    def block(b, block_info=None):
        computed.append(block_info[0]["chunk-location"])
        return np.full(b.shape, 128, np.uint8)

    img = da.zeros((3, n, n), np.uint8, chunks=(3, 512, 512)).map_blocks(block, dtype=np.uint8)
    xy = np.array([[1000.0, 1000.0], [3000.0, 200.0]])
    sdata = build_spatialdata(pd.DataFrame(np.ones((2, 2)), index=["a", "b"], columns=["g", "h"]),
                              pd.DataFrame(index=["a", "b"]), xy, section="big", spot_diameter_px=50.0,
                              spot_diameter_um=55.0, image=img)
    computed.clear()
    out = list(sf.im.extract_patches(sdata, size=1, level=0))
    assert out[0].patches.shape[-1] == 50 and (out[0].patches == 128).all()
    assert len(computed) == 5  # only the chunks under the two spots (one patch straddles 4), out of 64


def test_patch_size_options(toy):
    spots = get_spots(toy)
    from stfuse.im._patches import patch_side_px

    assert patch_side_px(spots) == pytest.approx(24.0)
    assert patch_side_px(spots, size_um=110) == pytest.approx(48.0)
    assert patch_side_px(spots, size_px=10) == 10
    with pytest.raises(sf.InputError, match="once"):
        patch_side_px(spots, size=1, size_px=3)


def _tiny():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())
    return sf.im.Encoder.from_module(net, name="tiny", input_px=16)


def test_embed_writes_and_caches(toy, monkeypatch):
    sf.im.embed(toy, _tiny())
    t = toy.tables["table"]
    assert t.obsm["X_tiny"].shape == (400, 4)
    prov = t.uns["stfuse_embeddings"]["X_tiny"]
    assert prov["encoder"] == "tiny" and prov["patch_side_px"] == 24.0 and prov["checksum"]
    from stfuse.im import _embed

    monkeypatch.setattr(_embed, "iter_patches", lambda *a, **k: (_ for _ in ()).throw(AssertionError("recomputed")))
    feats = _embed.image_features(get_spots(toy), _tiny())
    assert feats.cached
    with pytest.raises(AssertionError, match="recomputed"):  # another patch size: no cache hit
        _embed.image_features(get_spots(toy), _tiny(), size=2)


def test_embed_copy_leaves_original(toy):
    out = sf.im.embed(toy, _tiny(), copy=True)
    assert "X_tiny" in out.tables["table"].obsm and "X_tiny" not in toy.tables["table"].obsm


def test_encoder_with_wrong_output_shape(toy):
    class Bad(torch.nn.Module):
        def forward(self, x):
            return x.mean(dim=1)  # (b, h, w): not (b, d)

    with pytest.raises(sf.InputError, match=r"must return \(batch, features\)"):
        sf.im.embed(toy, Bad())
    assert "X_Bad" not in toy.tables["table"].obsm


def test_resnet50_offline_without_weights(tmp_path, monkeypatch):
    sf.settings.cachedir = tmp_path
    try:
        def offline(*a, **k):
            import urllib.error

            raise urllib.error.URLError("network is unreachable")

        monkeypatch.setattr(torch.hub, "load_state_dict_from_url", offline)
        with pytest.raises(sf.WeightsUnavailableError, match=r"weights=path.*connect to\s+the internet"):
            sf.im.get_encoder("resnet50")
    finally:
        sf.settings.cachedir = None


def test_resnet50_keys_match_torchvision_layout(tmp_path):
    net = sf.im.ResNet50()
    keys = list(net.state_dict())
    assert keys[0] == "conv1.weight" and "layer4.2.bn3.running_var" in keys and keys[-1] == "fc.bias"
    assert "layer1.0.downsample.0.weight" in keys
    torch.save(net.state_dict(), tmp_path / "r50.pth")
    enc = sf.im.get_encoder("resnet50", weights=tmp_path / "r50.pth")
    assert enc.output_dim == 2048 and enc.input_px == 224


def test_unknown_encoder():
    with pytest.raises(sf.InputError, match="Unknown encoder"):
        sf.im.get_encoder("vgg")


def test_no_image_refused():
    sdata = sf.datasets.toy(n_spots=50, image=False)
    with pytest.raises(sf.InputError, match="needs an H&E image"):
        sf.im.embed(sdata, _tiny())


def test_histospace_shipped_weights(toy):
    from stfuse.im._encoders import HISTOSPACE_WEIGHTS

    assert HISTOSPACE_WEIGHTS.is_file() and HISTOSPACE_WEIGHTS.stat().st_size < 5e6
    enc = sf.im.get_encoder("histospace")
    assert enc.input_px == 128 and enc.output_dim == 256 and len(enc.checksum) == 16
    feats = sf.im.image_features(get_spots(toy), "histospace", batch_size=128)
    assert feats.X.shape == (400, 256) and np.isfinite(feats.X).all() and feats.X.std(axis=0).max() > 0
