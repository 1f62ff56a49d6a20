"""How far the pathologist labels of the 7 HER2ST sections can be reached from expression (not part of ``make bench``).

The acceptance targets of SENCA (mean ARI on the 7 pathologist-labelled sections, gene-only) and SpaCRD
(leave-one-patient-out AUC) are set on these labels. This script measures what the labels allow, with the
labels themselves as a reference (they choose nothing in the tools):

``domains``  per section, on two embeddings (the smoothed-PCA baseline of ``benchmarks.eval_senca`` and
             ``sf.tl.senca``'s gene-only S, defaults, ``--seeds``), the ARI of
             - k-means (the tool's clusterer, ``n_clusters`` = number of classes);
             - k-means started at the true class centroids (one run): where the k-means objective settles
               near the truth. When this is far below the truth (ARI 1), the pathologist partition is not a
               k-means optimum of the embedding, and no initialisation or seed finds it;
             - each spot given the class of the nearest true centroid (supervised, in-sample);
             - logistic regression with 5-fold spatial-block cross-validation (3 × 3 blocks; supervised).
``cancer``   per leave-one-patient-out fold, logistic regression on the genes SpaCRD uses (per-section
             min-max, mean over each spot and its 6 nearest spots, ``C = 0.01``) scored by AUC:
             - transfer: trained on the 6 other sections (what SpaCRD does);
             - within: trained on the held-out section's own labels, 5-fold spatial-block CV;
             - within + references: the references plus the section's own labels from the other blocks;
             - within, random spots: 5-fold CV over random spots (neighbours of a test spot are in training).
             When adding the section's own labels from other blocks does not lift the AUC above transfer,
             the fold's labels do not follow one expression rule across the section, and no transfer method
             is expected to reach the random-spot number.

Run from the project root::

    STFUSE_DATA=../shared/data PYTHONPATH=src python -m benchmarks.ceilings_her2st domains --seeds 0 1 2
    STFUSE_DATA=../shared/data PYTHONPATH=src python -m benchmarks.ceilings_her2st cancer
"""

from __future__ import annotations

import argparse
import sys
import warnings
from typing import Any

import numpy as np

import stfuse as sf

from ._util import append_results, table
from .eval_senca import LABELLED, _truth, baseline_embedding
from .spacrd_her2st import _labelled, _prep
from .spacrd_her2st import _truth as _cancer_truth


def _blocks(xy: np.ndarray, n: int = 3) -> np.ndarray:
    """Spatial block (``n`` × ``n`` grid over the section's extent) of each spot."""
    lo, span = xy.min(0), np.ptp(xy, 0) / n + 1e-9
    b = np.floor((xy - lo) / span).astype(int).clip(0, n - 1)
    return b[:, 0] * n + b[:, 1]


def _domain_row(P: np.ndarray, truth: np.ndarray, ok: np.ndarray, xy: np.ndarray, k: int, seed: int) -> dict[str, float]:
    """ARI on the labelled spots ``ok``; the clusterings partition every spot, as the tools do."""
    from sklearn.cluster import KMeans
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import GroupKFold, cross_val_predict

    from stfuse.tl._clustering import cluster

    y = truth[ok]
    classes = np.unique(y)
    centres = np.stack([P[ok][y == c].mean(0) for c in classes])
    nearest = ((P[:, None] - centres[None]) ** 2).sum(-1).argmin(1)
    settled = KMeans(len(classes), init=centres, n_init=1).fit(P).labels_
    cv = cross_val_predict(LogisticRegression(C=0.1, max_iter=3000), P[ok], y, cv=GroupKFold(5), groups=_blocks(xy[ok]))
    ari = sf.metrics.ari
    return {"k-means": ari(y, cluster(P, k, method="kmeans", random_state=seed)[0][ok]),
            "k-means from the true centroids": ari(y, settled[ok]), "nearest true centroid": ari(y, nearest[ok]),
            "LR, spatial-block CV": ari(y, cv)}


