"""``make demo`` / ``stfuse demo``: the four tools on one section, a zarr, a one-page figure and the metrics.

On HER2ST (``$STFUSE_DATA/her2st``, else ``../shared/data``, else downloaded when online) the target is
section C2 (author clusters, cancer calls derived from the cluster names) and the transfer tools learn from
sections C3 and C4 of the same patient series. Without HER2ST, three synthetic toy sections stand in and the
demo says so.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import shlex
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from . import _logging as log

__all__ = ["run_demo"]


@dataclass
class _Case:
    source: str
    target: Any
    references: list[Any]
    truth: str  # obs column of the target with the reference domains
    gene: str  # gene shown measured vs predicted
    genes: list[str] = field(default_factory=list)  # genes HistoSPACE predicts


def _her2st(quick: bool) -> _Case:
    from . import datasets

    root = datasets.her2st_path(None, download=True)
    target = datasets.her2st("C2", root)
    names = ("C3",) if quick else ("C3", "C4")
    references = [datasets.her2st(s, root) for s in names]
    table = target.tables["table"]
    genes = [g for g in ("GNAS", "ERBB2", "HLA-B", "FASN", "KRT19", "MGP") if g in table.var_names]
    return _Case(f"HER2ST section C2 (references {', '.join(names)}) from {root}", target, references, "cluster",
                 "GNAS", genes)


def _toy(quick: bool) -> _Case:
    import numpy as np

    from . import datasets

    n = 400 if quick else 900
    target = datasets.toy(n_spots=n, seed=0)
    references = [datasets.toy(n_spots=n, seed=s) for s in (1, 2)]
    X = references[0].tables["table"].X
    var = np.asarray(X.power(2).mean(axis=0)).ravel() - np.asarray(X.mean(axis=0)).ravel() ** 2
    names = list(references[0].tables["table"].var_names[np.argsort(-var)[:6]])
    return _Case("synthetic toy sections (sf.datasets.toy)", target, references, "region",
                 names[0], names)


def _load(quick: bool, data: str) -> _Case:
    from ._errors import StfuseError

    if data == "toy":
        return _toy(quick)
    if data == "her2st":
        return _her2st(quick)
    try:
        return _her2st(quick)
    except (StfuseError, OSError) as e:  # absent and offline
        log.warning(f"HER2ST not available ({e}); using the synthetic toy sections")
        return _toy(quick)


def _machine() -> str:
    """One line describing this machine (cores, RAM, GPU, Python), as ``benchmarks/RESULTS.md`` writes it."""
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        ram = f", {os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30:.0f} GiB RAM"
    except (AttributeError, ValueError, OSError):  # no sysconf (Windows)
        ram = ""
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return f"{os.cpu_count()}-core {cpu} CPU{ram}, {gpu}, Python {platform.python_version()}"


def _command(out: Path, quick: bool, data: str) -> str:
    """The ``stfuse demo`` command line equivalent to these arguments (``make demo`` runs the first one)."""
    words = ["stfuse", "demo", "--out", shlex.quote(str(out))]
    words += ["--quick"] if quick else []
    words += ["--data", data] if data != "auto" else []
    return " ".join(words)


def run_demo(out: Path, *, quick: bool = False, data: Literal["auto", "her2st", "toy"] = "auto") -> str:
    """Run senca, spacrd, stmic and histospace on one section; write a zarr, a figure and metrics.

    Parameters
    ----------
    out
        Output folder (created): ``demo.zarr``, ``demo.png``, ``metrics.json`` (the metrics with the date,
        machine and command; ``scripts/make_doc_figures.py demo`` turns it into the docs' landing-page caption).
    quick
        Fewer epochs and references (for tests); the metrics are then not representative.
    data
        ``"her2st"`` (downloaded when absent and online), ``"toy"``, or ``"auto"``: HER2ST, else the toy.

    Returns
    -------
    A summary: the data used, every metric and the files written.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from . import metrics, pl, tl

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    run = {"date": _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%d"), "machine": _machine(),
           "command": _command(out, quick, data)}
    case = _load(quick, data)
    log.info(f"demo on {case.source}")
    sdata, table = case.target, case.target.tables["table"]
    truth = table.obs[case.truth]
    n_domains = int(truth[truth.notna()].nunique())
    m: dict[str, Any] = {**run, "data": case.source, "spots": int(table.n_obs)}
    seconds: dict[str, float] = {}

    t = time.perf_counter()
    tl.stmic(sdata, n_clusters=n_domains)
    seconds["stmic"] = time.perf_counter() - t
    m["stmic ARI"] = metrics.ari(truth, table.obs["stmic"])

    t = time.perf_counter()
    tl.senca(sdata, n_clusters=n_domains, **({"steps": 2} if quick else {}))
    seconds["senca"] = time.perf_counter() - t
    m["senca ARI"] = metrics.ari(truth, table.obs["senca"])

    t = time.perf_counter()
    tl.spacrd(sdata, case.references, epochs=2 if quick else 30, pretrain_epochs=1 if quick else 10)
    seconds["spacrd"] = time.perf_counter() - t
    cls = metrics.classification(table.obs["cancer"].astype(bool), table.obs["spacrd_score"], table.obs["spacrd"])
    m.update({f"spacrd {k}": v for k, v in cls.items()})

    t = time.perf_counter()
    tl.histospace(sdata, case.references, genes=case.genes, epochs=1 if quick else 10, tta=False)
    seconds["histospace"] = time.perf_counter() - t
    genes = list(table.uns["histospace"]["genes"])
    measured = np.log1p(1e4 * np.asarray(table[:, genes].X.todense()) / np.asarray(table.X.sum(axis=1)))
    r = metrics.pearson_per_gene(measured, np.asarray(table.obsm["X_histospace_pred"]))
    m.update({f"histospace r {g}": float(v) for g, v in zip(genes, r)})
    m["seconds"] = {k: round(v, 1) for k, v in seconds.items()}

    fig, axes = plt.subplots(2, 3, figsize=(16.5, 10.5))
    pl.spots(sdata, None, ax=axes[0, 0], title="H&E", legend=False)
    pl.spots(sdata, "senca", ax=axes[0, 1], title=f"SENCA domains (ARI {m['senca ARI']:.2f})")
    pl.spots(sdata, "stmic", ax=axes[0, 2], title=f"stMIC domains (ARI {m['stmic ARI']:.2f})")
    pl.spots(sdata, "spacrd_score", ax=axes[1, 0], title=f"SpaCRD cancer score (AUC {m['spacrd auc']:.2f})")
    table.obs[f"{case.gene}_measured"] = measured[:, genes.index(case.gene)]
    table.obs[f"{case.gene}_predicted"] = table.obsm["X_histospace_pred"][:, genes.index(case.gene)]
    pl.spots(sdata, f"{case.gene}_measured", ax=axes[1, 1], title=f"{case.gene} measured (log1p CP10k)")
    pl.spots(sdata, f"{case.gene}_predicted", ax=axes[1, 2],
             title=f"{case.gene} predicted from H&E (r {m[f'histospace r {case.gene}']:.2f})")
    fig.suptitle(f"stfuse demo: {case.source.split(' from ')[0]}", fontsize=13)
    fig.savefig(out / "demo.png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    sdata.write(out / "demo.zarr", overwrite=True)
    (out / "metrics.json").write_text(json.dumps(m, indent=2, default=float))
    lines = [f"stfuse demo on {case.source}: {m['spots']} spots"]
    lines += [f"  {k:<24} {v:.3f}" for k, v in m.items() if isinstance(v, float)]
    lines += [f"  time (s): {m['seconds']}", f"wrote {out / 'demo.zarr'}, {out / 'demo.png'}, {out / 'metrics.json'}"]
    if quick:
        lines.append("(quick mode: few epochs, the metrics are not representative)")
    return "\n".join(lines)
