"""Evaluate sf.tl.senca (ARI) on the toy section and HER2ST, against simple baselines, in one run.

``python -m benchmarks.eval_senca [--toy-spots 900] [--labelled B1 C1 ...] [--sections B4 C2 ...]
[--epochs 10] [--seeds 0] [--no-append]``

- toy (``sf.datasets.toy``, truth ``obs["region"]``, 4 regions): SENCA fused vs ``image=False`` vs an
  image-only clustering (Ward on the first 20 principal components of the standardised image features);
- the 7 pathologist-labelled sections (no image here; ``image=False``): ``n_clusters`` = number of
  non-"undetermined" classes, ARI on the labelled spots; compared with scanpy PCA + Leiden (resolution
  bisected to give ``n_clusters``) and with PCA + 4-neighbour smoothing + KMeans (the same genes);
- B4, C2–C6 (with image): fused vs ``image=False`` against the authors' clusters ``obs["cluster"]``.

Image features (``encoder="histospace"``) are computed once per section inside the run.
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings

import numpy as np

import stfuse as sf
from stfuse import _keys as K

from ._util import append_results, measure, table

LABELLED = ("B1", "C1", "D1", "E1", "F1", "G2", "H1")
SECTIONS = ("B4", "C2", "C3", "C4", "C5", "C6")


def _labelled(obs_col) -> tuple[np.ndarray, np.ndarray, int]:
    lab = obs_col.astype(str).to_numpy()
    ok = ~np.isin(np.char.lower(lab.astype(str)), [u.lower() for u in K.UNDETERMINED] + ["nan", "none"])
    return lab, ok, len(np.unique(lab[ok]))


def _pca(X: np.ndarray, n: int = 50) -> np.ndarray:
    from sklearn.decomposition import PCA

    return PCA(n_components=min(n, *X.shape) - 1, random_state=0).fit_transform(X)


def leiden_k(X: np.ndarray, k: int, seed: int = 0) -> np.ndarray:
    """scanpy PCA + neighbours + Leiden, resolution bisected to give ``k`` clusters (closest found)."""
    import anndata as ad
    import scanpy as sc

    a = ad.AnnData(X.astype(np.float32))
    sc.pp.pca(a, n_comps=min(50, X.shape[0] - 1, X.shape[1] - 1), random_state=seed)
    sc.pp.neighbors(a, random_state=seed)
    lo, hi, best, best_gap = 0.01, 5.0, None, None
    for _ in range(30):
        r = (lo + hi) / 2
        sc.tl.leiden(a, resolution=r, random_state=seed, flavor="igraph", n_iterations=2, directed=False)
        n = a.obs["leiden"].nunique()
        if best_gap is None or abs(n - k) < best_gap:
            best, best_gap = a.obs["leiden"].to_numpy(), abs(n - k)
        if n == k:
            break
        lo, hi = (r, hi) if n < k else (lo, r)
    return best


def smooth_kmeans(X: np.ndarray, xy: np.ndarray, k: int, seed: int = 0) -> np.ndarray:
    """PCA (50) averaged over each spot and its 4 nearest spots, then KMeans."""
    from sklearn.cluster import KMeans

    P = _pca(X)
    nbr, _ = sf.gr.knn(xy, 4)
    ok = nbr >= 0
    Ps = (P + np.where(ok[..., None], P[nbr.clip(0)], 0).sum(1)) / (1 + ok.sum(1))[:, None]
    return KMeans(k, n_init=10, random_state=seed).fit_predict(Ps)


def _senca(sdata, k: int, *, image: bool, epochs: int, seed: int, key: str):
    return measure(lambda: sf.tl.senca(sdata, n_clusters=k, image=image, epochs=epochs, random_state=seed,
                                       key_added=key))


def toy_rows(n_spots: int, epochs: int, seeds: list[int]) -> list[dict]:
    from sklearn.cluster import AgglomerativeClustering

    rows = []
    sdata = sf.datasets.toy(n_spots=n_spots, seed=0)
    t = sdata.tables["table"]
    for seed in seeds:
        s1, m1, _ = _senca(sdata, 4, image=True, epochs=epochs, seed=seed, key="fused")
        s2, m2, _ = _senca(sdata, 4, image=False, epochs=epochs, seed=seed, key="gene")
        F = np.asarray(t.obsm[t.uns["fused"]["params"]["image_features"]])
        Fz = (F - F.mean(0)) / (F.std(0) + 1e-6)
        img = AgglomerativeClustering(4, linkage="ward").fit_predict(_pca(Fz, 21))
        rows.append({"section": f"toy{n_spots}", "seed": seed,
                     "SENCA fused": sf.metrics.ari(t.obs["region"], t.obs["fused"]),
                     "SENCA image=False": sf.metrics.ari(t.obs["region"], t.obs["gene"]),
                     "image-only (Ward, PCA 20)": sf.metrics.ari(t.obs["region"], img),
                     "s fused": s1, "s gene": s2, "peak MiB": max(m1, m2)})
        print(rows[-1], flush=True)
    return rows


def labelled_rows(sections: list[str], epochs: int, seeds: list[int]) -> list[dict]:
    rows = []
    for s in sections:
        sdata = sf.datasets.her2st(s)
        t = sdata.tables["table"]
        lab, ok, k = _labelled(t.obs[K.LABEL])
        X = sf.pp.prepare_expression(t, min_counts=10, n_top_genes=500, flavor="seurat").X
        xy = np.asarray(t.obsm["spatial"], float)
        row = {"section": s, "n_clusters": k, "spots": int(ok.sum())}
        aris = []
        for seed in seeds:
            sec, _, _ = _senca(sdata, k, image=False, epochs=epochs, seed=seed, key="senca")
            aris.append(sf.metrics.ari(lab[ok], t.obs["senca"].to_numpy()[ok]))
        row["SENCA image=False"] = float(np.mean(aris))
        row["PCA+leiden"] = sf.metrics.ari(lab[ok], leiden_k(X, k)[ok])
        row["PCA+smooth4+KMeans"] = sf.metrics.ari(lab[ok], smooth_kmeans(X, xy, k)[ok])
        row["s SENCA"] = sec
        rows.append(row)
        print(row, flush=True)
    return rows


def author_rows(sections: list[str], epochs: int, seeds: list[int]) -> list[dict]:
    rows = []
    for s in sections:
        sdata = sf.datasets.her2st(s)
        t = sdata.tables["table"]
        truth = t.obs[K.CLUSTER]
        ok = truth.notna().to_numpy()
        k = int(truth[ok].nunique())
        row = {"section": s, "n_clusters": k}
        for image, name in ((True, "SENCA fused"), (False, "SENCA image=False")):
            aris, secs = [], []
            for seed in seeds:
                sec, _, _ = _senca(sdata, k, image=image, epochs=epochs, seed=seed, key="senca")
                aris.append(sf.metrics.ari(truth[ok], t.obs["senca"][ok]))
                secs.append(sec)
            row[name], row[f"s {name.split()[-1]}"] = float(np.mean(aris)), float(np.mean(secs))
        rows.append(row)
        print(row, flush=True)
    return rows


def _summary(rows: list[dict], cols: list[str]) -> list[dict]:
    return [{"method": c, "mean ARI": float(np.mean([r[c] for r in rows])),
             "median ARI": float(np.median([r[c] for r in rows])), "sections": len(rows)} for c in cols]


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--toy-spots", type=int, default=900)
    p.add_argument("--labelled", nargs="*", default=list(LABELLED))
    p.add_argument("--sections", nargs="*", default=list(SECTIONS))
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--seeds", type=int, nargs="*", default=[0])
    p.add_argument("--no-append", action="store_true")
    args = p.parse_args(argv)
    sf.settings.verbosity = 0
    warnings.filterwarnings("ignore")
    t0 = time.perf_counter()
    parts = []
    if args.toy_spots:
        parts.append("Toy (truth `obs['region']`, 4 regions):\n\n" + table(toy_rows(args.toy_spots, args.epochs, args.seeds)))
    if args.labelled:
        rows = labelled_rows(args.labelled, args.epochs, args.seeds)
        cols = ["SENCA image=False", "PCA+leiden", "PCA+smooth4+KMeans"]
        parts.append("Pathologist-labelled sections (no image; ARI on labelled spots, n_clusters = number of "
                     "classes):\n\n" + table(rows) + "\n\n" + table(_summary(rows, cols)))
    if args.sections:
        rows = author_rows(args.sections, args.epochs, args.seeds)
        parts.append("Sections with image, truth = authors' clusters `obs['cluster']`:\n\n" + table(rows) + "\n\n"
                     + table(_summary(rows, ["SENCA fused", "SENCA image=False"])))
    body = (f"sf.tl.senca defaults (encoder `histospace`, n_top_genes=500, n_neighs=4, lr 5e-4), epochs={args.epochs}, "
            f"seeds={args.seeds} (ARI averaged over seeds); seconds per sf.tl.senca call (fused includes computing "
            f"the image features). Total {time.perf_counter() - t0:.0f} s.\n\n" + "\n\n".join(parts))
    command = "python -m benchmarks.eval_senca " + " ".join(argv if argv is not None else sys.argv[1:])
    if args.no_append:
        print(body)
    else:
        append_results("SENCA-st: toy, pathologist-labelled sections, author clusters (ARI)", body, command.strip())


if __name__ == "__main__":
    main()
