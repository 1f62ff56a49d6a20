from __future__ import annotations

import gzip
import shutil

import numpy as np
import pandas as pd
import pytest
import spatialdata as sd

import stfuse as sf
from stfuse import _keys as K

pytestmark = pytest.mark.her2st


def _copy_section(her2st_dir, tmp_path, section="C2"):
    """Copy a section's counts and spot files so tests can corrupt them."""
    counts = tmp_path / f"{section}.tsv.gz"
    spots = tmp_path / f"{section}_selection.tsv"
    shutil.copy(her2st_dir / "ST-cnts" / f"{section}.tsv.gz", counts)
    shutil.copy(her2st_dir / "ST-spotfiles" / f"{section}_selection.tsv", spots)
    return counts, spots


def test_c2_reads_with_clusters_and_image(c2, her2st_dir):
    t = c2.tables["table"]
    assert t.n_obs == 187
    assert t.obs[K.CLUSTER].notna().sum() == 185
    assert t.obs[K.CLUSTER_NAME].notna().sum() == 185
    assert set(t.obs[K.CLUSTER_NAME].dropna().unique()) <= {
        "immune : B/plasma cells, endothelium", "immune : B/plasma cells, APC", "cancer 1", "cancer 2",
        "cancer 3", "immune : APC, B-cell, T-cell", "unknown",
    }
    # cancer from cluster names, as C2 has no pathologist labels
    assert t.obs[K.CANCER].dtype == bool
    assert t.obs[K.CANCER].sum() == t.obs[K.CLUSTER_NAME].astype(str).str.startswith("cancer").sum()
    assert "C2_image" in c2.images and "C2_spots" in c2.shapes
    # X: raw counts, sparse, unique genes
    from scipy import sparse

    assert sparse.issparse(t.X) and t.var_names.is_unique
    raw = pd.read_csv(her2st_dir / "ST-cnts" / "C2.tsv.gz", sep="\t", index_col=0)
    assert np.allclose(np.asarray(t.X.sum(axis=1)).ravel(), raw.loc[[i.split("_", 1)[1] for i in t.obs_names]].sum(axis=1))


def test_spot_size_from_grid(c2):
    spots = sf._spots.get_spots(c2)
    # 100 µm spots, 200 µm grid: the diameter is half the grid step (290 px per array step in C2)
    assert spots.diameter == pytest.approx(290.6 / 2, rel=0.01)
    assert spots.spacing() == pytest.approx(2 * spots.diameter, rel=0.1)  # detected centres are noisy
    assert spots.microns_per_pixel == pytest.approx(100 / spots.diameter)
    assert spots.has_image and spots.levels[0].shape_yx[0] > 9000
    # spots overlay the tissue: patches under spots are darker than the slide background
    img = spots.levels[-1]
    xy = (spots.centers * img.scale).astype(int)
    arr = img.data.compute()
    under = arr[:, xy[:, 1], xy[:, 0]].mean()
    assert under < arr.mean() - 10


def test_labels_join_on_adjusted_coordinates(her2st_dir):
    sdata = sf.datasets.her2st("H1", her2st_dir)
    t = sdata.tables["table"]
    assert t.obs[K.LABEL].notna().all()
    assert t.obs[K.CANCER].sum() == (t.obs[K.LABEL].isin(["invasive cancer", "cancer in situ"])).sum() == 187
    assert "H1_image" not in sdata.images


def test_roundtrip_zarr(c2, tmp_path):
    small = sd.SpatialData(shapes=dict(c2.shapes), tables={"table": c2.tables["table"].copy()},
                           images={"C2_image": c2.images["C2_image"]})
    path = tmp_path / "c2.zarr"
    small.write(path)
    back = sd.read_zarr(path)
    t0, t1 = small.tables["table"], back.tables["table"]
    assert (t0.obs_names == t1.obs_names).all()
    assert (t0.obs[K.CLUSTER].astype(str) == t1.obs[K.CLUSTER].astype(str)).all()
    assert np.allclose(t0.X.toarray(), t1.X.toarray())
    s0, s1 = sf._spots.get_spots(small), sf._spots.get_spots(back)
    assert np.allclose(s0.centers, s1.centers) and s0.diameter == pytest.approx(s1.diameter)
    assert s1.microns_per_pixel == pytest.approx(s0.microns_per_pixel)


def test_image_scale(her2st_dir, tmp_path):
    from PIL import Image

    Image.MAX_IMAGE_PIXELS = None
    src = next((her2st_dir / "ST-imgs" / "C" / "C2").glob("*.jpg"))
    with Image.open(src) as im:
        im.reduce(2).save(tmp_path / "half.jpg", quality=90)
    d = her2st_dir
    full = sf.io.read_st(d / "ST-cnts/C2.tsv.gz", d / "ST-spotfiles/C2_selection.tsv", src)
    half = sf.io.read_st(d / "ST-cnts/C2.tsv.gz", d / "ST-spotfiles/C2_selection.tsv", tmp_path / "half.jpg",
                         image_scale=0.5)
    a, b = sf._spots.get_spots(full), sf._spots.get_spots(half)
    assert np.allclose(a.centers / 2, b.centers, atol=1e-6)
    assert b.diameter == pytest.approx(a.diameter / 2)
    assert b.microns_per_pixel == pytest.approx(2 * a.microns_per_pixel)
    # squidpy's scale factors stay relative to obsm["spatial"] (full resolution), whatever the file's size
    fa, fb = (x.tables["table"].uns["spatial"]["C2_spots"]["scalefactors"] for x in (full, half))
    assert fb["spot_diameter_fullres"] == fa["spot_diameter_fullres"]
    assert fb["tissue_hires_scalef"] == pytest.approx(fa["tissue_hires_scalef"], rel=1e-3)


