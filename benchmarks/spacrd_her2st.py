"""SpaCRD on HER2ST: the acceptance evaluations of ``sf.tl.spacrd`` (not part of ``make bench``: hours on 2 cores).

``lopo``   leave-one-patient-out over the 7 pathologist-labelled sections (B1, C1, D1, E1, F1, G2, H1; one
           section per patient), expression only (``use_image=False``); cancer = invasive cancer or cancer
           in situ (``obs["cancer"]``). SpaCRD with its defaults, over several seeds, next to two
           logistic-regression baselines on the same genes and the same preparation (each spot's own
           expression; the mean over the spot and its 6 nearest spots, C chosen by leave-one-reference-
           section-out). F1 uses the GMM threshold on the target's scores for every method (never the
           true class balance). Folds run in ``--jobs`` processes with ``sf.settings.threads(jobs)``
           torch threads each (processes × threads ≤ cores).
``summary`` the ``lopo`` report from the per-spot scores that ``lopo --held ...`` runs saved (folds run
           separately).
``curves`` test AUC against a fixed number of epochs (no early stopping) on chosen folds (default the two
           weakest, C1 and F1), beside the defaults' run, whose epochs a held-out reference section chose:
           shows whether the chosen epoch sits near the best one (the labels of the test section choose
           nothing; they only score).
``images`` train on C2–C5 + B4, score C6; train on C2–C6, score B4 (author-cluster labels: cancer when the
           cluster name starts with "cancer"; spots without a cluster are unlabelled and not scored), with
           and without the image branch, beside logistic regression on the same genes (with and without the
           image features).

Run from the project root::

    STFUSE_DATA=../shared/data PYTHONPATH=src python -m benchmarks.spacrd_her2st lopo --seeds 0 1 2
    STFUSE_DATA=../shared/data PYTHONPATH=src python -m benchmarks.spacrd_her2st images --seeds 0 1 2
"""

from __future__ import annotations

import argparse
import functools
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

import stfuse as sf
from stfuse.im._encoders import DEFAULT_ENCODER
from stfuse.models import gmm_threshold

from ._util import append_results, keyword_options, table

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


def _prep(sd: Any, genes: list[str], *, smooth: bool) -> np.ndarray:
    """The genes SpaCRD used, prepared the same way (per-section min-max); ``smooth``: mean with the 6 nearest spots."""
    X = np.asarray(sf.pp.prepare_expression(sd.tables["table"], genes=genes, scale="minmax").X, dtype=np.float64)
    if not smooth:
        return X
    nb = sf.data.neighbour_index(np.asarray(sd.tables["table"].obsm["spatial"], float), 6)
    ok = nb >= 0
    return (X + (X[np.maximum(nb, 0)] * ok[..., None]).sum(1)) / (1 + ok.sum(1, keepdims=True))


def _baseline(refs: list[Any], target: Any, genes: list[str], key: str, seed: int, *, smooth: bool = False,
              image: Any = None) -> np.ndarray:
    """Logistic regression on the genes SpaCRD used, prepared the same way (per-section min-max).

    ``smooth=False``: sklearn's default ``C=1`` on each spot's own expression. ``smooth=True``: on the
    mean of each spot and its 6 nearest spots (the neighbourhood SpaCRD attends to), ``C`` chosen
    among 1e-3..1 by leave-one-reference-section-out AUC (never on the target). ``image``: a function
    of a section giving its per-section z-scored image features, appended to the expression (C chosen
    the same way).
    """
    from sklearn.linear_model import LogisticRegression, LogisticRegressionCV
    from sklearn.model_selection import LeaveOneGroupOut

    def inputs(sd: Any) -> np.ndarray:
        X = _prep(sd, genes, smooth=smooth)
        return X if image is None else np.hstack([X, image(sd)])

    X, y, groups = [], [], []
    for i, r in enumerate(refs):
        lab, ok = _truth(r, key)
        X.append(inputs(r)[ok])
        y.append(lab)
        groups.append(np.full(len(lab), i))
    X, y, groups = np.vstack(X), np.concatenate(y), np.concatenate(groups)
    if (smooth or image is not None) and len(refs) > 2:
        folds = [(a, b) for a, b in LeaveOneGroupOut().split(X, y, groups) if len(np.unique(y[b])) == 2]
        lr = LogisticRegressionCV(Cs=[1e-3, 1e-2, 1e-1, 1.0], cv=folds, scoring="roc_auc", max_iter=3000,
                                  random_state=seed)
    else:
        lr = LogisticRegression(max_iter=3000, random_state=seed)
    lr.fit(X, y)
    return lr.predict_proba(inputs(target))[:, 1]


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


