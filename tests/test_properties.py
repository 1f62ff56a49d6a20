"""Property-based tests (hypothesis) for readers and patch extraction."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import stfuse as sf
from stfuse._spots import get_spots


@st.composite
def st_sections(draw):
    """A small legacy-ST section: array coordinates on a grid, pixel = scale * array + offset."""
    nx, ny = draw(st.integers(2, 8)), draw(st.integers(2, 8))
    keep = draw(st.lists(st.booleans(), min_size=nx * ny, max_size=nx * ny))
    if sum(keep) < 3:
        keep = [True] * (nx * ny)
    xs, ys = np.meshgrid(np.arange(1, nx + 1), np.arange(1, ny + 1))
    xs, ys = xs.ravel()[np.array(keep)], ys.ravel()[np.array(keep)]
    if len(np.unique(xs)) < 2 or len(np.unique(ys)) < 2:
        xs, ys = np.array([1, 2, 1, 2]), np.array([1, 1, 2, 2])
    step = draw(st.floats(20.0, 400.0))
    off = draw(st.floats(0.0, 500.0))
    n_genes = draw(st.integers(1, 12))
    seed = draw(st.integers(0, 2**16))
    counts = np.random.default_rng(seed).poisson(3.0, (len(xs), n_genes))
    return xs, ys, step, off, counts


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st_sections())
def test_read_st_property(section):
    xs, ys, step, off, counts = section
    ids = [f"{x}x{y}" for x, y in zip(xs, ys)]
    with tempfile.TemporaryDirectory() as d:
        d = Path(d)
        genes = [f"g{i}" for i in range(counts.shape[1])]
        pd.DataFrame(counts, index=ids, columns=genes).to_csv(d / "S1.tsv", sep="\t")
        spots = pd.DataFrame({"x": xs, "y": ys, "new_x": xs.astype(float), "new_y": ys.astype(float),
                              "pixel_x": off + step * xs, "pixel_y": off + step * ys, "selected": 1})
        # the spot file lists the spots in another order than the counts
        spots.iloc[::-1].to_csv(d / "S1_selection.tsv", sep="\t", index=False)
        sdata = sf.io.read_st(d / "S1.tsv", d / "S1_selection.tsv")
    t = sdata.tables["table"]
    assert t.n_obs == len(xs) and list(t.var_names) == genes
    assert np.array_equal(t.X.toarray(), counts.astype(np.float32))
    s = get_spots(sdata)
    assert np.allclose(s.centers, np.column_stack([off + step * xs, off + step * ys]))
    assert np.isclose(s.diameter, step / 2)  # 100 µm spots on a 200 µm grid
    assert np.isclose(s.microns_per_pixel, 200.0 / step)


@st.composite
def st_images(draw):
    h, w = draw(st.integers(8, 120)), draw(st.integers(8, 120))
    n = draw(st.integers(1, 10))
    # centres lie on the image (get_spots refuses others); patches may still reach past its edges
    x = draw(st.lists(st.floats(0, w), min_size=n, max_size=n))
    y = draw(st.lists(st.floats(0, h), min_size=n, max_size=n))
    side = draw(st.integers(2, 40))
    chunk = draw(st.integers(8, 64))
    return h, w, np.column_stack([x, y]), side, chunk


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st_images())
def test_patches_property(case):
    import dask.array as da

    from stfuse.io._st import build_spatialdata

    h, w, xy, side, chunk = case
    # every pixel encodes its own position, so each patch pixel can be checked
    yy, xx = np.mgrid[0:h, 0:w]
    img = np.stack([yy % 251, xx % 251, (yy // 251) * 16 + xx // 251]).astype(np.uint8)
    n = len(xy)
    obs = pd.DataFrame(index=[f"s{i}" for i in range(n)])
    sdata = build_spatialdata(pd.DataFrame(np.ones((n, 1)), index=obs.index, columns=["g"]), obs, xy,
                              section="p", spot_diameter_px=10.0, spot_diameter_um=55.0,
                              image=da.from_array(img, chunks=(3, chunk, chunk)))
    seen = set()
    for b in sf.im.extract_patches(sdata, size_px=side, batch_size=3, level=0):
        assert b.patches.shape[1:] == (3, side, side)
        for i, p, inside in zip(b.index, b.patches, b.inside):
            seen.add(int(i))
            cx, cy = xy[i]
            y0 = int(np.floor(cy - side / 2 + 0.5))
            x0 = int(np.floor(cx - side / 2 + 0.5))
            ys, xs = np.mgrid[y0 : y0 + side, x0 : x0 + side]
            ok = (ys >= 0) & (ys < h) & (xs >= 0) & (xs < w)
            assert np.isclose(inside, ok.mean())
            assert (p[:, ~ok] == 255).all()  # padding outside the image
            assert np.array_equal(p[0][ok], (ys[ok] % 251).astype(np.uint8))
            assert np.array_equal(p[1][ok], (xs[ok] % 251).astype(np.uint8))
    assert seen == set(range(n))
