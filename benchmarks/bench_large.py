"""A Visium-HD-scale section (1M spots by default) through the memory-bounded paths of stfuse.

Stages, each timed with its peak RSS: building the section (expression in memory, image lazy), the spatial
graph (`sf.gr.spatial_graph`, numba), and patch extraction + embedding of every spot streamed through dask
(`sf.im.embed`, local cluster of 2 worker processes), and SENCA embeddings of every spot from a model trained on
a block of the section (prediction: tiled mini-batches with exact halos). The image is a lazily generated dask array stored in
1024-px chunks: the point is that no stage holds the image, and memory stays flat as spots grow.

``python -m benchmarks.bench_large [n_spots]``; ``STFUSE_BENCH_LARGE_N`` sets it for ``make bench``.
"""

from __future__ import annotations

import os
import sys

import numpy as np
import torch

import stfuse as sf

from ._util import append_results, measure, table

SPOT_PX = 16  # Visium HD 8 µm bins at ~0.5 µm/px


class MeanColour(torch.nn.Module):
    """A cheap encoder: the stage measures the streaming machinery, not a CNN."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x.mean(dim=(2, 3)), x.std(dim=(2, 3))], dim=1)


CHUNK = 1024


def _split(n: int, c: int) -> list[int]:
    return [c] * (n // c) + ([n % c] if n % c else [])


def _pattern(block_info=None) -> np.ndarray:
    """A cheap, position-dependent texture for one chunk (computed on read, never stored)."""
    (y0, y1), (x0, x1) = block_info[None]["array-location"][1:]
    yy, xx = np.ogrid[y0:y1, x0:x1]
    base = ((yy * 7 + xx * 13) % 97).astype(np.uint8)
    return np.stack([base + 120, base + 60, base + 150])


N_TRAIN = 10_000


def senca_predict(sdata) -> np.ndarray:
    """Train SENCA on a block of the section, then embed every spot (``SENCA.embed``: tiled, exact halos)."""
    from stfuse._spots import get_spots
    from stfuse.pp import prepare_expression

    spots = get_spots(sdata)
    t = spots.table
    X = prepare_expression(t).X
    F = np.asarray(t.obsm["X_mean_colour"], np.float32)
    xy = spots.centers
    train = np.argsort(np.linalg.norm(xy - xy.min(0), axis=1))[:N_TRAIN]  # a corner block of the lattice
    model = sf.models.SENCA(X.shape[1], F.shape[1], device="cpu", random_state=0)
    model.fit(X[train], F[train], sf.gr.knn(xy[train], 4)[0], xy[train], epochs=1)
    S = model.embed(X, F, sf.gr.knn(xy, 4)[0], xy)
    assert S.shape == (len(xy), model.params["latent"]) and np.isfinite(S).all()
    return S


def section(n: int):
    import dask.array as da
    from spatialdata.models import Image2DModel

    sdata = sf.datasets.toy(n_spots=n, n_genes=60, spot_diameter_px=SPOT_PX, lattice="square", image=False)
    side = int(np.ceil(np.asarray(sdata.shapes["toy_spots"].geometry.x).max() + 2 * SPOT_PX))
    img = da.map_blocks(_pattern, dtype=np.uint8, chunks=((3,), *[tuple(_split(side, CHUNK))] * 2))
    sdata.images["toy_image"] = Image2DModel.parse(img, dims=("c", "y", "x"), scale_factors=[4, 4])
    return sdata


def main(n: int | None = None) -> None:
    from distributed import Client, LocalCluster

    n = int(n or os.environ.get("STFUSE_BENCH_LARGE_N", 1_000_000))
    sf.settings.verbosity = 0
    rows = []
    t, m, sdata = measure(lambda: section(n))
    rows.append({"stage": "build section (counts in memory, image lazy)", "s": t, "peak MiB": m, "worker RSS MiB": ""})
    t, m, _ = measure(lambda: sf.gr.spatial_graph(sdata, n_neighs=6))
    rows.append({"stage": "sf.gr.spatial_graph (k=6)", "s": t, "peak MiB": m, "worker RSS MiB": ""})
    enc = sf.im.Encoder.from_module(MeanColour(), name="mean_colour", input_px=SPOT_PX)
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, memory_limit="4GiB") as cluster, \
            Client(cluster) as client:
        t, m, _ = measure(lambda: sf.im.embed(sdata, enc, key_added="mean_colour", batch_size=8192, client=client))
        workers = client.run(lambda: __import__("psutil").Process().memory_info().rss / 2**20)
    rows.append({"stage": "sf.im.embed (patches + encoder, dask 2 workers)", "s": t,
                 "peak MiB": m, "worker RSS MiB": round(max(workers.values()))})
    X = sdata.tables["table"].obsm["X_mean_colour"]
    assert X.shape == (n, 6) and np.isfinite(X).all()
    t, m, _ = measure(lambda: senca_predict(sdata))
    rows.append({"stage": f"SENCA embedding of every spot (model trained on {N_TRAIN:,} spots)", "s": t,
                 "peak MiB": m, "worker RSS MiB": ""})
    body = (f"{n:,} spots of {SPOT_PX} px on a square lattice; image {sdata.images['toy_image']['scale0'].image.shape} "
            "uint8 generated lazily (dask, 1024-px chunks, never held in memory). Peak MiB = peak RSS of the main "
            "process above the start of the stage; worker RSS = resident memory of the dask workers after the run. "
            f"The SENCA stage includes training (1 epoch on a {N_TRAIN:,}-spot corner block, the 6 mean-colour "
            "features as image features), then embeds all spots in tiled mini-batches."
            "\n\n" + table(rows))
    append_results(f"Large input: {n:,} spots", body, f"python -m benchmarks.bench_large {n}")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else None)
