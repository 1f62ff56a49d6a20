"""SpaCRD training and scoring time and peak memory on synthetic sections (5k and 50k spots).

Expression from :func:`stfuse.datasets.toy` (prepared as ``sf.tl.spacrd`` does: normalise, log1p,
per-section min–max), random 256-d image features standing in for cached ``histospace`` embeddings,
6 nearest neighbours. The paper's widths. Training runs a fixed number of epochs (no early stopping)
and reports the time per epoch; scoring is mini-batched, so its extra memory should stay flat from
5k to 50k spots apart from the ``4 · n`` bytes of output.
"""

from __future__ import annotations

import sys

import numpy as np

import stfuse as sf
from stfuse.models import SpaCRD

from ._util import append_results, measure, table

EPOCHS = 2


def _section(n: int, seed: int):
    sd = sf.datasets.toy(n_spots=n, seed=seed, image=False)
    t = sd.tables["table"]
    X = sf.pp.prepare_expression(t, scale="minmax").X
    img = np.random.default_rng(seed).standard_normal((n, 256), dtype=np.float32)
    nb, _ = sf.gr.knn(sd.tables["table"].obsm["spatial"], 6)
    return X, img, nb, t.obs["cancer"].to_numpy().astype(int)


def main(sizes: tuple[int, ...] = (5_000, 50_000)) -> None:
    sf.settings.verbosity = 0
    rows = []
    for n in sizes:
        X, img, nb, y = _section(n, 0)
        Xt, imgt, nbt, _ = _section(n, 1)
        for use_image in (True, False):
            model = SpaCRD(n_genes=X.shape[1], n_image=img.shape[1], use_image=use_image, device="cpu")
            train_in = (X, img if use_image else None, nb, y)
            score_in = (Xt, imgt if use_image else None, nbt)
            t_fit, m_fit, _ = measure(lambda model=model, a=train_in: model.fit(*a, epochs=EPOCHS, pretrain_epochs=1,
                                                                               patience=None))
            n_ep = EPOCHS + (1 if use_image else 0)
            t_pred, m_pred, scores = measure(lambda model=model, a=score_in: model.predict(*a))
            rows.append({"spots": n, "image": "yes" if use_image else "no",
                         "train s/epoch": t_fit / n_ep, "train peak MiB": m_fit,
                         "score s": t_pred, "score peak MiB": m_pred, "output MiB": scores.nbytes / 2**20})
            print(rows[-1], flush=True)
    body = (f"Synthetic toy sections, {X.shape[1]} genes, random 256-d image features, paper widths, "
            f"{EPOCHS} epochs (+1 alignment pre-training epoch with images), CPU. Peak MiB = peak RSS above the "
            "RSS before the call (inputs already prepared).\n\n" + table(rows))
    append_results("SpaCRD: training and scoring time and memory", body,
                   "PYTHONPATH=src python -m benchmarks.run spacrd" + (" " + " ".join(sys.argv[2:]) if len(sys.argv) > 2 else ""))


if __name__ == "__main__":
    main()
