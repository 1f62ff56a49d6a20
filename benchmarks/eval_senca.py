"""Evaluate sf.tl.senca (ARI) on the toy section and HER2ST against simple baselines in the same run.

``python -m benchmarks.eval_senca [--parts toy labelled author] [--seeds 0 1 2] [--ablation]
[--config '{"contrast": "shared"}'] [--no-append]``

- toy (``sf.datasets.toy``, 900 spots, truth ``obs["region"]``, 4 regions): fused vs ``image=False``;
- the 7 pathologist-labelled sections (no image here; ``image=False``): ``n_clusters`` = number of
  non-"undetermined" classes, ARI on the labelled spots;
- B4, C2–C6 (with image): fused vs ``image=False`` against the authors' clusters ``obs["cluster"]``.

Baselines on the same sections and seeds: PCA (20 components) of the 2000 most variable genes
(scanpy ``seurat`` flavour on log-normalised counts), averaged over each spot and its 4 nearest spots,
then k-means or a Gaussian mixture (the strongest simple baselines we found; smoothing matters, the
clusterer less). Every number is the mean ± sd over seeds of the per-section mean ARI.
``--ablation`` adds rows that switch off one part of SENCA at a time (toy and B4/C2–C6, fused).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings

import numpy as np

import stfuse as sf
from stfuse import _keys as K
from stfuse.data import pca
from stfuse.im._encoders import DEFAULT_ENCODER
from stfuse.tl._clustering import cluster

from ._util import append_results, table

LABELLED = ("B1", "C1", "D1", "E1", "F1", "G2", "H1")
SECTIONS = ("B4", "C2", "C3", "C4", "C5", "C6")
#: one change at a time from the defaults
ABLATIONS = {
    "contrast on R, H (default)": {},
    "contrast on two views of S": {"contrast": "shared"},
    "no contrast (MSE only)": {"contrast": "none"},
    "no reconstruction (λ = 0)": {"lam": 0.0},
    "spot-level contrast (not hierarchical)": {"hierarchical": False},
    "no cross-attention": {"cross_attention": False},
    "reconstruct each spot's own data (target_hops = 0)": {"target_hops": 0},
    "S reconstructs expression only (recon_image_weight = 0)": {"recon_image_weight": 0.0},
    "paper literal (40 steps, Ward, reconstruct R⊕H)": {"steps": 40, "cluster_method": "ward", "reconstruct": "input",
                                                      "target_pcs": None, "propagation_hops": 1},
}


def _truth(sdata, labelled: bool) -> tuple[np.ndarray, np.ndarray, int]:
    t = sdata.tables["table"]
    col = t.obs[K.LABEL if labelled else K.CLUSTER]
    lab = col.astype(str).to_numpy().astype(str)
    if labelled:
        ok = ~np.isin(np.char.lower(lab), [u.lower() for u in K.UNDETERMINED] + ["nan", "none"])
    else:
        ok = col.notna().to_numpy()
    return lab, ok, len(np.unique(lab[ok]))


def baseline_embedding(sdata, seed: int) -> np.ndarray:
    """PCA 20 of 2000 HVG, averaged over each spot and its 4 nearest spots."""
    t = sdata.tables["table"]
    X = sf.pp.prepare_expression(t, min_counts=10, n_top_genes=2000, flavor="seurat").X
    P, _ = pca(X, 20, seed)
    nbr, _ = sf.gr.knn(np.asarray(t.obsm["spatial"], float), 4)
    ok = nbr >= 0
    return (P + np.where(ok[..., None], P[nbr.clip(0)], 0).sum(1)) / (1 + ok.sum(1))[:, None]


def baseline(sdata, k: int, seed: int, method: str) -> np.ndarray:
    """The smoothed-PCA baseline (:func:`baseline_embedding`), then ``method``."""
    return cluster(baseline_embedding(sdata, seed), k, method=method, random_state=seed)[0]


def _score(sdata, k, truth, ok, seeds, rows_by_name, name, run):
    for seed in seeds:
        t0 = time.perf_counter()
        labels = run(seed)
        rows_by_name.setdefault(name, []).append((seed, sf.metrics.ari(truth[ok], np.asarray(labels)[ok]),
                                                   time.perf_counter() - t0))


def evaluate(part: str, seeds: list[int], configs: dict[str, dict], baselines: bool) -> dict[str, dict]:
    """``{method: {section: [(seed, ari, seconds), ...]}}`` for one part of the benchmark."""
    if part == "toy":
        sections = {"toy900": sf.datasets.toy(n_spots=900, seed=0)}
    else:
        sections = {s: sf.datasets.her2st(s, image=part == "author") for s in (LABELLED if part == "labelled" else SECTIONS)}
    out: dict[str, dict] = {}
    for name, sdata in sections.items():
        t = sdata.tables["table"]
        if part == "toy":
            truth, ok, k = t.obs["region"].astype(str).to_numpy(), np.ones(t.n_obs, bool), 4
        else:
            truth, ok, k = _truth(sdata, part == "labelled")
        per: dict[str, list] = {}
        for i, (label, kw) in enumerate(configs.items()):
            for image in ((False,) if part == "labelled" else (True, False) if i == 0 else (True,)):
                key = f"SENCA {'fused' if image else 'image=False'}" + (f" · {label}" if i else "")

                def run(seed, image=image, kw=kw, sdata=sdata, k=k):
                    sf.tl.senca(sdata, n_clusters=k, image=image, random_state=seed, key_added="senca", **kw)
                    return sdata.tables["table"].obs["senca"].to_numpy()

                _score(sdata, k, truth, ok, seeds, per, key, run)
        if baselines and part != "toy":
            for method in ("kmeans", "gmm"):
                _score(sdata, k, truth, ok, seeds, per, f"PCA20(2000 HVG)+smooth4+{method}",
                       lambda seed, m=method, sdata=sdata, k=k: baseline(sdata, k, seed, m))
        for key, vals in per.items():
            out.setdefault(key, {})[name] = vals
        print(name, {key: round(float(np.mean([v[1] for v in vals])), 3) for key, vals in per.items()}, flush=True)
    return out


def summarise(results: dict[str, dict], seeds: list[int]) -> list[dict]:
    rows = []
    for method, by_section in results.items():
        per_seed = [np.mean([dict((s, a) for s, a, _ in v)[seed] for v in by_section.values()]) for seed in seeds]
        secs = np.mean([x[2] for v in by_section.values() for x in v])
        rows.append({"method": method, "mean ARI": f"{np.mean(per_seed):.3f} ± {np.std(per_seed):.3f}",
                     "median (seed-mean)": float(np.median([np.mean([x[1] for x in v]) for v in by_section.values()])),
                     **{s: float(np.mean([x[1] for x in v])) for s, v in by_section.items()}, "s/run": float(secs)})
    return rows


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--parts", nargs="*", default=["toy", "labelled", "author"], choices=["toy", "labelled", "author"])
    p.add_argument("--seeds", type=int, nargs="*", default=[0, 1, 2])
    p.add_argument("--config", default="{}", help="JSON of sf.tl.senca keyword arguments for every SENCA run")
    p.add_argument("--ablation", action="store_true", help="one-change-at-a-time variants (toy, author sections)")
    p.add_argument("--no-append", action="store_true")
    args = p.parse_args(argv)
    sf.settings.verbosity = 0
    warnings.filterwarnings("ignore")
    base = json.loads(args.config)
    t0 = time.perf_counter()
    parts = []
    for part in args.parts:
        configs = {"defaults": base}
        if args.ablation and part != "labelled":  # one change at a time; the first row (defaults) also gene-only
            configs = {label: {**base, **kw} for label, kw in ABLATIONS.items()}
        res = evaluate(part, args.seeds, configs, baselines=not args.ablation)
        title = {"toy": "Toy (900 spots, 4 regions)", "labelled": "7 pathologist-labelled sections, gene-only",
                 "author": "B4, C2–C6 vs the authors' clusters"}[part]
        parts.append(f"{title}:\n\n" + table(summarise(res, args.seeds)))
    body = (f"sf.tl.senca defaults{' + ' + json.dumps(base) if base else ''} (encoder `{base.get('encoder', DEFAULT_ENCODER)}`), seeds {args.seeds}; "
            f"mean ± sd over seeds of the mean ARI over sections; per-section columns are seed means. Total "
            f"{time.perf_counter() - t0:.0f} s.\n\n" + "\n\n".join(parts))
    command = "python -m benchmarks.eval_senca " + " ".join(argv if argv is not None else sys.argv[1:])
    if args.no_append:
        print(body)
    else:
        append_results("SENCA-st: toy, pathologist-labelled sections, author clusters (ARI)" +
                       (" — ablation" if args.ablation else ""), body, command.strip())


if __name__ == "__main__":
    main()
