from __future__ import annotations

import dask.array as da
import numpy as np
import pytest

import stfuse as sf
from stfuse._spots import get_spots
from stfuse.tl._tissue import tissue_mask


def _slide(mpp_table: bool = False):
    """White glass with a pink 'tissue' rectangle (x 200-600, y 100-300) and faint noise."""
    from spatialdata import SpatialData
    from spatialdata.models import Image2DModel
    from spatialdata.transformations import Identity

    rng = np.random.default_rng(0)
    img = np.clip(rng.normal(242, 3, (3, 400, 800)), 0, 255).astype(np.uint8)
    img[:, 100:300, 200:600] = np.clip(rng.normal([[[210]], [[130]], [[190]]], 12, (3, 200, 400)), 0, 255)
    img[:, 180:190, 380:390] = 245  # a small hole: filled
    image = Image2DModel.parse(da.from_array(img, chunks=(3, 256, 256)), dims=("c", "y", "x"),
                               c_coords=["r", "g", "b"], transformations={"global": Identity()})
    return SpatialData(images={"he": image})


def test_tissue_mask_finds_the_tissue():
    s = _slide()
    img = get_spots(sf.datasets.toy(n_spots=16)).levels[0].data.compute()  # fully stained toy image
    assert tissue_mask(img).mean() > 0.6
    m = tissue_mask(np.asarray(s.images["he"].data))
    assert m[100:300, 200:600].mean() > 0.99
    assert m[:90].mean() == 0 and m[:, :190].mean() == 0


def test_tile_tissue_grid_on_tissue_only():
    s = _slide()
    sf.tl.tile_tissue(s, size_px=40, min_tissue=0.9)
    c = s.shapes["tissue_tiles"]
    x, y = c.geometry.x.to_numpy(), c.geometry.y.to_numpy()
    assert np.allclose(c["radius"], 20)
    assert x.min() >= 200 and x.max() <= 600 and y.min() >= 100 and y.max() <= 300
    assert 40 <= len(c) <= 50  # 10 x 5 circles of 40 px fit a 400 x 200 rectangle
    assert "tissue_tiles" not in s.attrs.get("stfuse", {})  # pixel size unknown
    # hex grid at ST spacing: fewer circles; physical size from microns_per_pixel
    out = sf.tl.tile_tissue(s, size_um=20, microns_per_pixel=0.5, spacing=2, lattice="hex", key_added="hex",
                            copy=True)
    assert "hex" in out.shapes and "hex" not in s.shapes
    assert len(out.shapes["hex"]) < len(c)
    assert out.attrs["stfuse"]["hex"]["spot_diameter_um"] == pytest.approx(20)
    sp = get_spots(out, table_key=None, shapes_key="hex", require_table=False)
    assert sp.microns_per_pixel == pytest.approx(0.5) and sp.n_obs == len(out.shapes["hex"])
    with pytest.warns(UserWarning, match="Replacing"):
        sf.tl.tile_tissue(s, size_px=40)
    assert "hex" not in s.attrs.get("stfuse", {})  # the copy's metadata stays in the copy


def test_tile_tissue_uses_the_spots_of_a_table():
    sdata = sf.datasets.toy(n_spots=100)
    sf.tl.tile_tissue(sdata)  # size and pixel size from the toy spots (24 px, 55 µm)
    assert np.allclose(sdata.shapes["tissue_tiles"]["radius"], 12)
    assert sdata.attrs["stfuse"]["tissue_tiles"]["spot_diameter_um"] == pytest.approx(55)


def test_tile_tissue_bad_input():
    s = _slide()
    with pytest.raises(sf.InputError, match="microns_per_pixel"):
        sf.tl.tile_tissue(s, size_um=100)
    with pytest.raises(sf.InputError, match="Give the circle size"):
        sf.tl.tile_tissue(s)
    with pytest.raises(sf.InputError, match="lattice"):
        sf.tl.tile_tissue(s, size_px=40, lattice="triangle")
    with pytest.raises(sf.InputError, match="min_tissue"):
        sf.tl.tile_tissue(s, size_px=40, min_tissue=1.5)
    with pytest.raises(sf.InputError, match="once"):
        sf.tl.tile_tissue(s, size_um=1, size_px=1)
    with pytest.raises(sf.KeyNotFoundError, match="available images"):
        sf.tl.tile_tissue(s, size_px=40, image_key="nope")
    with pytest.raises(sf.InputError, match="SpatialData"):
        sf.tl.tile_tissue(np.zeros((3, 3)), size_px=4)
    blank = _slide()
    blank.images["he"] = blank.images["he"].copy(data=da.full((3, 400, 800), 240, np.uint8, chunks=256))
    with pytest.raises(sf.InputError, match="No tissue"):
        sf.tl.tile_tissue(blank, size_px=40)
    assert "tissue_tiles" not in s.shapes
