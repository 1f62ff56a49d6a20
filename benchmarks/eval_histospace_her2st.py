"""HistoSPACE on HER2ST: per-gene Pearson r across spots, next to ridge regression on image embeddings.

Folds: leave one section out over C2–C6 (train on the other four), and train on C2–C6 → predict B4
(another patient). Genes: the 785-gene panel of the Hist2ST line of work, plus ERBB2 (HER2; not in the
panel, asked for by the acceptance; ``--extra-genes`` to change). For every fold both methods
see the same training sections; neither ever sees the held-out section's expression:

- HistoSPACE: ``sf.tl.histospace(target, references, genes=panel)`` (defaults: frozen shipped
  autoencoder encoder, Huber loss, Adam 1e-4, batch 32, up to 50 epochs, model selection on a
  spatial-block validation split of the training sections).
- Ridge: ridge regression of the same targets on the default ``sf.im`` embedding (``"histospace"``,
  256-d), features standardised on the training sections, alpha chosen by leave-one-section-out
  cross-validation within the training sections (mean per-gene r).

r is computed per gene across the held-out section's spots (``sf.metrics.gene_correlation``); genes
constant in the held-out section (NaN r) are excluded from mean/median and counted.

Usage::

    STFUSE_DATA=../shared/data python -m benchmarks.eval_histospace_her2st [--epochs 50] [--folds C2 B4]
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

import stfuse as sf
from stfuse._spots import get_spots

from ._util import append_results, table

C = ("C2", "C3", "C4", "C5", "C6")
FOLDS = {**{s: tuple(c for c in C if c != s) for s in C}, "B4": C}
GENES_OF_INTEREST = ("GNAS", "HLA-B", "ERBB2")
ALPHAS = np.logspace(-1, 5, 13)


def panel() -> list[str]:
    path = sf.datasets.her2st_path(download=False) / "hist2st_genes.txt"
    return [g.strip() for g in path.read_text().splitlines() if g.strip()]


_FEATURES: dict[int, np.ndarray] = {}


def _features(sdata, stain: str | None) -> np.ndarray:
    key = id(sdata)
    if key not in _FEATURES:
        _FEATURES[key] = sf.im.image_features(get_spots(sdata), "histospace", stain=stain, device="cpu").X
    return _FEATURES[key]


def ridge(train: list, test, genes: list[str], stain: str | None = None) -> pd.Series:
    """Ridge on standardised image embeddings; alpha by leave-one-section-out CV on the training sections."""
    from sklearn.linear_model import Ridge

    Xs = [_features(s, stain) for s in train]
    Ys = [sf.pp.prepare_expression(s.tables["table"], genes=genes).X for s in train]

    def fit_predict(Xtr, Ytr, Xte, alpha):
        mu, sd = Xtr.mean(0), Xtr.std(0) + 1e-8
        m = Ridge(alpha=alpha).fit((Xtr - mu) / sd, Ytr)
        return m.predict((Xte - mu) / sd)

    scores = []
    for alpha in ALPHAS:
        rs = []
        for i in range(len(train)):
            Xtr = np.concatenate([x for j, x in enumerate(Xs) if j != i])
            Ytr = np.concatenate([y for j, y in enumerate(Ys) if j != i])
            rs.append(np.nanmean(sf.metrics.pearson_per_gene(Ys[i], fit_predict(Xtr, Ytr, Xs[i], alpha))))
        scores.append(np.mean(rs))
    alpha = float(ALPHAS[int(np.argmax(scores))])
    Yte = sf.pp.prepare_expression(test.tables["table"], genes=genes).X
    r = sf.metrics.pearson_per_gene(Yte, fit_predict(np.concatenate(Xs), np.concatenate(Ys), _features(test, stain), alpha))
    out = pd.Series(r, index=genes)
    out.attrs["alpha"] = alpha
    return out


def _summary(r: pd.Series) -> dict[str, float]:
    v = r.to_numpy(dtype=float)
    out = {"mean": float(np.nanmean(v)), "median": float(np.nanmedian(v)), "nan": int(np.isnan(v).sum())}
    for g in GENES_OF_INTEREST:
        out[g] = float(r.get(g, np.nan))
    return out


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--folds", nargs="+", default=list(FOLDS), choices=list(FOLDS))
    p.add_argument("--epochs", type=int, default=50)
    p.add_argument("--augment", type=int, default=1)
    p.add_argument("--tta", type=int, default=1)
    p.add_argument("--stain", default=None)
    p.add_argument("--finetune", type=int, default=0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--extra-genes", nargs="*", default=["ERBB2"], help="genes predicted besides the panel")
    p.add_argument("--no-write", action="store_true", help="print only, do not append to RESULTS.md")
    p.add_argument("--rows-out", default=None, help="also save this run's per-fold rows and per-gene r (JSON)")
    p.add_argument("--combine", nargs="+", default=None, metavar="JSON",
                   help="do not run: report the folds saved by earlier --rows-out runs (e.g. folds run in parallel)")
    args = p.parse_args(argv)
    if args.combine:
        saved = [json.loads(Path(f).read_text()) for f in args.combine]
        rows = [r for s in saved for r in s["rows"]]
        for r in rows:  # share of the genes HistoSPACE predicts better than ridge
            pg = next(pd.DataFrame(s["per_gene"][r["test"]]) for s in saved if r["test"] in s.get("per_gene", {}))
            r["HS > ridge (genes)"] = float((pg["histospace"] > pg["ridge"]).sum() / pg.dropna().shape[0])
        rows.sort(key=lambda r: list(FOLDS).index(r["test"]))
        base = "STFUSE_DATA=../shared/data python -m benchmarks.eval_histospace_her2st"
        runs = [f"{base} --epochs {a['epochs']} --augment {a['augment']} --tta {a['tta']} --seed {a['seed']} "
                f"--folds {' '.join(a['folds'])} --extra-genes {' '.join(a.get('extra_genes', []))} --rows-out {f}" for f, a in zip(args.combine, (s["args"] for s in saved))]
        cmd = " ; ".join(runs) + f" (in parallel), then {base} " + shlex.join(argv or sys.argv[1:])
        return _report(rows, argparse.Namespace(**{"extra_genes": [], **saved[0]["args"]}), cmd, args.no_write)
    sf.settings.verbosity = 1
    genes = panel()
    genes += [g for g in args.extra_genes if g not in genes]
    sections = {s: sf.datasets.her2st(s) for s in sorted({*args.folds, *C})}
    rows, per_gene = [], {}
    for test in args.folds:
        refs = [sections[s] for s in FOLDS[test]]
        target = sections[test]
        t0 = time.perf_counter()
        sf.tl.histospace(target, refs, genes=genes, epochs=args.epochs, augment=bool(args.augment),
                         tta=bool(args.tta), stain=args.stain, finetune_encoder=bool(args.finetune),
                         random_state=args.seed, device="cpu")
        t_hs = time.perf_counter() - t0
        hs = sf.metrics.gene_correlation(target)["r"].reindex(genes)
        info = target.tables["table"].uns["histospace"]
        t0 = time.perf_counter()
        rd = ridge(refs, target, genes, args.stain)
        t_rd = time.perf_counter() - t0
        per_gene[test] = pd.DataFrame({"histospace": hs, "ridge": rd})
        a, b = _summary(hs), _summary(rd)
        best = info["history"].get("best_epoch", [np.nan])
        rows.append({"test": test, "train": "+".join(FOLDS[test]), "spots": int(target.tables["table"].n_obs),
                     "HS mean": a["mean"], "HS median": a["median"], **{f"HS {g}": a[g] for g in GENES_OF_INTEREST},
                     "ridge mean": b["mean"], "ridge median": b["median"],
                     **{f"ridge {g}": b[g] for g in GENES_OF_INTEREST}, "NaN genes": a["nan"],
                     "HS best epoch": float(np.asarray(best)[0]), "ridge alpha": rd.attrs["alpha"],
                     "HS s": round(t_hs), "ridge s": round(t_rd)})
        print(table(rows[-1:]), flush=True)
        if args.rows_out:
            Path(args.rows_out).write_text(json.dumps({
                "args": {k: v for k, v in vars(args).items() if k not in ("combine", "rows_out", "no_write")},
                "rows": rows, "per_gene": {k: v.to_dict() for k, v in per_gene.items()}}, default=float))
    cmd = "STFUSE_DATA=../shared/data python -m benchmarks.eval_histospace_her2st " + shlex.join(argv or sys.argv[1:])
    _report(rows, args, cmd, args.no_write)


def _report(rows: list[dict], args: argparse.Namespace, cmd: str, no_write: bool) -> None:
    loso = [r for r in rows if r["test"] in C]
    summary = []
    if loso:
        summary.append({"folds": f"LOSO C2–C6 (mean of {len(loso)} folds)",
                        **{k: float(np.mean([r[k] for r in loso])) for k in rows[0]
                           if k.startswith(("HS ", "ridge ")) and k not in ("HS best epoch", "HS s", "ridge s", "ridge alpha")}})
    body = table(rows)
    if summary:
        body += "\n\n" + table(summary)
    body += (
        f"\n\nHS = `sf.tl.histospace` (epochs={args.epochs}, augment={bool(args.augment)}, tta={bool(args.tta)}, "
        f"stain={args.stain}, finetune_encoder={bool(args.finetune)}, random_state={args.seed}; frozen shipped "
        "autoencoder encoder, Huber, Adam 1e-4, batch 32, best epoch on a spatial-block validation split of the "
        "training sections). ridge = ridge on the standardised default `sf.im` embedding (\"histospace\", 256-d), "
        "alpha by leave-one-section-out CV within the training sections. r: per gene across the held-out "
        f"section's spots, 785-gene panel{' + ' + ', '.join(args.extra_genes) if args.extra_genes else ''}; genes constant in the held-out section (NaN) are excluded and counted. "
        "Published reference points (HER2ST, HistoSPACE paper): GNAS ≈ 0.56, HLA-B 0.36–0.42."
    )
    if no_write:
        print(body)
    else:
        append_results(f"HistoSPACE expression prediction on HER2ST ({785 + len(args.extra_genes)} genes)", body, cmd.strip())


if __name__ == "__main__":
    main()
