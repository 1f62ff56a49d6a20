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
    from stfuse.im import patch_side_px

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
    assert t.obsm["X_tiny_55um"].shape == (400, 4)  # the toy's spots are 55 µm (24 px) across
    prov = t.uns["stfuse_embeddings"]["X_tiny_55um"]
    assert prov["encoder"] == "tiny" and prov["patch_side_px"] == 24.0 and prov["patch_side_um"] == 55.0
    assert prov["checksum"]
    from stfuse.im import _embed

    monkeypatch.setattr(_embed, "iter_patches", lambda *a, **k: (_ for _ in ()).throw(AssertionError("recomputed")))
    feats = _embed.image_features(get_spots(toy), _tiny())
    assert feats.cached
    with pytest.raises(AssertionError, match="recomputed"):  # another patch size: no cache hit
        _embed.image_features(get_spots(toy), _tiny(), size=2)


def test_embeddings_of_other_patch_sizes_never_overwrite_each_other(toy):
    sf.im.embed(toy, _tiny())
    sf.im.embed(toy, _tiny(), size=2)
    t = toy.tables["table"]
    assert {"X_tiny_55um", "X_tiny_110um"} <= set(t.obsm) and {"X_tiny_55um", "X_tiny_110um"} <= set(
        t.uns["stfuse_embeddings"])
    assert t.uns["stfuse_embeddings"]["X_tiny_110um"]["patch_side_px"] == 48.0
    first = t.obsm["X_tiny_55um"].copy()
    sf.im.embed(toy, _tiny(), size=1)  # cached: nothing recomputed or replaced
    np.testing.assert_array_equal(t.obsm["X_tiny_55um"], first)
    with pytest.warns(UserWarning, match="made otherwise"):  # an explicit key reused for another patch: said aloud
        sf.im.embed(toy, _tiny(), size=2, key_added="tiny_55um")
    assert t.uns["stfuse_embeddings"]["X_tiny_55um"]["patch_side_px"] == 48.0
    spots = get_spots(toy)
    assert sf.im.embedding_key("tissue", spots, spots.diameter, "macenko") == "X_tissue_55um_macenko"


def test_embed_copy_leaves_original(toy):
    out = sf.im.embed(toy, _tiny(), copy=True)
    assert "X_tiny_55um" in out.tables["table"].obsm and "X_tiny_55um" not in toy.tables["table"].obsm


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
    net = sf.nn.ResNet50()
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


def test_histospace_shipped_weights():
    import json

    from stfuse.nn._vision import SHIPPED

    path = SHIPPED["histospace"][0]
    assert path.is_file() and path.stat().st_size < 5e6
    record = json.loads(path.with_suffix(".json").read_text())
    assert record["final"]["val_mse"] < record["final"]["val_mean_colour_baseline_mse"] / 5
    enc = sf.im.get_encoder("histospace")
    assert enc.input_px == 128 and enc.output_dim == 256 and len(enc.checksum) == 16
    small = sf.datasets.toy(n_spots=36, seed=2)
    feats = sf.im.image_features(get_spots(small), "histospace", batch_size=36)
    assert feats.X.shape == (36, 256) and np.isfinite(feats.X).all() and feats.X.std(axis=0).max() > 0
    # the autoencoder reconstructs real-looking tissue far better than a constant colour
    ae, _ = sf.nn.histospace_autoencoder()
    x = torch.from_numpy(next(sf.im.extract_patches(small, out_px=128, batch_size=8)).patches).float() / 255
    with torch.no_grad():
        err = float(((ae(x) - x) ** 2).mean())
    assert err < float(((x - x.mean(dim=(2, 3), keepdim=True)) ** 2).mean())


def test_image_scale_patches_match():
    """A half-size image (image_scale=0.5) gives the same patches, read from the smaller image."""
    import dask.array as da
    import pandas as pd

    from stfuse.io._st import build_spatialdata

    rng = np.random.default_rng(0)
    full = np.repeat(np.repeat(rng.integers(0, 255, (3, 300, 300), dtype=np.uint8), 2, axis=1), 2, axis=2)
    half = full[:, ::2, ::2]
    xy = np.array([[101.0, 101.0], [241.0, 181.0], [301.0, 61.0]])
    args = (pd.DataFrame(np.ones((3, 2)), index=list("abc"), columns=["g", "h"]), pd.DataFrame(index=list("abc")), xy)
    kw = {"section": "s", "spot_diameter_px": 40.0, "spot_diameter_um": 100.0}
    a = build_spatialdata(*args, **kw, image=da.from_array(full, chunks=(3, 128, 128)))
    b = build_spatialdata(*args, **kw, image=da.from_array(half, chunks=(3, 64, 64)), image_scale=0.5)
    sa, sb = get_spots(a), get_spots(b)
    assert sb.diameter == pytest.approx(20.0) and np.allclose(sb.centers, xy / 2)
    pa = next(sf.im.extract_patches(a, out_px=20, level=1, batch_size=3))
    pb = next(sf.im.extract_patches(b, out_px=20, level=0, batch_size=3))
    order_a, order_b = np.argsort(pa.index), np.argsort(pb.index)
    assert sa.levels[1].scale == 0.5
    diff = np.abs(pa.patches[order_a].astype(int) - pb.patches[order_b].astype(int))
    assert diff.mean() < 3