def domains(seeds: list[int]) -> str:
    rows: dict[str, dict[str, list[dict[str, float]]]] = {}
    for section in LABELLED:
        sd = sf.datasets.her2st(section, image=False)
        t = sd.tables["table"]
        truth, ok, k = _truth(sd, True)
        xy = np.asarray(t.obsm["spatial"], float)
        for seed in seeds:
            embs = {"PCA20(2000 HVG)+smooth4": baseline_embedding(sd, seed)}
            sf.tl.senca(sd, n_clusters=k, image=False, random_state=seed)
            embs["SENCA S (image=False)"] = np.asarray(t.obsm["X_senca"])
            for name, P in embs.items():
                r = _domain_row(P, truth, ok, xy, k, seed)
                rows.setdefault(name, {}).setdefault(section, []).append(r)
        print(section, {n: {m: round(float(np.mean([r[m] for r in v[section]])), 3) for m in v[section][0]}
                        for n, v in rows.items()}, flush=True)
    out = []
    for name, by in rows.items():
        for m in next(iter(by.values()))[0]:
            per = {s: float(np.mean([r[m] for r in v])) for s, v in by.items()}
            out.append({"embedding": name, "partition": m, "mean ARI": float(np.mean(list(per.values()))), **per})
    return ("ARI against the pathologist labels (undetermined spots left out; k = number of classes), seed means "
            f"over seeds {seeds}. Every partition but the last covers all spots (as the tools do) and is scored on "
            "the labelled ones; the true centroids are the class means of the labelled spots. Only the first row of "
            "each embedding is unsupervised; the others use the labels as a reference.\n\n" + table(out))


def cancer() -> str:
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import GroupKFold, StratifiedKFold

    data = {s: _labelled(s, "normal") for s in LABELLED}
    out = []
    for held in LABELLED:
        refs = [data[s] for s in LABELLED if s != held]
        genes = sf.data.shared_variable_genes([r.tables["table"] for r in refs], data[held].tables["table"],
                                              n_top_genes=3000)

        def labelled_spots(sd: Any, genes: list[str] = genes) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
            """Inputs, labels and centres of the labelled spots of ``sd``."""
            y, ok = _cancer_truth(sd, "cancer")
            return _prep(sd, genes, smooth=True)[ok], y, np.asarray(sd.tables["table"].obsm["spatial"], float)[ok]

        Xr, yr, _ = map(np.concatenate, zip(*(labelled_spots(r) for r in refs)))
        X, y, xy = labelled_spots(data[held])
        groups = _blocks(xy)

        def lr(a: np.ndarray, b: np.ndarray) -> LogisticRegression:
            return LogisticRegression(C=0.01, max_iter=3000).fit(a, b)

        row = {"fold": held, "cancer share": float(y.mean()),
               "transfer": roc_auc_score(y, lr(Xr, yr).decision_function(X))}
        for name, split in (("block", GroupKFold(5).split(X, y, groups)),
                            ("random", StratifiedKFold(5, shuffle=True, random_state=0).split(X, y))):
            within, both = np.zeros(len(y)), np.zeros(len(y))
            for tr, te in split:
                if len(np.unique(y[tr])) == 2:
                    within[te] = lr(X[tr], y[tr]).decision_function(X[te])
                both[te] = lr(np.vstack([Xr, X[tr]]), np.concatenate([yr, y[tr]])).decision_function(X[te])
            row[f"within, {name} CV"] = roc_auc_score(y, within)
            row[f"within + references, {name} CV"] = roc_auc_score(y, both)
        out.append(row)
        print(row, flush=True)
    out.append({"fold": "mean", **{k: float(np.mean([r[k] for r in out])) for k in out[0] if k != "fold"}})
    return ("AUC of cancer (invasive cancer or cancer in situ) against the rest, logistic regression (C = 0.01) on the "
            "genes SpaCRD uses (3000 shared variable genes of the references), per-section min-max, mean over each "
            "spot and its 6 nearest spots. 'block' CV: 5 folds of a 3 x 3 spatial grid; a fold without both classes "
            "in training scores 0 for 'within'.\n\n" + table(out))


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("mode", choices=["domains", "cancer"])
    p.add_argument("--seeds", type=int, nargs="*", default=[0, 1, 2])
    args = p.parse_args(argv)
    sf.settings.verbosity = 0
    warnings.filterwarnings("ignore")
    body = domains(args.seeds) if args.mode == "domains" else cancer()
    title = {"domains": "Ceilings: pathologist domains from expression (ARI)",
             "cancer": "Ceilings: pathologist cancer labels across and within sections (AUC)"}[args.mode]
    append_results(title, body, "python -m benchmarks.ceilings_her2st " + " ".join(argv if argv is not None else sys.argv[1:]))


if __name__ == "__main__":
    main()
