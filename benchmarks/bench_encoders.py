"""Image encoders on HER2ST B4, C2–C6 at native resolution and with the images down-scaled to 0.3×.

For each section, each spot's patch of one spot diameter (100 µm) and of two spot spacings (400 µm)
is read at full resolution (0.69 µm/px). The 0.3× condition is what a user with a coarser scan
(≈ 2.3 µm/px, like a Visium ``hires`` image) has: the patch is down-sampled (antialiased) to 0.3× its
pixel count before the encoder resizes it to its input. Features:

- ``mean RGB``: the patch's mean colour (3-d);
- ``squidpy``: squidpy's ``summary + histogram + texture`` image features (105-d; the definitions of
  ``ImageContainer.features_summary/histogram/texture`` with their defaults, computed on the patch with
  numpy/scikit-image directly — equal to squidpy's output, checked on a patch in every run; patches
  larger than 160 px are down-sampled to 160 px first, which keeps the GLCM affordable);
- ``histospace``: the HistoSPACE autoencoder's pooled encoder (the previous default, 256-d, 128 px input);
- ``tissue``: the default (:class:`stfuse.nn.TissueCNN`, SimCLR with resolution augmentation, 384-d) at
  its input of 160 px, and at the 64 px it was trained on (``tissue (64 px)``; same weights).

Scores, per section and then averaged over the six: 5-fold stratified CV accuracy of a 5-NN classifier
and macro-F1 of a logistic-regression probe (C = 0.1), both on standardised features, against the
authors' expression clusters, as mean ± sd over the CV fold seeds (``--cv-seeds``, default 0 1 2); and a ridge regression from the features to the 785-gene Hist2ST panel
(log-normalised), leave one section out over C2–C6 and C2–C6 → B4 (trained on native-resolution
images, tested at native and at 0.3×), mean per-gene Pearson r. Embedding throughput (tiles/s) and
peak memory of the two CNN encoders on the same tiles.

``python -m benchmarks.run encoders`` (or ``python -m benchmarks.bench_encoders --weights FILE`` to
score a candidate ``tissue`` weights file).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.linear_model import LogisticRegression, RidgeCV
from sklearn.metrics import f1_score
from sklearn.model_selection import StratifiedKFold, cross_val_predict, cross_val_score
from sklearn.neighbors import KNeighborsClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

import stfuse as sf
from stfuse._spots import get_spots
from stfuse.im import iter_patches

from ._util import PeakRSS, append_results, table

SECTIONS = ("B4", "C2", "C3", "C4", "C5", "C6")
FACTORS = (1.0, 0.3)
PATCHES = {"1 diameter (100 µm)": (1.0, None), "2 spacings (400 µm)": (None, 2.0)}
STORE_MAX = 256
SQUIDPY_MAX = 160  # squidpy features of larger patches are computed on the patch down-sampled to this side


# --- squidpy's summary + histogram + texture features --------------------------------------------
def squidpy_features(patch: np.ndarray) -> np.ndarray:
    """squidpy ``features_summary`` + ``features_histogram`` + ``features_texture`` of one ``(3, s, s)`` uint8 patch."""
    from skimage.feature import graycomatrix, graycoprops

    arr = np.moveaxis(patch, 0, -1)
    out = []
    for c in range(3):
        a = arr[..., c]
        out += [np.quantile(a, q) for q in (0.9, 0.5, 0.1)] + [a.mean(), a.std()]
    v_range = (arr.min(), arr.max())
    for c in range(3):
        out += list(np.histogram(arr[..., c], bins=10, range=v_range)[0])
    angles = (0, np.pi / 4, np.pi / 2, 3 * np.pi / 4)
    for c in range(3):
        com = graycomatrix(arr[..., c], distances=(1,), angles=angles, levels=256)
        for p in ("contrast", "dissimilarity", "homogeneity", "correlation", "ASM"):
            out += list(graycoprops(com, prop=p)[0])
    return np.asarray(out, dtype=np.float64)


def check_squidpy(patch: np.ndarray) -> None:
    """Our squidpy features equal squidpy's own on ``patch``."""
    import squidpy as sq

    img = sq.im.ImageContainer(np.moveaxis(patch, 0, -1), layer="image")
    ref = {**img.features_summary("image"), **img.features_histogram("image"), **img.features_texture("image")}
    assert np.allclose(np.asarray(list(ref.values()), dtype=np.float64), squidpy_features(patch)), "squidpy mismatch"


