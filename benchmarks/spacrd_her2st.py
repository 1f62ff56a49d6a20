"""SpaCRD on HER2ST: the acceptance evaluations of ``sf.tl.spacrd`` (not part of ``make bench``: hours on 2 cores).

``lopo``   leave-one-patient-out over the 7 pathologist-labelled sections (B1, C1, D1, E1, F1, G2, H1; one
           section per patient), expression only (``use_image=False``); cancer = invasive cancer or cancer
           in situ (``obs["cancer"]``). SpaCRD with its defaults, over several seeds, next to a
           logistic-regression baseline on the same genes and the same preparation. F1 uses the GMM
           threshold on the target's scores for both methods (never the true class balance).
``summary`` the ``lopo`` report from the per-spot scores that ``lopo --held ...`` runs saved (folds run in
           parallel processes).
``images`` train on C2–C5 + B4, score C6; train on C2–C6, score B4 (author-cluster labels: cancer when the
           cluster name starts with "cancer"; spots without a cluster are unlabelled and not scored), with
           and without the image branch.

Run from the project root::

    STFUSE_DATA=../shared/data PYTHONPATH=src python -m benchmarks.spacrd_her2st lopo --seeds 0 1 2
    STFUSE_DATA=../shared/data PYTHONPATH=src python -m benchmarks.spacrd_her2st images --seeds 0 1 2
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

import stfuse as sf
from stfuse.models import gmm_threshold

from ._util import append_results, table

LABELLED = ("B1", "C1", "D1", "E1", "F1", "G2", "H1")
CLUSTER_KEY = "cancer_cluster"


def _read(section: str, *, image: bool) -> Any:
    sd = sf.datasets.her2st(section, image=image)
    t = sd.tables["table"]
    if "label" in t.obs and t.obs["label"].notna().any():
        return sd
    # cluster-derived labels; spots without an author cluster are unlabelled (NaN), not "normal"
    name = t.obs["cluster_name"].astype("string")
    lab = np.where(name.isna(), None, name.str.startswith("cancer").fillna(False).to_numpy(bool))
    t.obs[CLUSTER_KEY] = np.array(lab, dtype=object)
    return sd


def _truth(sd: Any, key: str) -> tuple[np.ndarray, np.ndarray]:
    v = sd.tables["table"].obs[key]
    ok = v.notna().to_numpy()
    return v.to_numpy()[ok].astype(bool), ok


def _baseline(refs: list[Any], target: Any, genes: list[str], key: str, seed: int) -> np.ndarray:
    """Logistic regression on the genes SpaCRD used, prepared the same way (per-section min-max)."""
    from sklearn.linear_model import LogisticRegression

    def prep(sd):
        return sf.pp.prepare_expression(sd.tables["table"], genes=genes, scale="minmax").X

    X, y = [], []
    for r in refs:
        lab, ok = _truth(r, key)
        X.append(prep(r)[ok])
        y.append(lab)
    lr = LogisticRegression(max_iter=2000, random_state=seed)
    lr.fit(np.vstack(X), np.concatenate(y))
    return lr.predict_proba(prep(target))[:, 1]


def _metrics(truth: np.ndarray, ok: np.ndarray, scores: np.ndarray, calls: np.ndarray) -> dict[str, float]:
    return sf.metrics.classification(truth, scores[ok], pred=calls[ok])


def _run(refs: list[Any], target: Any, key: str, seed: int, **kw: Any) -> tuple[dict[str, float], Any, float, Any]:
    t0 = time.perf_counter()
    out = sf.tl.spacrd(target, refs, label_key=key, positive=True, random_state=seed, device="cpu", copy=True, **kw)
    dt = time.perf_counter() - t0
    tab = out.tables["table"]
    truth, ok = _truth(target, key)
    m = _metrics(truth, ok, tab.obs["spacrd_score"].to_numpy(), (tab.obs["spacrd"] == "cancer").to_numpy())
    return m, tab.uns["spacrd"], dt, tab


def _summary(results: dict[str, dict[int, dict[str, float]]], lr: dict[str, dict[str, float]], seeds: list[int],
             spots: dict[str, tuple[int, int]]) -> list[dict[str, Any]]:
    """Rows per section (SpaCRD mean ± sd over seeds, LR) and a mean row (± sd over seeds of the mean)."""
    def fmt(vals: list[float]) -> str:
        return f"{np.mean(vals):.3f} ± {np.std(vals):.3f}" if len(vals) > 1 else f"{vals[0]:.3f}"

    rows = []
    for sec, res in results.items():
        row = {"section": sec, "spots": spots[sec][0], "cancer": spots[sec][1]}
        row |= {f"SpaCRD {k}": fmt([res[s][k] for s in seeds]) for k in ("auc", "ap", "f1")}
        row |= {f"LR {k}": f"{lr[sec][k]:.3f}" for k in ("auc", "ap", "f1")}
        rows.append(row)
    mean = {"section": "mean", "spots": sum(v[0] for v in spots.values()), "cancer": sum(v[1] for v in spots.values())}
    mean |= {f"SpaCRD {k}": fmt([float(np.mean([results[sec][s][k] for sec in results])) for s in seeds])
             for k in ("auc", "ap", "f1")}
    mean |= {f"LR {k}": f"{np.mean([lr[sec][k] for sec in lr]):.3f}" for k in ("auc", "ap", "f1")}
    return [*rows, mean]


def _csv(held: str, undetermined: str, epochs: int | None) -> Path:
    return Path(__file__).parent / "results" / f"spacrd_lopo_{held}_{undetermined}_e{epochs or 'default'}.csv"


def _report(frames: dict[str, Any], seeds: list[int], epochs: int | None, undetermined: str, command: str) -> None:
    """Metrics of the saved per-spot scores of every fold -> RESULTS.md (the same code for a run and ``summary``)."""
    evals: dict[str, dict[str, dict[int, dict[str, float]]]] = {"all": {}, "determined": {}}
    lr_evals: dict[str, dict[str, dict[str, float]]] = {"all": {}, "determined": {}}
    spots: dict[str, dict[str, tuple[int, int]]] = {"all": {}, "determined": {}}
    for held, frame in frames.items():
        truth = frame["cancer"].to_numpy(bool)
        # all spots (undetermined = normal) / the spots the pathologist left undetermined left out
        masks = {"all": np.ones(len(frame), bool), "determined": frame["label"].astype(str).to_numpy() != "undetermined"}
        for name, mask in masks.items():
            spots[name][held] = (int(mask.sum()), int(truth[mask].sum()))
            evals[name][held] = {seed: sf.metrics.classification(truth[mask], frame[f"spacrd_score_{seed}"].to_numpy()[mask],
                                                                 pred=frame[f"spacrd_call_{seed}"].to_numpy(bool)[mask])
                                 for seed in seeds}
            lr_evals[name][held] = sf.metrics.classification(truth[mask], frame["lr_score"].to_numpy()[mask],
                                                             pred=frame["lr_call"].to_numpy(bool)[mask])
    setting = (f"expression only (use_image=False), SpaCRD defaults ({'epochs=' + str(epochs) if epochs else 'default epochs'}), "
               f"training labels: undetermined spots {'unlabelled' if undetermined == 'unlabelled' else 'normal'}, "
               f"seeds {seeds}")
    body = (f"Leave-one-patient-out, {setting}. Folds (held-out sections) reported: {', '.join(frames)}. SpaCRD: mean ± sd over seeds; mean row: mean over sections, ± sd over "
            "seeds of that mean. LR = sklearn LogisticRegression on the same genes and preparation, trained on the "
            "same labels. F1 at the GMM threshold of the target's scores for both (no peeking at the labels).\n\n"
            "All spots scored (cancer = invasive cancer or cancer in situ; every other label, undetermined included, "
            "= normal):\n\n" + table(_summary(evals["all"], lr_evals["all"], seeds, spots["all"]))
            + "\n\nSpots labelled undetermined left out of the evaluation (as in the ARI protocol on these data):\n\n"
            + table(_summary(evals["determined"], lr_evals["determined"], seeds, spots["determined"])))
    append_results("SpaCRD: HER2ST leave-one-patient-out (7 pathologist-labelled sections)", body, command)


def lopo(seeds: list[int], sections: list[str], held_out: list[str], epochs: int | None, undetermined: str) -> None:
    import pandas as pd

    data = {s: _read(s, image=False) for s in sections}
    key = "cancer"
    if undetermined == "unlabelled":  # train without the spots the pathologist left undetermined
        key = "cancer_determined"
        for sd in data.values():
            obs = sd.tables["table"].obs
            obs[key] = np.where(obs["label"].astype(str) == "undetermined", None, obs["cancer"].to_numpy()).astype(object)
    kw = {"use_image": False} | ({"epochs": epochs} if epochs else {})
    frames = {}
    for held in held_out:
        refs = [data[s] for s in sections if s != held]
        obs = data[held].tables["table"].obs
        frame = pd.DataFrame({"label": obs["label"].astype(str).to_numpy(), "cancer": obs["cancer"].to_numpy(bool)},
                             index=obs.index)
        for seed in seeds:
            m, uns, dt, tab = _run(refs, data[held], key, seed, **kw)
            frame[f"spacrd_score_{seed}"] = tab.obs["spacrd_score"].to_numpy()
            frame[f"spacrd_call_{seed}"] = (tab.obs["spacrd"] == "cancer").to_numpy()
            print(f"{held} seed {seed}: {m} ({dt:.0f} s, {len(uns['history']['loss'])} epochs, "
                  f"threshold {uns['threshold']['method']})", flush=True)
        lr = _baseline(refs, data[held], list(uns["genes"]), key, 0)
        frame["lr_score"], frame["lr_call"] = lr, lr >= gmm_threshold(lr).threshold
        print(f"{held} LR: {sf.metrics.classification(frame['cancer'], lr, pred=frame['lr_call'])}", flush=True)
        _csv(held, undetermined, epochs).parent.mkdir(exist_ok=True)
        frame.to_csv(_csv(held, undetermined, epochs))
        frames[held] = frame
    if set(held_out) == set(sections):
        _report(frames, seeds, epochs, undetermined,
                "STFUSE_DATA=../shared/data PYTHONPATH=src python -m benchmarks.spacrd_her2st lopo " + " ".join(sys.argv[2:]))


def summary(seeds: list[int], sections: list[str], epochs: int | None, undetermined: str) -> None:
    """Report folds run in separate processes (``lopo --held ...``) from their saved per-spot CSVs."""
    import pandas as pd

    missing = [s for s in sections if not _csv(s, undetermined, epochs).is_file()]
    if missing:
        raise SystemExit(f"no saved scores for folds {missing}: run lopo --held {' '.join(missing)} first")
    frames = {s: pd.read_csv(_csv(s, undetermined, epochs), index_col=0) for s in sections}
    _report(frames, seeds, epochs, undetermined,
            "STFUSE_DATA=../shared/data PYTHONPATH=src python -m benchmarks.spacrd_her2st lopo --held <folds> "
            + " ".join(sys.argv[2:]) + " (folds in parallel processes), then the same options with summary")


def images(seeds: list[int], epochs: int | None, pretrain_epochs: int | None, encoder: str,
           targets: list[str] | None = None) -> None:
    secs = ("C2", "C3", "C4", "C5", "C6", "B4")
    data = {s: _read(s, image=True) for s in secs}
    for sd in data.values():  # embed once; sf.tl.spacrd reuses the cached obsm embedding of every section
        sf.im.embed(sd, encoder)
    splits = [(["C2", "C3", "C4", "C5", "B4"], "C6"), (["C2", "C3", "C4", "C5", "C6"], "B4")]
    splits = [(train, held) for train, held in splits if not targets or held in targets]
    rows = []
    for train, held in splits:
        refs = [data[s] for s in train]
        for use_image in (True, False):
            res = []
            for seed in seeds:
                kw = ({"use_image": use_image, "encoder": encoder} | ({"epochs": epochs} if epochs else {})
                      | ({"pretrain_epochs": pretrain_epochs} if pretrain_epochs is not None else {}))
                m, _, dt, _ = _run(refs, data[held], CLUSTER_KEY, seed, **kw)
                res.append(m)
                print(f"{held} image={use_image} seed {seed}: {m} ({dt:.0f} s)", flush=True)
            row = {"train": "+".join(train), "target": held, "image branch": "yes" if use_image else "no"}
            for k in ("auc", "ap", "f1"):
                vals = [r[k] for r in res]
                row[k] = f"{np.mean(vals):.3f} ± {np.std(vals):.3f}" if len(seeds) > 1 else f"{vals[0]:.3f}"
            rows.append(row)
            print(row, flush=True)
    body = (f"Cluster-derived labels (cancer = author cluster named 'cancer…'; spots without a cluster unscored), "
            f"encoder={encoder!r}, epochs={epochs or 'default'}, pretrain_epochs={'default' if pretrain_epochs is None else pretrain_epochs}, seeds {seeds} (mean ± sd). F1 at the GMM threshold.\n\n" + table(rows))
    append_results("SpaCRD: HER2ST with images (C2–C6, B4)", body,
                   "STFUSE_DATA=../shared/data PYTHONPATH=src python -m benchmarks.spacrd_her2st images " + " ".join(sys.argv[2:]))


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("mode", choices=["lopo", "images", "summary"])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--sections", nargs="+", default=list(LABELLED))
    p.add_argument("--held", nargs="+", default=None, help="lopo: the folds (held-out sections) to run; default all")
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--pretrain-epochs", type=int, default=None, help="images: alignment pre-training epochs")
    p.add_argument("--encoder", default="histospace")
    p.add_argument("--targets", nargs="+", choices=["C6", "B4"], default=None, help="images: the splits to run (targets)")
    p.add_argument("--undetermined", choices=["normal", "unlabelled"], default="normal",
                   help="training labels of spots the pathologist marked undetermined (lopo)")
    a = p.parse_args(argv)
    sf.settings.verbosity = 1
    if a.mode == "lopo":
        lopo(a.seeds, a.sections, a.held or a.sections, a.epochs, a.undetermined)
    elif a.mode == "summary":
        summary(a.seeds, a.sections, a.epochs, a.undetermined)
    else:
        images(a.seeds, a.epochs, a.pretrain_epochs, a.encoder, a.targets)


if __name__ == "__main__":
    main()