def test_missing_file(tmp_path, her2st_dir):
    with pytest.raises(sf.DataNotFoundError, match="does not exist"):
        sf.io.read_st(tmp_path / "nope.tsv.gz", her2st_dir / "ST-spotfiles/C2_selection.tsv")
    with pytest.raises(sf.DataNotFoundError, match="HER2ST layout"):
        sf.datasets.her2st("C2", tmp_path)


def test_spots_outside_image(tmp_path, her2st_dir):
    counts, spots = _copy_section(her2st_dir, tmp_path)
    from PIL import Image

    Image.new("RGB", (2000, 2000), "white").save(tmp_path / "small.jpg")
    with pytest.raises(sf.InputError, match="outside the image"):
        sf.io.read_st(counts, spots, tmp_path / "small.jpg")


def test_duplicated_genes(tmp_path, her2st_dir):
    counts, spots = _copy_section(her2st_dir, tmp_path)
    df = pd.read_csv(counts, sep="\t", index_col=0).iloc[:, :50]
    df.columns = [*df.columns[:-1], df.columns[0]]
    df.to_csv(tmp_path / "dup.tsv", sep="\t")
    with pytest.raises(sf.InputError, match="duplicated gene names"):
        sf.io.read_st(tmp_path / "dup.tsv", spots)


def test_ids_do_not_join(tmp_path, her2st_dir):
    counts, spots = _copy_section(her2st_dir, tmp_path)
    df = pd.read_csv(counts, sep="\t", index_col=0).iloc[:, :50]
    df.index = [f"{i}_x" for i in range(len(df))]
    df.to_csv(tmp_path / "bad.tsv", sep="\t")
    with pytest.raises(sf.InputError, match="matches a selected spot"):
        sf.io.read_st(tmp_path / "bad.tsv", spots)


def test_non_numeric_counts(tmp_path, her2st_dir):
    counts, spots = _copy_section(her2st_dir, tmp_path)
    df = pd.read_csv(counts, sep="\t", index_col=0).iloc[:, :50]
    df = df.astype(object)
    df.iloc[3, 4] = "lots"
    with gzip.open(tmp_path / "nn.tsv.gz", "wt") as f:
        df.to_csv(f, sep="\t")
    with pytest.raises(sf.InputError, match="non-numeric"):
        sf.io.read_st(tmp_path / "nn.tsv.gz", spots)


def test_negative_counts(tmp_path, her2st_dir):
    counts, spots = _copy_section(her2st_dir, tmp_path)
    df = pd.read_csv(counts, sep="\t", index_col=0).iloc[:, :50]
    df.iloc[0, 0] = -1
    df.to_csv(tmp_path / "neg.tsv", sep="\t")
    with pytest.raises(sf.InputError, match="negative"):
        sf.io.read_st(tmp_path / "neg.tsv", spots)


def test_truncated_image(tmp_path, her2st_dir):
    counts, spots = _copy_section(her2st_dir, tmp_path)
    src = next((her2st_dir / "ST-imgs" / "C" / "C2").glob("*.jpg"))
    data = src.read_bytes()
    (tmp_path / "cut.jpg").write_bytes(data[: len(data) // 2])
    with pytest.raises(sf.InputError, match="truncated"):
        sf.io.read_st(counts, spots, tmp_path / "cut.jpg")


def test_image_decoded_once(her2st_dir, monkeypatch):
    from stfuse.io import _image

    calls = []
    real = _image._decode
    monkeypatch.setattr(_image, "_decode", lambda p: calls.append(p) or real(p))
    sdata = sf.datasets.her2st("C3", her2st_dir)
    assert calls == []  # reading is lazy
    spots = sf._spots.get_spots(sdata)
    lvl = spots.levels[0].data
    lvl[:, :100, :100].compute()
    lvl[:, 5000:5100, 5000:5100].compute()
    spots.levels[-1].data.compute()
    assert len(calls) == 1


def test_motivation_names_with_commas(her2st_dir):
    from stfuse.io._st import _read_motivation

    m = _read_motivation(her2st_dir / "ST-cluster" / "motivation.csv")
    row = m[(m.patient == "C") & (m.cluster == "5")]
    assert row.name.item() == "immune : APC, B-cell, T-cell"
    assert m[(m.patient == "F") & (m.cluster == "0")].name.item() == "unknown"


def test_her2st_offline_error(tmp_path, monkeypatch):
    monkeypatch.delenv("STFUSE_DATA", raising=False)
    monkeypatch.setenv("STFUSE_CACHE", str(tmp_path / "cache"))
    import urllib.request

    def offline(*a, **k):
        raise OSError("network is unreachable")

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    with pytest.raises(sf.DataNotFoundError, match="Offline"):
        sf.datasets.her2st("C2")


@pytest.mark.parametrize("section", ["B1", "C1", "D1", "E1", "F1", "G2", "H1"])
def test_all_labelled_sections_read(her2st_dir, section):
    t = sf.datasets.her2st(section, her2st_dir).tables["table"]
    assert t.obs[K.LABEL].notna().mean() > 0.95
    assert t.obs[K.CANCER].any() and not t.obs[K.CANCER].all()