def _fmt(vals: list[float]) -> str:
    """Mean ± sd over seeds (the value alone for one seed)."""
    return f"{np.mean(vals):.3f} ± {np.std(vals):.3f}" if len(vals) > 1 else f"{vals[0]:.3f}"


BASELINES = {"LR": "lr", "LR smooth": "lrs"}  # report name -> column prefix in the saved per-spot frames
ENSEMBLE = "SpaCRD seeds averaged"  # the mean of the seeds' scores (one ensemble, not a seed mean)


def _summary(results: dict[str, dict[int, dict[str, float]]], base: dict[str, dict[str, dict[str, float]]],
             seeds: list[int], spots: dict[str, tuple[int, int]], extra: dict[str, dict[str, str]]) -> list[dict[str, Any]]:
    """Rows per section (SpaCRD mean ± sd over seeds, the baselines) and a mean row (± sd over seeds of the mean)."""
    rows = []
    for sec, res in results.items():
        row = {"section": sec, "spots": spots[sec][0], "cancer": spots[sec][1]}
        row |= {f"SpaCRD {k}": _fmt([res[s][k] for s in seeds]) for k in ("auc", "ap", "f1", "best f1")}
        for name, b in base.items():
            row |= {f"{name} {k}": f"{b[sec][k]:.3f}" for k in ("auc", "f1")}
        rows.append(row | extra.get(sec, {}))
    mean = {"section": "mean", "spots": sum(v[0] for v in spots.values()), "cancer": sum(v[1] for v in spots.values())}
    mean |= {f"SpaCRD {k}": _fmt([float(np.mean([results[sec][s][k] for sec in results])) for s in seeds])
             for k in ("auc", "ap", "f1", "best f1")}
    for name, b in base.items():
        mean |= {f"{name} {k}": f"{np.mean([b[sec][k] for sec in b]):.3f}" for k in ("auc", "f1")}
    return [*rows, mean]


def _best_f1(truth: np.ndarray, scores: np.ndarray) -> float:
    """The best F1 any threshold reaches (what the GMM threshold is compared to; uses the labels)."""
    from sklearn.metrics import precision_recall_curve

    p, r, _ = precision_recall_curve(truth, scores)
    return float(np.nanmax(np.where(p + r > 0, 2 * p * r / np.maximum(p + r, 1e-12), 0.0)))


def _csv(held: str, undetermined: str, epochs: int | None, validation: str, options: dict[str, Any]) -> Path:
    tag = "".join(f"_{k}{v}" for k, v in sorted(options.items()))
    return (Path(__file__).parent / "results"
            / f"spacrd_lopo_{held}_{undetermined}_e{epochs or 'default'}_v{validation}{tag}.csv")


