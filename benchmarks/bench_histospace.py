"""sf.tl.histospace: training and prediction time and peak memory on 5k and 50k toy spots.

Training: one epoch on every spot of the section (tile extraction, encoder maps, one pass of the
head; maps above ``cache_gb`` are recomputed per batch). Prediction: the trained model applied to the
same section with ``model=`` (tiles extracted, encoded and predicted 128 at a time). Peak memory is
the process RSS above its level before the call. The toy image is generated lazily chunk by chunk,
so it is never held whole.
"""

from __future__ import annotations

import os

import stfuse as sf

from ._util import append_results, measure, table

N_GENES = 50


def main(sizes: tuple[int, ...] | None = None) -> None:
    """Train and predict on toy sections of ``sizes`` spots (``STFUSE_BENCH_SIZES="5000,50000"`` by default).

    Sections above ``STFUSE_BENCH_TRAIN_MAX`` spots are only predicted, with the model of the last section trained.
    """
    if sizes is None:
        sizes = tuple(int(s) for s in os.environ.get("STFUSE_BENCH_SIZES", "5000,50000").split(","))
    train_max = int(os.environ.get("STFUSE_BENCH_TRAIN_MAX", max(sizes)))
    sf.settings.verbosity = 0
    rows = []
    model = None
    for n in sizes:
        sdata = sf.datasets.toy(n_spots=n, seed=0, spot_diameter_px=12.0, chunks=1024)
        genes = sdata.tables["table"].var_names[:N_GENES].tolist()

        def fit(sdata=sdata, genes=genes):
            return sf.tl.histospace(sdata, genes=genes, epochs=1, augment=False, val_fraction=0.0, device="cpu",
                                    return_model=True)

        if n <= train_max or model is None:
            t_fit, m_fit, model = measure(fit)
        else:  # above STFUSE_BENCH_TRAIN_MAX spots: predict with the model trained on the last smaller section
            t_fit = m_fit = float("nan")

        def predict(sdata=sdata, model=model):
            sf.tl.histospace(sdata, model=model, tta=False, device="cpu")

        sf.nn.map_cache.clear()  # the training tiles' maps are cached: predict as on a new slide

        t_pred, m_pred, _ = measure(predict)
        rows.append({"spots": n, "genes": N_GENES, "train 1 epoch (s)": t_fit, "train peak MiB": m_fit,
                     "predict (s)": t_pred, "predict peak MiB": m_pred,
                     "predict ms/spot": 1000 * t_pred / n, "predict tiles/s": n / t_pred,
                     "output MiB": n * N_GENES * 4 * 2 / 2**20})
        print(table(rows[-1:]), flush=True)
    body = table(rows) + (
        "\n\nToy sections (`sf.datasets.toy(n, spot_diameter_px=12)`), `sf.tl.histospace` defaults (tiles of 2 spot "
        "diameters resized to 160 px, frozen shipped tissue encoder, mlp head), one epoch, no augmentation, prediction without test-time augmentation (`tta=False`; the default "
        "`tta=True` costs 8× the encoder time at the same memory), CPU. Training time includes tile extraction and the encoder maps (computed "
        "once; above `cache_gb`=2 GiB they are recomputed per batch instead of cached). Prediction (the map cache cleared first, as for a new slide) extracts, "
        "encodes and predicts 128 tiles at a time, so its memory beyond the output (predictions stored twice: "
        "the new table and `obsm`, column 'output MiB') does not grow with the number of spots."
        + (f" Sections above {train_max} spots are predicted by the model trained on the largest smaller one "
           "(no training row: one epoch on 50k tiles costs about 10x the 5k row)." if train_max < max(sizes) else "")
    )
    append_results("HistoSPACE training / prediction time and memory", body,
                   f"STFUSE_BENCH_SIZES={','.join(map(str, sizes))}"
                   + (f" STFUSE_BENCH_TRAIN_MAX={train_max}" if train_max < max(sizes) else "")
                   + " python -m benchmarks.run histospace")


if __name__ == "__main__":
    main()
