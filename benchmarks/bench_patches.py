"""Patch extraction and image embedding on a full HER2ST image: sf.im vs squidpy, patches/s and peak memory.

stfuse: ``sf.im.extract_patches`` (lazy, decode-once JPEG, chunk-grouped reads) and
``sf.im.image_features`` with the default ``"histospace"`` encoder and ResNet-50 (random weights:
timing only). squidpy: ``ImageContainer.generate_spot_crops`` and ``sq.im.calculate_image_features``
on the same spots (same centres, same 1-diameter crops). Every run starts from the image file (the
decode is part of the time) in the same process, one after the other.
"""

from __future__ import annotations

import gc
import sys
import warnings

import anndata as ad
import pandas as pd

import stfuse as sf
from stfuse._spots import get_spots

from ._util import append_results, measure, table

SECTION = "C2"


def _squidpy_inputs(sdata, path):
    import squidpy as sq

    spots = get_spots(sdata)
    adata = ad.AnnData(obs=pd.DataFrame(index=spots.table.obs_names.copy()))
    adata.obsm["spatial"] = spots.centers.copy()
    adata.uns["spatial"] = {SECTION: {"scalefactors": {"spot_diameter_fullres": spots.diameter}}}
    return adata, (lambda lazy=False: sq.im.ImageContainer(str(path), layer="image", library_id=SECTION, lazy=lazy))


def main(section: str = SECTION, lazy_squidpy: bool = False) -> None:
    import squidpy as sq

    sf.settings.verbosity = 0
    warnings.filterwarnings("ignore", message="resnet50 with random weights")
    path = next((sf.datasets.her2st_path() / "ST-imgs" / section[0] / section).glob("*.jpg"))

    def fresh():
        gc.collect()
        return sf.datasets.her2st(section)  # lazy: nothing decoded until patches are read

    sdata = fresh()
    spots = get_spots(sdata)
    n = spots.n_obs
    h, w = spots.levels[0].shape_yx
    adata, container = _squidpy_inputs(sdata, path)
    del sdata, spots
    rows = []

    def row(task, tool, fn):
        t, mem, _ = measure(fn)
        rows.append({"task": task, "tool": tool, "s": t, "patches/s": n / t, "peak MiB": mem})
        print(rows[-1], flush=True)

    # --- extraction alone -----------------------------------------------------------------------
    def sf_extract(out_px):
        sd = fresh()
        return lambda: sum(len(b.index) for b in sf.im.extract_patches(sd, out_px=out_px, batch_size=64))

    def sq_crops(lazy):
        def run():
            img = container(lazy)
            return sum(1 for _ in img.generate_spot_crops(adata, library_id=SECTION, spot_scale=1.0, as_array="image"))
        return run

    row("extract (native ~145 px)", "stfuse", sf_extract(None))
    row("extract (resized to 128 px)", "stfuse", sf_extract(128))
    row("extract (native ~145 px)", "squidpy generate_spot_crops", sq_crops(False))
    if lazy_squidpy:  # squidpy's default lazy container re-reads the JPEG for every crop: minutes
        row("extract (native ~145 px)", "squidpy generate_spot_crops, lazy=True", sq_crops(True))

    # --- extraction + embedding -----------------------------------------------------------------
    def sf_embed(encoder, weights=None):
        sd = fresh()
        sp = get_spots(sd)
        return lambda: sf.im.image_features(sp, encoder, weights=weights, batch_size=64, device="cpu", client=False)

    def sq_features(features):
        def run():
            img = container()
            return sq.im.calculate_image_features(adata, img, library_id=SECTION, features=features, spot_scale=1.0,
                                                  n_jobs=1, show_progress_bar=False, copy=True)
        return run

    row("extract + embed", "stfuse histospace (256-d)", sf_embed("histospace"))
    row("extract + embed", "stfuse resnet50 random weights (2048-d)", sf_embed("resnet50", "random"))
    row("extract + embed", "squidpy features='summary' (default)", sq_features("summary"))
    row("extract + embed", "squidpy summary+histogram+texture", sq_features(["summary", "histogram", "texture"]))

    base = {r["task"]: r["s"] for r in rows if r["tool"] == "squidpy generate_spot_crops"}
    sq_default = next(r["s"] for r in rows if r["tool"].startswith("squidpy features='summary'"))
    for r in rows:
        if r["tool"] == "stfuse" and r["task"] in base:
            r["speed-up vs squidpy"] = base[r["task"]] / r["s"]
        elif r["tool"].startswith("stfuse") and r["task"] == "extract + embed":
            r["speed-up vs squidpy"] = sq_default / r["s"]
    body = (
        f"HER2ST {section}: {n} spots on a {w} x {h} px JPEG; patches of one spot diameter. Each row starts "
        "from the file (JPEG decode included), runs once, in one process, one row after the other; memory = peak "
        "RSS above the start of the row (the decoded image alone is "
        f"{3 * w * h / 2**20:.0f} MiB). squidpy's `ImageContainer(path, lazy=False)` (its default lazy=True re-reads "
        "the JPEG for every crop, minutes per section: `main(section, lazy_squidpy=True)` adds that row); speed-ups of the embedding "
        "rows are against squidpy's default features ('summary'). Torch threads: all cores; squidpy n_jobs=1.\n\n"
        + table(rows)
    )
    append_results(f"Patches and image features on a full HER2ST image ({section}): sf.im vs squidpy", body,
                   "python -m benchmarks.run patches")


if __name__ == "__main__":
    main(*sys.argv[1:])