def _report(frames: dict[str, Any], seeds: list[int], epochs: int | None, undetermined: str, validation: str,
            options: dict[str, Any], command: str) -> None:
    """Metrics of the saved per-spot scores of every fold -> RESULTS.md (the same code for a run and ``summary``)."""
    evals: dict[str, dict[str, dict[int, dict[str, float]]]] = {"all": {}, "determined": {}}
    base: dict[str, dict[str, dict[str, dict[str, float]]]] = {"all": {}, "determined": {}}
    spots: dict[str, dict[str, tuple[int, int]]] = {"all": {}, "determined": {}}
    extra: dict[str, dict[str, str]] = {}
    for held, frame in frames.items():
        truth = frame["cancer"].to_numpy(bool)
        extra[held] = {"s per fit": f"{np.mean([frame[f'sec_{s}'].iloc[0] for s in seeds]):.0f}",
                       "stopped / best epoch": ", ".join(f"{int(frame[f'epochs_{s}'].iloc[0])}/{int(frame[f'best_{s}'].iloc[0])}"
                                                         for s in seeds),
                       "validation": ", ".join(sorted({str(frame[f'validation_{s}'].iloc[0]) for s in seeds}))}
        # all spots (undetermined = normal) / the spots the pathologist left undetermined left out
        masks = {"all": np.ones(len(frame), bool), "determined": frame["label"].astype(str).to_numpy() != "undetermined"}
        for name, mask in masks.items():
            spots[name][held] = (int(mask.sum()), int(truth[mask].sum()))
            evals[name][held] = {
                seed: sf.metrics.classification(truth[mask], frame[f"spacrd_score_{seed}"].to_numpy()[mask],
                                                pred=frame[f"spacrd_call_{seed}"].to_numpy(bool)[mask])
                | {"best f1": _best_f1(truth[mask], frame[f"spacrd_score_{seed}"].to_numpy()[mask])}
                for seed in seeds}
            for label, col in BASELINES.items():
                base[name].setdefault(label, {})[held] = sf.metrics.classification(
                    truth[mask], frame[f"{col}_score"].to_numpy()[mask], pred=frame[f"{col}_call"].to_numpy(bool)[mask])
            if len(seeds) > 1:  # an ensemble of the seeds' models: their scores averaged, GMM threshold on the average
                avg = np.mean([frame[f"spacrd_score_{s}"].to_numpy() for s in seeds], axis=0)
                base[name].setdefault(ENSEMBLE, {})[held] = sf.metrics.classification(
                    truth[mask], avg[mask], pred=(avg >= gmm_threshold(avg).threshold)[mask])
    setting = (f"expression only (use_image=False), SpaCRD defaults ({'epochs=' + str(epochs) if epochs else 'default epochs'}"
               f", validation={validation!r}{''.join(f', {k}={v!r}' for k, v in options.items())}), training labels: undetermined spots "
               f"{'unlabelled' if undetermined == 'unlabelled' else 'normal'}, seeds {seeds}")
    body = (f"Leave-one-patient-out, {setting}. Folds (held-out sections) reported: {', '.join(frames)}. SpaCRD: mean ± sd "
            "over seeds; mean row: mean over sections, ± sd over seeds of that mean. 'best f1' = the best F1 of any "
            "threshold (uses the labels; the GMM threshold does not). 'stopped / best epoch' per seed; 'validation' = "
            "what early stopping watched. LR = sklearn LogisticRegression (C=1) on the same genes and preparation; LR "
            "smooth = the same on the mean of each spot and its 6 nearest spots, C chosen by leave-one-reference-"
            "section-out AUC; both trained on the same labels. 'SpaCRD seeds averaged' = the mean of the seeds' scores "
            "per spot (an ensemble of the seeds' models). F1 at the GMM threshold of the target's scores for "
            "every method (no peeking at the labels).\n\n"
            "All spots scored (cancer = invasive cancer or cancer in situ; every other label, undetermined included, "
            "= normal):\n\n" + table(_summary(evals["all"], base["all"], seeds, spots["all"], extra))
            + "\n\nSpots labelled undetermined left out of the evaluation (as in the ARI protocol on these data):\n\n"
            + table(_summary(evals["determined"], base["determined"], seeds, spots["determined"], {})))
    append_results("SpaCRD: HER2ST leave-one-patient-out (7 pathologist-labelled sections)", body, command)


@functools.cache
def _labelled(section: str, undetermined: str) -> Any:
    sd = _read(section, image=False)
    if undetermined == "unlabelled":  # train without the spots the pathologist left undetermined
        obs = sd.tables["table"].obs
        obs["cancer_determined"] = np.where(obs["label"].astype(str) == "undetermined", None,
                                            obs["cancer"].to_numpy()).astype(object)
    return sd


