"""sf.tl.senca scale: toy sections of 5k, 50k, 200k spots, default steps, image features cached; time and peak RSS.

``python -m benchmarks.bench_senca [n_spots ...]``. The image features are a cached stand-in (a fixed
random ``(n_spots, 64)`` array in ``obsm``, passed as ``image_rep``): SENCA's cost depends on their
width, not their values, and encoding the image is benchmarked separately (``bench_embeddings``).
"""

from __future__ import annotations

import sys

import numpy as np

import stfuse as sf

from ._util import append_results, measure, table

SIZES = (5_000, 50_000, 200_000)


def main(sizes: tuple[int, ...] | None = None) -> None:
    sizes = sizes or SIZES
    sf.settings.verbosity = 0
    rows = []
    for n in sizes:
        sdata = sf.datasets.toy(n_spots=n, seed=0, image=False)
        t = sdata.tables["table"]
        t.obsm["X_feat"] = np.random.default_rng(0).normal(size=(n, 64)).astype(np.float32)
        seconds, peak, _ = measure(lambda sdata=sdata: sf.tl.senca(sdata, n_clusters=4, image_rep="X_feat",
                                                                   device="cpu"))
        u = t.uns["senca"]
        rows.append({"spots": n, "genes": t.n_vars, "steps": int(u["history"]["steps"][-1]), "seconds": seconds,
                     "peak MiB": peak, "clusters": t.obs["senca"].nunique()})
        print(rows[-1], flush=True)
    body = ("`sf.tl.senca(sdata, n_clusters=4, image_rep='X_feat')` on `sf.datasets.toy(n_spots)` "
            "(150 genes; 64 cached stand-in image features), defaults otherwise (hidden 256, latent 128, 200 Adam "
            "steps on batches of ~4096 spots made of random 16×16-spacing tiles with exact halos, NT-Xent negatives "
            "within random groups of ≤1024 windows, k-means). Peak MiB = extra resident memory "
            "during the call.\n\n" + table(rows))
    append_results("SENCA-st scale (toy, CPU, default steps)", body,
                   "python -m benchmarks.bench_senca " + " ".join(str(s) for s in sizes))


if __name__ == "__main__":
    main(tuple(int(a) for a in sys.argv[1:]) or None)