# --- patches --------------------------------------------------------------------------------------
def section_patches(spots, size: float | None, spacings: float | None) -> tuple[np.ndarray, float]:
    """uint8 patches at full resolution (at most STORE_MAX px) and their native side in pixels."""
    side = size * spots.diameter if size is not None else spacings * spots.spacing()
    px = min(round(side), STORE_MAX)
    out = np.empty((spots.n_obs, 3, px, px), np.uint8)
    for b in iter_patches(spots, side, out_px=px, batch_size=128):
        out[b.index] = b.patches
    return out, side


def degrade(patches: np.ndarray, native_side: float, factor: float) -> np.ndarray:
    """The patches as read from an image down-scaled by ``factor``."""
    if factor >= 1.0:
        return patches
    n = max(2, round(native_side * factor))
    if n >= patches.shape[-1]:
        return patches
    t = F.interpolate(torch.from_numpy(patches).float(), size=(n, n), mode="bilinear", antialias=True,
                      align_corners=False)
    return t.round_().clamp_(0, 255).to(torch.uint8).numpy()


def encode(enc, patches: np.ndarray, batch: int = 128) -> np.ndarray:
    return np.concatenate([enc(patches[i:i + batch]) for i in range(0, len(patches), batch)])


# --- scores ---------------------------------------------------------------------------------------
def cluster_scores(X: np.ndarray, y: np.ndarray, seed: int = 0) -> tuple[float, float]:
    cv = StratifiedKFold(5, shuffle=True, random_state=seed)
    knn = float(cross_val_score(make_pipeline(StandardScaler(), KNeighborsClassifier(5)), X, y, cv=cv).mean())
    probe = make_pipeline(StandardScaler(), LogisticRegression(C=0.1, max_iter=2000))
    f1 = float(f1_score(y, cross_val_predict(probe, X, y, cv=cv), average="macro"))
    return knn, f1


def ridge_r(train_X: list[np.ndarray], train_Y: list[np.ndarray], test_X: np.ndarray, test_Y: np.ndarray) -> float:
    sc = StandardScaler().fit(np.concatenate(train_X))
    model = RidgeCV(alphas=np.logspace(-1, 5, 13)).fit(sc.transform(np.concatenate(train_X)), np.concatenate(train_Y))
    return float(np.nanmean(sf.metrics.pearson_per_gene(test_Y, model.predict(sc.transform(test_X)))))