def _fold(held: str, sections: list[str], seeds: list[int], kw: dict[str, Any], undetermined: str) -> Any:
    """One LOPO fold: SpaCRD over the seeds and both baselines; per-spot scores as a frame."""
    import pandas as pd

    key = "cancer_determined" if undetermined == "unlabelled" else "cancer"
    refs = [_labelled(s, undetermined) for s in sections if s != held]
    target = _labelled(held, undetermined)
    obs = target.tables["table"].obs
    frame = pd.DataFrame({"label": obs["label"].astype(str).to_numpy(), "cancer": obs["cancer"].to_numpy(bool)},
                         index=obs.index)
    for seed in seeds:
        m, uns, dt, tab = _run(refs, target, key, seed, **kw)
        frame[f"spacrd_score_{seed}"] = tab.obs["spacrd_score"].to_numpy()
        frame[f"spacrd_call_{seed}"] = (tab.obs["spacrd"] == "cancer").to_numpy()
        hist = uns["history"]
        frame[f"sec_{seed}"] = dt
        frame[f"epochs_{seed}"] = len(hist["loss"])
        frame[f"best_{seed}"] = int(np.ravel(hist.get("best_epoch", [len(hist["loss"])]))[0])
        frame[f"validation_{seed}"] = str(uns["params"].get("validation"))
        print(f"{held} seed {seed}: {m} ({dt:.0f} s, {len(hist['loss'])} epochs, validation {uns['params'].get('validation')}, "
              f"threshold {uns['threshold']['method']})", flush=True)
    genes = list(uns["genes"])
    for col, smooth in (("lr", False), ("lrs", True)):
        score = _baseline(refs, target, genes, key, 0, smooth=smooth)
        frame[f"{col}_score"], frame[f"{col}_call"] = score, score >= gmm_threshold(score).threshold
        print(f"{held} {col}: {sf.metrics.classification(frame['cancer'], score, pred=frame[f'{col}_call'])}", flush=True)
    return frame


def _worker(threads: int) -> None:
    sf.settings.n_jobs = threads
    sf.settings.verbosity = 0  # the fold results are printed; progress bars of parallel folds would interleave


def _map(fn: Any, args: list[tuple], jobs: int) -> list[Any]:
    """``fn(*a)`` for each of ``args``, in ``jobs`` processes or, for ``jobs`` 1, in this one.

    Each process gets ``sf.settings.threads(jobs)`` torch threads (processes × threads ≤ cores); in this process
    the threads are what the environment sets.
    """
    if jobs <= 1:
        return [fn(*a) for a in args]
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(jobs, initializer=_worker, initargs=(sf.settings.threads(jobs),)) as ex:
        return list(ex.map(fn, *zip(*args)))


def lopo(seeds: list[int], sections: list[str], held_out: list[str], epochs: int | None, undetermined: str,
         validation: str, jobs: int, options: dict[str, Any]) -> None:
    """Folds in ``jobs`` processes (see :func:`_map`)."""
    kw = {"use_image": False, "validation": None if validation == "none" else validation} | (
        {"epochs": epochs} if epochs else {}) | options
    args = [(held, sections, seeds, kw, undetermined) for held in held_out]
    frames = dict(zip(held_out, _map(_fold, args, jobs)))
    for held, frame in frames.items():
        _csv(held, undetermined, epochs, validation, options).parent.mkdir(exist_ok=True)
        frame.to_csv(_csv(held, undetermined, epochs, validation, options))
    if set(held_out) == set(sections):
        _report(frames, seeds, epochs, undetermined, validation, options,
                "STFUSE_DATA=../shared/data PYTHONPATH=src python -m benchmarks.spacrd_her2st lopo " + " ".join(sys.argv[2:]))


def summary(seeds: list[int], sections: list[str], epochs: int | None, undetermined: str, validation: str,
            options: dict[str, Any]) -> None:
    """Report folds run in separate processes (``lopo --held ...``) from their saved per-spot CSVs."""
    import pandas as pd

    missing = [s for s in sections if not _csv(s, undetermined, epochs, validation, options).is_file()]
    if missing:
        raise SystemExit(f"no saved scores for folds {missing}: run lopo --held {' '.join(missing)} first")
    frames = {s: pd.read_csv(_csv(s, undetermined, epochs, validation, options), index_col=0) for s in sections}
    _report(frames, seeds, epochs, undetermined, validation, options,
            "STFUSE_DATA=../shared/data PYTHONPATH=src python -m benchmarks.spacrd_her2st lopo --held <folds> "
            + " ".join(sys.argv[2:]) + " (folds in parallel processes), then the same options with summary")