def _visium_adata(tmp_path, *, hires_scalef=0.2, n=4):
    """squidpy/scanpy-style Visium AnnData: float [0, 1] hires PNG image, scalefactors, full-res obsm['spatial']."""
    import anndata as ad
    import matplotlib.image as mpimg
    from PIL import Image

    img = np.full((400, 500, 3), 250, np.uint8)
    full_xy = np.array([[500.0, 600.0], [1500.0, 1000.0], [2000.0, 1500.0], [800.0, 1800.0]])[:n]
    hx, hy = full_xy[1] * hires_scalef
    img[int(hy) - 3 : int(hy) + 3, int(hx) - 3 : int(hx) + 3] = (20, 20, 160)  # a blue mark under spot 1
    Image.fromarray(img).save(tmp_path / "tissue_hires_image.png")
    hires = mpimg.imread(tmp_path / "tissue_hires_image.png")  # what scanpy.read_visium does: float32 in [0, 1]
    assert hires.dtype == np.float32 and hires.max() <= 1.0
    adata = ad.AnnData(np.ones((n, 3), np.float32))
    adata.obsm["spatial"] = full_xy
    adata.uns["spatial"] = {"lib": {"images": {"hires": hires, "lowres": hires[::4, ::4]},
                                    "scalefactors": {"tissue_hires_scalef": hires_scalef,
                                                     "tissue_lowres_scalef": hires_scalef / 4,
                                                     "spot_diameter_fullres": 150.0}}}
    return adata


def test_visium_hires_png_anndata(tmp_path):
    adata = _visium_adata(tmp_path)
    spots = get_spots(adata)
    assert spots.diameter == pytest.approx(30.0) and len(spots.levels) == 2
    patches = {int(i): p for b in sf.im.extract_patches(adata, size_px=30, batch_size=2) for i, p in zip(b.index, b.patches)}
    p = patches[1]
    assert p.shape == (3, 30, 30)
    ys, xs = np.nonzero(p[2] == 160)
    assert len(ys) == 36 and ys.mean() == pytest.approx(14.5, abs=1) and xs.mean() == pytest.approx(14.5, abs=1)
    assert (patches[0] == 250).all()
    sf.im.embed(adata, _tiny())
    key = sf.im.embedding_key("tiny", spots, spots.diameter)
    assert adata.obsm[key].shape == (4, 4)
    assert adata.uns["stfuse_embeddings"][key]["patch_side_px"] == 30.0


@pytest.mark.her2st
def test_her2st_full_jpeg_patches(c2):
    """A ~9000 px HER2ST JPEG: every spot gets a full, tissue-filled patch."""
    spots = get_spots(c2)
    assert spots.levels[0].shape_yx[0] > 9000
    batches = list(sf.im.extract_patches(c2, out_px=64, batch_size=100))
    idx = np.concatenate([b.index for b in batches])
    assert sorted(idx.tolist()) == list(range(spots.n_obs))
    inside = np.concatenate([b.inside for b in batches])
    patches = np.concatenate([b.patches for b in batches])
    assert (inside == 1).all() and patches.shape == (spots.n_obs, 3, 64, 64)
    assert patches.mean() < 230  # tissue under spots, not white background


def test_tissue_encoder_shipped_weights():
    import json

    from stfuse.nn._vision import SHIPPED

    path = SHIPPED["tissue"][0]
    assert path.is_file() and path.stat().st_size < 5e6
    record = json.loads(path.with_suffix(".json").read_text())
    assert record["training"]["objective"].startswith("SimCLR") and record["training"]["steps"] > 0
    enc = sf.im.get_encoder("tissue")
    assert enc.input_px == 160 and enc.output_dim == 384 and len(enc.checksum) == 16
    small = sf.datasets.toy(n_spots=36, seed=2)
    feats = sf.im.image_features(get_spots(small), "tissue", batch_size=36)
    assert feats.X.shape == (36, 384) and np.isfinite(feats.X).all() and feats.X.std(axis=0).max() > 0
    assert feats.obsm_key == "X_tissue_55um"


def test_every_tool_defaults_to_the_tissue_encoder():
    """One default encoder for every image-using function (sf.im.embed, the tools, the data floor)."""
    import inspect

    from stfuse.data import _single

    funcs = [sf.im.embed, sf.im.image_features, sf.tl.stmic, sf.tl.senca, sf.tl.spacrd,
             *(f for _, f in inspect.getmembers(_single, inspect.isfunction) if "encoder" in inspect.signature(f).parameters)]
    assert len(funcs) >= 8
    assert {inspect.signature(f).parameters["encoder"].default for f in funcs} == {"tissue"}
    sdata = sf.datasets.toy(n_spots=36, seed=2)
    sf.im.embed(sdata)
    assert sdata.tables["table"].uns["stfuse_embeddings"]["X_tissue_55um"]["input_px"] == 160
