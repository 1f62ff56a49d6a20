"""sf.gr.spatial_graph (numba) vs squidpy.gr.spatial_neighbors and sklearn NearestNeighbors, kNN k=6."""

from __future__ import annotations

import sys

import anndata as ad
import numpy as np
import squidpy as sq
from sklearn.neighbors import NearestNeighbors

import stfuse as sf
from stfuse.gr._graph import _to_csr

from ._util import append_results, measure, table

K = 6


def _sets_equal(i1: np.ndarray, i2: np.ndarray) -> bool:
    return bool(np.array_equal(np.sort(i1, axis=1), np.sort(i2, axis=1)))


def main(sizes: tuple[int, ...] = (10_000, 100_000, 1_000_000)) -> None:
    sf.settings.verbosity = 0
    sf.gr.knn(np.random.default_rng(0).uniform(size=(100, 2)), K)  # compile outside the timings
    rows = []
    for n in sizes:
        xy = np.random.default_rng(n).uniform(0, np.sqrt(n) * 100, (n, 2))

        def ours(xy=xy, n=n):
            idx, dist = sf.gr.knn(xy, K)
            return idx, _to_csr(idx, dist, n)

        def squidpy(xy=xy):
            a = ad.AnnData(obsm={"spatial": xy})
            sq.gr.spatial_neighbors_knn(a, n_neighs=K)
            return a.obsp["spatial_connectivities"]

        def sklearn(xy=xy):
            return NearestNeighbors(n_neighbors=K).fit(xy).kneighbors()[1]

        t_sf, m_sf, (idx, _) = measure(ours, repeat=3)
        t_sq, m_sq, conn = measure(squidpy, repeat=1 if n >= 1_000_000 else 3)
        t_sk, m_sk, idx_sk = measure(sklearn, repeat=1 if n >= 1_000_000 else 3)
        idx_sq = conn.indices.reshape(n, K)
        rows.append({
            "n points": n, "stfuse s": t_sf, "squidpy s": t_sq, "sklearn s": t_sk,
            "speed-up vs squidpy": t_sq / t_sf, "speed-up vs sklearn": t_sk / t_sf,
            "stfuse MiB": m_sf, "squidpy MiB": m_sq, "sklearn MiB": m_sk,
            "same sets as squidpy": _sets_equal(idx, idx_sq), "same sets as sklearn": _sets_equal(idx, idx_sk),
        })
        print(rows[-1], flush=True)
    body = (
        f"kNN graph (k={K}) on uniform random points; stfuse = `sf.gr.knn` + CSR matrices (what "
        "`sf.gr.spatial_graph` writes), squidpy = `sq.gr.spatial_neighbors_knn` (writes obsp), sklearn = "
        "`NearestNeighbors.kneighbors`. Best of 3 runs (1 at 1M for squidpy/sklearn); memory = peak RSS "
        "above the start of the call. Numba threads: all cores.\n\n" + table(rows)
    )
    append_results("Spatial graph: sf.gr.spatial_graph vs squidpy vs sklearn", body,
                   "make bench (python -m benchmarks.run graph)")


if __name__ == "__main__":
    main(tuple(int(a) for a in sys.argv[1:]) or (10_000, 100_000, 1_000_000))