def images(seeds: list[int], epochs: int | None, pretrain_epochs: int | None, encoder: str,
           targets: list[str] | None = None, options: dict[str, Any] | None = None) -> None:
    from stfuse._spots import get_spots

    secs = ("C2", "C3", "C4", "C5", "C6", "B4")
    data = {s: _read(s, image=True) for s in secs}
    for sd in data.values():  # embed once; sf.tl.spacrd reuses the cached obsm embedding of every section
        sf.im.embed(sd, encoder)

    def image_of(sd: Any) -> np.ndarray:  # what SpaCRD's image branch reads (the cached embedding), scaled the same way
        return sf.data.standardise(sf.im.image_features(get_spots(sd, need_image=True), encoder).X)

    splits = [(["C2", "C3", "C4", "C5", "B4"], "C6"), (["C2", "C3", "C4", "C5", "C6"], "B4")]
    splits = [(train, held) for train, held in splits if not targets or held in targets]
    rows = []

    for train, held in splits:
        refs = [data[s] for s in train]
        truth, ok = _truth(data[held], CLUSTER_KEY)
        base = {"train": "+".join(train), "target": held, "spots": int(ok.sum()), "cancer": int(truth.sum())}
        genes = None
        for use_image in (True, False):
            res = []
            for seed in seeds:
                kw = ({"use_image": use_image, "encoder": encoder} | ({"epochs": epochs} if epochs else {})
                      | ({"pretrain_epochs": pretrain_epochs} if pretrain_epochs is not None else {}) | (options or {}))
                m, uns, dt, tab = _run(refs, data[held], CLUSTER_KEY, seed, **kw)
                m["best f1"] = _best_f1(truth, tab.obs["spacrd_score"].to_numpy()[ok])
                m["s"] = dt
                res.append(m)
                genes = list(uns["genes"])
                print(f"{held} image={use_image} seed {seed}: {m} ({dt:.0f} s, {uns['params'].get('validation')})", flush=True)
            row = base | {"method": "SpaCRD" + (" (image + expression)" if use_image else " (expression)")}
            row |= {k: _fmt([r[k] for r in res]) for k in ("auc", "ap", "f1", "best f1")} | {
                "s per fit": f"{np.mean([r['s'] for r in res]):.0f}"}
            rows.append(row)
            print(row, flush=True)
        for name, img in (("LR (expression)", None), ("LR (image + expression)", image_of)):
            score = _baseline(refs, data[held], genes, CLUSTER_KEY, 0, image=img)
            m = sf.metrics.classification(truth, score[ok], pred=(score >= gmm_threshold(score).threshold)[ok])
            rows.append(base | {"method": name, "auc": f"{m['auc']:.3f}", "ap": f"{m['ap']:.3f}", "f1": f"{m['f1']:.3f}",
                                "best f1": f"{_best_f1(truth, score[ok]):.3f}"})
            print(rows[-1], flush=True)
    body = (f"Cluster-derived labels (cancer = author cluster named 'cancer…'; spots without a cluster unscored), "
            f"encoder={encoder!r}, epochs={epochs or 'default'}, pretrain_epochs={'default' if pretrain_epochs is None else pretrain_epochs}"
            f"{''.join(f', {k}={v!r}' for k, v in (options or {}).items())}, seeds {seeds} (SpaCRD: mean ± sd). F1 at the GMM "
            "threshold of the target's scores for every method; 'best f1' = the best F1 of any threshold (uses the labels). "
            "LR = logistic regression on the genes SpaCRD used, prepared the same way (per-section min-max), with the "
            "per-section z-scored image features appended for 'image + expression'; C among 1e-3..1 by leave-one-"
            "reference-section-out AUC.\n\n" + table(rows))
    append_results("SpaCRD: HER2ST with images (C2–C6, B4)", body,
                   "STFUSE_DATA=../shared/data PYTHONPATH=src python -m benchmarks.spacrd_her2st images " + " ".join(sys.argv[2:]))


