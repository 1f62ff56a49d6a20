"""HistoSPACE on HER2ST: per-gene Pearson r across spots, next to ridge regression on image embeddings.

Folds: leave one section out over C2–C6 (train on the other four), and train on C2–C6 → predict B4
(another patient). Genes: the 785-gene panel of the Hist2ST line of work, plus ERBB2 (HER2; not in the
panel, asked for by the acceptance; ``--extra-genes`` to change). For every fold both methods
see the same training sections; neither ever sees the held-out section's expression:

- HistoSPACE: ``sf.tl.histospace(target, references, genes=panel)`` (defaults: frozen shipped
  tissue encoder on tiles of 2 spot diameters, the ``"mlp"`` head, Huber loss, Adam, epochs chosen on
  one whole training section held out, then refit on every training section).
- HistoSPACE ridge head: the same call with ``head="ridge"`` (ridge on the pooled maps of the same
  frozen encoder, same tiles, same targets; penalty chosen on the held-out training section).
- Ridge: ridge regression of the same targets on the ``sf.im`` embedding of the encoder HistoSPACE
  uses (``--ridge-encoder``, default ``"tissue"``, 384-d) of patches of the same size (``size`` of
  ``--set``, default 2 spot diameters), features standardised on the training sections, alpha chosen by
  leave-one-section-out cross-validation within the training sections (mean per-gene r).

``--scales 1 0.3`` also predicts every held-out section from its image down-scaled to 0.3× (as a
coarser scan: 2.3 µm/px), with the models trained at native resolution; the tiles keep their
physical size.

r is computed per gene across the held-out section's spots (``sf.metrics.gene_correlation``); genes
constant in the held-out section (NaN r) are excluded from mean/median and counted.

Usage::

    STFUSE_DATA=../shared/data python -m benchmarks.eval_histospace_her2st [--folds C2 B4] [--set head="'conv'"]
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

from ._util import PeakRSS, append_results, downscaled, keyword_options, table

C = ("C2", "C3", "C4", "C5", "C6")
FOLDS = {**{s: tuple(c for c in C if c != s) for s in C}, "B4": C}
GENES_OF_INTEREST = ("GNAS", "HLA-B", "ERBB2")
ALPHAS = np.logspace(-1, 7, 17)  # tissue features at 8x augmentation choose 1e4-1e5


def panel() -> list[str]:
    path = sf.datasets.her2st_path(download=False) / "hist2st_genes.txt"
    return [g.strip() for g in path.read_text().splitlines() if g.strip()]


_FEATURES: dict[tuple, np.ndarray] = {}


def _features(sdata, stain: str | None, encoder: str, size: float) -> np.ndarray:
    key = (id(sdata), stain, encoder, size)
    if key not in _FEATURES:
        _FEATURES[key] = sf.im.image_features(get_spots(sdata), encoder, size=size, stain=stain, device="cpu").X
    return _FEATURES[key]


def ridge(train: list, test, genes: list[str], stain: str | None = None, encoder: str = "tissue",
          size: float = 2.0) -> pd.Series:
    """Ridge on standardised image embeddings; alpha by leave-one-section-out CV on the training sections."""
    from sklearn.linear_model import Ridge

    Xs = [_features(s, stain, encoder, size) for s in train]
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
    r = sf.metrics.pearson_per_gene(Yte, fit_predict(np.concatenate(Xs), np.concatenate(Ys), _features(test, stain, encoder, size),
                                                        alpha))
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
    p.add_argument("--epochs", type=int, default=150)
    p.add_argument("--ridge-encoder", default="tissue", help="sf.im encoder of the ridge baseline")
    p.add_argument("--augment", type=int, default=1)
    p.add_argument("--tta", type=int, default=1)
    p.add_argument("--stain", default=None)
    p.add_argument("--finetune", type=int, default=0)
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--train", nargs="+", default=None, choices=list(FOLDS),
                   help="train on these sections instead of the fold's (a tuning split that leaves other sections unseen)")
    p.add_argument("--scales", type=float, nargs="+", default=[1.0], help="test image scales (1 = native)")
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                   help="further sf.tl.histospace keyword arguments of both heads (Python literals)")
    p.add_argument("--extra-genes", nargs="*", default=["ERBB2"], help="genes predicted besides the panel")
    p.add_argument("--no-write", action="store_true", help="print only, do not append to RESULTS.md")
    p.add_argument("--rows-out", default=None, help="also save this run's per-fold rows and per-gene r (JSON)")
    p.add_argument("--combine", nargs="+", default=None, metavar="JSON",
                   help="do not run: report the folds saved by earlier --rows-out runs (e.g. folds run in parallel)")
    args = p.parse_args(argv)
    if args.combine:  # folds run in separate processes with --rows-out
        saved = [json.loads(Path(f).read_text()) for f in args.combine]
        rows = [r for sv in saved for r in sv["rows"]]
        rows.sort(key=lambda r: (list(FOLDS).index(r["test"]), -r["scale"], r["seed"]))
        base = "STFUSE_DATA=../shared/data python -m benchmarks.eval_histospace_her2st"
        cmd = (" ; ".join(f"{base} {sv['command']}" for sv in saved) + f" (in parallel), then {base} "
               + shlex.join(argv or sys.argv[1:]))
        return _report(rows, argparse.Namespace(**saved[0]["args"]), cmd, args.no_write)
    sf.settings.verbosity = 1
    genes = panel()
    genes += [g for g in args.extra_genes if g not in genes]
    options = keyword_options(args.set)
    folds = {t: tuple(args.train) if args.train else FOLDS[t] for t in args.folds}
    sections = {s: sf.datasets.her2st(s) for s in sorted({*args.folds, *(x for f in folds.values() for x in f)})}
    rows, per_gene = [], {}
    views = {t: {f: (sections[t] if f == 1.0 else downscaled(sections[t], f)) for f in args.scales} for t in args.folds}
    rd, t_rd = {}, {}
    for seed in args.seeds:  # seeds outer: every pass over the folds is a complete table
        for test in args.folds:
            refs = [sections[s] for s in folds[test]]
            target = sections[test]
            if test not in rd:  # ridge on sf.im features is deterministic: once per fold
                t0 = time.perf_counter()
                rd[test] = {f: ridge(refs, view, genes, args.stain, args.ridge_encoder, float(options.get("size", 2.0)))
                            for f, view in views[test].items()}
                t_rd[test] = (time.perf_counter() - t0) / len(args.scales)
            common = {"genes": genes, "stain": args.stain, "random_state": seed, "device": "cpu", "return_model": True}
            t0 = time.perf_counter()
            with PeakRSS() as mem:
                hs_model = sf.tl.histospace(target, refs, epochs=args.epochs, augment=bool(args.augment),
                                            tta=bool(args.tta), finetune_encoder=bool(args.finetune), **common,
                                            **options)
            t_hs = time.perf_counter() - t0
            t0 = time.perf_counter()
            rh_model = sf.tl.histospace(target, refs, head="ridge", key_added="hs_ridge", augment=bool(args.augment),
                                        tta=bool(args.tta), **common, **options)
            t_rh = time.perf_counter() - t0
            info = target.tables["table"].uns["histospace"]["params"]
            rinfo = target.tables["table"].uns["hs_ridge"]["params"]
            for f, view in views[test].items():
                if f != 1.0:
                    sf.tl.histospace(view, model=hs_model, tta=bool(args.tta), device="cpu")
                    sf.tl.histospace(view, model=rh_model, key_added="hs_ridge", tta=bool(args.tta), device="cpu")
                hs = sf.metrics.gene_correlation(view)["r"].reindex(genes)
                rh = sf.metrics.gene_correlation(view, "hs_ridge")["r"].reindex(genes)
                r0 = rd[test][f]
                per_gene[f"{test}@{f:g}/{seed}"] = pd.DataFrame({"histospace": hs, "hs_ridge": rh, "ridge": r0})
                a, c, b = _summary(hs), _summary(rh), _summary(r0)
                rows.append({"test": test, "scale": f, "seed": seed, "train": "+".join(folds[test]),
                             "spots": int(target.tables["table"].n_obs),
                             "HS mean": a["mean"], "HS median": a["median"], **{f"HS {g}": a[g] for g in GENES_OF_INTEREST},
                             "HS-ridge mean": c["mean"], **{f"HS-ridge {g}": c[g] for g in GENES_OF_INTEREST},
                             "ridge mean": b["mean"], "ridge median": b["median"],
                             **{f"ridge {g}": b[g] for g in GENES_OF_INTEREST}, "NaN genes": a["nan"],
                             "HS > ridge (genes)": float((hs > r0).sum() / pd.concat([hs, r0], axis=1).dropna().shape[0]),
                             "HS validation": info["validation"], "HS-ridge validation": rinfo["validation"],
                             "ridge alpha": r0.attrs["alpha"], "HS s": round(t_hs), "HS peak MiB": round(mem.peak_mib),
                             "HS-ridge s": round(t_rh), "ridge s": round(t_rd[test])})
                print(table(rows[-1:]), flush=True)
            if args.rows_out:
                Path(args.rows_out).write_text(json.dumps({
                    "args": {k: v for k, v in vars(args).items() if k not in ("combine", "rows_out", "no_write")},
                    "command": shlex.join(argv or sys.argv[1:]), "rows": rows,
                    "per_gene": {k: v.to_dict() for k, v in per_gene.items()}}, default=float))
    cmd = "STFUSE_DATA=../shared/data python -m benchmarks.eval_histospace_her2st " + shlex.join(argv or sys.argv[1:])
    _report(rows, args, cmd, args.no_write)


def _pm(values: list[float]) -> str:
    v = np.asarray(values, dtype=float)
    return f"{np.nanmean(v):.3f} ± {np.nanstd(v):.3f}" if len(v) > 1 else f"{v[0]:.3f}"


def _report(rows: list[dict], args: argparse.Namespace, cmd: str, no_write: bool) -> None:
    """Per fold and scale: HistoSPACE and its ridge head (mean ± sd over seeds) beside ridge on sf.im features."""
    df = pd.DataFrame(rows)
    cells = df.groupby("seed").apply(lambda g: len(set(zip(g["test"], g["scale"]))), include_groups=False)
    complete = cells.index[cells == cells.max()].tolist()  # seeds run on every fold and scale (a cut run: fewer)
    dropped = sorted(set(df["seed"]) - set(complete))
    df = df[df["seed"].isin(complete)]
    seeds = sorted(complete)
    out = []
    for (test, scale), g in df.groupby(["test", "scale"], sort=False):
        out.append({"test": test, "scale": f"{scale:g}x", "train": g["train"].iloc[0], "spots": int(g["spots"].iloc[0]),
                    "HS mean r": _pm(g["HS mean"]), **{f"HS {x}": _pm(g[f"HS {x}"]) for x in GENES_OF_INTEREST},
                    "HS-ridge mean r": _pm(g["HS-ridge mean"]),
                    **{f"HS-ridge {x}": _pm(g[f"HS-ridge {x}"]) for x in GENES_OF_INTEREST},
                    "ridge mean r": f"{g['ridge mean'].iloc[0]:.3f}",
                    **{f"ridge {x}": f"{g[f'ridge {x}'].iloc[0]:.3f}" for x in GENES_OF_INTEREST},
                    "HS > ridge (genes)": f"{g['HS > ridge (genes)'].mean():.2f}",
                    "HS validation (seed 0)": g["HS validation"].iloc[0],
                    "HS s": int(g["HS s"].mean()), "HS peak MiB": int(g["HS peak MiB"].max()),
                    "HS-ridge s": int(g["HS-ridge s"].mean()), "ridge s": int(g["ridge s"].mean())})
    summary = []
    for scale in sorted(df["scale"].unique(), reverse=True):
        for name, tests in (("LOSO C2–C6", list(C)), ("C2–C6 → B4", ["B4"])):
            g = df[(df["scale"] == scale) & df["test"].isin(tests)]
            if g.empty:
                continue
            per_seed = g.groupby("seed")[["HS mean", "HS-ridge mean", "ridge mean"] + [f"{m} {x}" for m in ("HS", "ridge")
                                                                                       for x in GENES_OF_INTEREST]].mean()
            summary.append({"folds": f"{name} ({g['test'].nunique()} folds)", "scale": f"{scale:g}x",
                            "HS mean r": _pm(per_seed["HS mean"]), "HS-ridge mean r": _pm(per_seed["HS-ridge mean"]),
                            "ridge mean r": f"{per_seed['ridge mean'].iloc[0]:.3f}",
                            **{f"HS {x}": _pm(per_seed[f"HS {x}"]) for x in GENES_OF_INTEREST},
                            **{f"ridge {x}": f"{per_seed[f'ridge {x}'].iloc[0]:.3f}" for x in GENES_OF_INTEREST}})
    body = table(out) + "\n\n" + table(summary)
    extra = getattr(args, "set", [])
    body += (
        f"\n\nHS = `sf.tl.histospace` defaults (epochs={args.epochs} at most, augment={bool(args.augment)}, "
        f"tta={bool(args.tta)}, stain={args.stain}, finetune_encoder={bool(args.finetune)}"
        f"{', ' + ', '.join(extra) if extra else ''}; frozen shipped encoder, Huber, epochs chosen on one "
        "whole training section held out (drawn by the seed), then refit on every training section); mean ± sd over "
        f"seeds {seeds}. HS-ridge = the same call with head='ridge' (ridge on the per-channel mean/sd of the same "
        "frozen encoder's maps of the same tiles, penalty chosen on the held-out training section, then refit). "
        f"ridge = ridge on the standardised `sf.im` embedding ({getattr(args, 'ridge_encoder', 'histospace')!r}, "
        "patches of the tiles' size in spot diameters), "
        "alpha by leave-one-section-out CV within the training sections (deterministic). Scale 0.3x: the held-out "
        "section's image down-scaled to 0.3x (2.3 µm/px) before prediction, models trained at native resolution; "
        "tiles keep their physical size. r: per gene across the held-out section's spots, 785-gene panel"
        f"{' + ' + ', '.join(args.extra_genes) if args.extra_genes else ''}; genes constant in the held-out "
        "section are excluded. Published reference points (HER2ST, HistoSPACE paper): GNAS ≈ 0.56, HLA-B 0.36–0.42."
    )
    if dropped:
        body += f" Seeds {dropped} did not reach every fold before the run was stopped and are left out."
    if no_write:
        print(body)
    else:
        append_results(f"HistoSPACE expression prediction on HER2ST ({785 + len(args.extra_genes)} genes)", body, cmd.strip())


if __name__ == "__main__":
    main()