def throughput(encoders: dict, patches: np.ndarray) -> list[dict]:
    rows = []
    for name, enc in encoders.items():
        encode(enc, patches[:64])  # warm-up
        with PeakRSS() as mem:
            t = time.perf_counter()
            encode(enc, patches, batch=64)
            dt = time.perf_counter() - t
        rows.append({"encoder": name, "input px": enc.input_px, "tiles": len(patches),
                     "tiles/s": len(patches) / dt, "peak extra MiB": mem.peak_mib,
                     "torch threads": torch.get_num_threads()})
    return rows


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--weights", default=None, help="tissue weights file (default: the shipped ones)")
    p.add_argument("--sections", nargs="+", default=list(SECTIONS))
    p.add_argument("--cv-seeds", type=int, nargs="+", default=[0, 1, 2], help="seeds of the 5-fold CV splits")
    p.add_argument("--no-write", action="store_true")
    p.add_argument("--features-only", action="store_true", help="compute and cache the features, score nothing")
    args = p.parse_args(argv if argv is not None else [])
    sf.settings.verbosity = 0
    torch.manual_seed(0)
    genes_all = (sf.datasets.her2st_path(download=False) / "hist2st_genes.txt").read_text().split()
    tissue = sf.im.get_encoder("tissue", weights=args.weights)
    encs = {"histospace": sf.im.get_encoder("histospace"), "tissue": tissue,
            "tissue (64 px)": dataclasses.replace(tissue, input_px=64)}
    feats: dict = {}  # (section, feature, patch, factor) -> X
    labels, expr, tput = {}, {}, []
    cache = sf.settings.cachedir / "bench_encoders"  # features of frozen extractors, reused across runs
    cache.mkdir(parents=True, exist_ok=True)
    cache_tag = {"mean RGB": "rgb", "squidpy summary+histogram+texture": "squidpy",
           **{name: f"{name.split()[0]}-{enc.checksum}-{enc.input_px}" for name, enc in encs.items()}}
    for s in args.sections:
        t0 = time.time()
        sdata = sf.datasets.her2st(s)
        spots = get_spots(sdata)
        labels[s] = spots.table.obs["cluster"].copy()
        expr[s] = spots.table
        for pname, (size, spacings) in PATCHES.items():
            native, side = section_patches(spots, size, spacings)
            if s == args.sections[0]:
                check_squidpy(native[0])
                if pname.startswith("1"):
                    tput = throughput(encs, native[:512])
            for f in FACTORS:
                P = degrade(native, side, f)
                for name in cache_tag:
                    path = cache / f"{s}_{cache_tag[name]}_{pname.split()[0]}{pname.split()[1][:3]}_{f}.npy"
                    if path.is_file():
                        feats[s, name, pname, f] = np.load(path)
                        continue
                    if name == "mean RGB":
                        X = P.reshape(len(P), 3, -1).mean(axis=2) / 255.0
                    elif name.startswith("squidpy"):
                        Q = P if P.shape[-1] <= SQUIDPY_MAX else degrade(P, P.shape[-1], SQUIDPY_MAX / P.shape[-1])
                        X = np.stack([squidpy_features(x) for x in Q])
                    else:
                        X = encode(encs[name], P)
                    np.save(path, X)
                    feats[s, name, pname, f] = X
        print(f"{s}: features in {time.time() - t0:.0f} s", flush=True)
        del sdata, spots
    if args.features_only:
        return
    genes = [g for g in genes_all if all(g in expr[s].var_names for s in args.sections)]
    Y = {s: sf.pp.prepare_expression(expr[s], genes=genes).X for s in args.sections}
    folds = [(t, [c for c in args.sections if c.startswith("C") and c != t]) for t in args.sections if t.startswith("C")]
    if "B4" in args.sections:
        folds.append(("B4", [c for c in args.sections if c.startswith("C")]))

    rows = []
    names = ["mean RGB", "squidpy summary+histogram+texture", "histospace", "tissue (64 px)", "tissue"]
    for name in names:
        for pname in PATCHES:
            row = {"features": name, "patch": pname}
            for f in FACTORS:
                tag = "native" if f == 1.0 else f"{f}x"
                sc = np.zeros((len(args.cv_seeds), len(args.sections), 2))  # (CV seed, section, kNN/F1)
                for i, seed in enumerate(args.cv_seeds):
                    for j, s in enumerate(args.sections):
                        keep = labels[s].notna().to_numpy()
                        y = labels[s][keep].astype(str).to_numpy()
                        sc[i, j] = cluster_scores(feats[s, name, pname, f][keep], y, seed)
                by_seed = sc.mean(axis=1)  # mean over sections, per CV seed
                row[f"kNN acc {tag}"] = f"{by_seed[:, 0].mean():.3f} ± {by_seed[:, 0].std():.3f}"
                row[f"probe F1 {tag}"] = f"{by_seed[:, 1].mean():.3f} ± {by_seed[:, 1].std():.3f}"
            for f in FACTORS:
                tag = "native" if f == 1.0 else f"{f}x"
                rs = [ridge_r([feats[t, name, pname, 1.0] for t in tr], [Y[t] for t in tr], feats[te, name, pname, f],
                              Y[te]) for te, tr in folds]
                row[f"ridge r {tag}"] = float(np.mean(rs))
            rows.append(row)
            print(row, flush=True)
    body = (
        f"Sections {', '.join(args.sections)}; author clusters (`obs['cluster']`); {len(genes)} panel genes. "
        "Scores are means over the sections (kNN: 5-fold 5-NN accuracy; probe: 5-fold logistic-regression "
        f"macro-F1, C=0.1; ± sd over the CV seeds {args.cv_seeds}; ridge: mean per-gene r, LOSO over C2–C6 and C2–C6→B4, trained at native resolution). "
        "0.3x: test patches read as from an image down-scaled to 0.3x."
        + (f" tissue weights: `{args.weights}`." if args.weights else "")
        + "\n\n" + table(rows) + f"\n\nThroughput on the {tput[0]['tiles']} one-diameter patches of "
        + f"{args.sections[0]} (uint8 -> features, batches of 64):\n\n" + table(tput)
    )
    print(body)
    if not args.no_write:
        cmd = "python -m benchmarks.bench_encoders" + (" " + " ".join(argv) if argv else "")
        append_results("Image encoders at native and 0.3x resolution (HER2ST B4, C2–C6)", body, cmd)


if __name__ == "__main__":
    main(sys.argv[1:])