def curves(seeds: list[int], sections: list[str], held_out: list[str], epochs: list[int], jobs: int,
           options: dict[str, Any]) -> None:
    """Test AUC after a fixed number of epochs (``validation=None``) and with the defaults, per fold and seed."""
    args = [(held, sections, seed, e, options) for held in held_out for seed in seeds for e in [None, *epochs]]
    out = _map(_curve_point, args, jobs)
    rows = []
    for held in held_out:
        chosen = [o for o in out if o["held"] == held and o["epochs"] is None]
        rows.append({"fold": held, "epochs": "defaults (" + ", ".join(str(o["chose"]) for o in chosen) + " chosen)",
                     "auc": _fmt([o["auc"] for o in chosen]), "f1": _fmt([o["f1"] for o in chosen])})
        for e in epochs:
            pts = [o for o in out if o["held"] == held and o["epochs"] == e]
            rows.append({"fold": held, "epochs": str(e), "auc": _fmt([o["auc"] for o in pts]),
                         "f1": _fmt([o["f1"] for o in pts])})
        print(table(rows), flush=True)
    body = (f"Expression only (use_image=False), seeds {seeds}{''.join(f', {k}={v!r}' for k, v in options.items())}. "
            "'defaults': sf.tl.spacrd's defaults, a held-out reference section chooses the epochs (chosen count per "
            "seed in brackets), then a refit on every reference for that many; numbered rows: validation=None and "
            "that many epochs on every reference. AUC / F1 (GMM threshold) of the held-out section, mean ± sd over "
            "seeds; cancer = invasive cancer or cancer in situ, undetermined spots normal.\n\n" + table(rows))
    append_results("SpaCRD: test AUC against epochs (leave-one-patient-out folds)", body,
                   "STFUSE_DATA=../shared/data PYTHONPATH=src python -m benchmarks.spacrd_her2st curves "
                   + " ".join(sys.argv[2:]))


def _curve_point(held: str, sections: list[str], seed: int, epochs: int | None, options: dict[str, Any]) -> dict:
    refs = [_labelled(s, "normal") for s in sections if s != held]
    kw = {"use_image": False} | ({"validation": None, "epochs": epochs} if epochs else {}) | options
    m, uns, dt, _ = _run(refs, _labelled(held, "normal"), "cancer", seed, **kw)
    chose = len(uns["history"]["loss"])
    print(f"{held} seed {seed} epochs {epochs or 'default'}: auc {m['auc']:.3f} ({dt:.0f} s, {chose} epochs)", flush=True)
    return {"held": held, "seed": seed, "epochs": epochs, "auc": m["auc"], "f1": m["f1"], "chose": chose}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("mode", choices=["lopo", "images", "summary", "curves"])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--sections", nargs="+", default=list(LABELLED))
    p.add_argument("--held", nargs="+", default=None, help="lopo: the folds (held-out sections) to run; default all")
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--curve-epochs", type=int, nargs="+", default=[1, 2, 3, 5, 8, 12, 20, 30],
                   help="curves: the fixed epoch counts")
    p.add_argument("--pretrain-epochs", type=int, default=None, help="images: alignment pre-training epochs")
    p.add_argument("--encoder", default=DEFAULT_ENCODER, help="images: the image encoder (default: the tools' default)")
    p.add_argument("--targets", nargs="+", choices=["C6", "B4"], default=None, help="images: the splits to run (targets)")
    p.add_argument("--validation", choices=["section", "spots", "none"], default="section",
                   help="lopo: what SpaCRD's early stopping watches (sf.tl.spacrd validation=)")
    p.add_argument("--jobs", type=int, default=2,
                   help="lopo: folds run at once, each with sf.settings.threads(jobs) torch threads")
    p.add_argument("--undetermined", choices=["normal", "unlabelled"], default="normal",
                   help="training labels of spots the pathologist marked undetermined (lopo)")
    p.add_argument("--set", nargs="+", default=[], metavar="KEY=VALUE",
                   help="lopo/summary/images: further sf.tl.spacrd keyword arguments (Python literals), e.g. average_from=5")
    a = p.parse_args(argv)
    options = keyword_options(a.set)
    sf.settings.verbosity = 1
    if a.mode == "lopo":
        lopo(a.seeds, a.sections, a.held or a.sections, a.epochs, a.undetermined, a.validation, a.jobs, options)
    elif a.mode == "curves":
        curves(a.seeds, a.sections, a.held or ["C1", "F1"], a.curve_epochs, a.jobs, options)
    elif a.mode == "summary":
        summary(a.seeds, a.sections, a.epochs, a.undetermined, a.validation, options)
    else:
        images(a.seeds, a.epochs, a.pretrain_epochs, a.encoder, a.targets, options)


if __name__ == "__main__":
    main()
