"""Seed variation of the clustering tools: ARI to the truth over 5 seeds, and ARI between runs with different seeds.

Same seed on CPU gives identical labels (tested in tests/test_reliability.py); this measures how much the result
moves between seeds, on the toy section and on two HER2ST sections with images (author clusters as truth).

``python -m benchmarks.eval_seeds [--tools stmic senca] [--sections C2 C3] [--seeds 5]``
"""

from __future__ import annotations

import argparse
import copy
import itertools
import sys
import time

import numpy as np

import stfuse as sf

from ._util import append_results, table

TOOLS = {
    "stmic": lambda s, n, seed: sf.tl.stmic(s, n_clusters=n, random_state=seed),
    "senca": lambda s, n, seed: sf.tl.senca(s, n_clusters=n, random_state=seed),
}


def _sections(names: list[str]):
    yield "toy (900 spots)", sf.datasets.toy(n_spots=900, seed=0), "region"
    for name in names:
        yield f"HER2ST {name}", sf.datasets.her2st(name), "cluster"


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--tools", nargs="+", default=list(TOOLS), choices=list(TOOLS))
    p.add_argument("--sections", nargs="+", default=["C2", "C3"])
    p.add_argument("--seeds", type=int, default=5)
    args = p.parse_args(argv)
    sf.settings.verbosity = 0
    rows = []
    for label, sdata, truth_key in _sections(args.sections):
        sf.im.embed(sdata)  # features cached once, shared by every run
        truth = sdata.tables["table"].obs[truth_key]
        n = int(truth[truth.notna()].nunique())
        for tool in args.tools:
            labels, t0 = [], time.perf_counter()
            for seed in range(args.seeds):
                s = copy.deepcopy(sdata)
                TOOLS[tool](s, n, seed)
                labels.append(s.tables["table"].obs[tool].astype(str).to_numpy())
            aris = np.array([sf.metrics.ari(truth, lab) for lab in labels])
            between = [sf.metrics.ari(a, b, ignore=()) for a, b in itertools.combinations(labels, 2)]
            rows.append({"section": label, "tool": tool, "seeds": args.seeds, "ARI mean": float(aris.mean()),
                         "ARI sd": float(aris.std(ddof=1)), "ARI min": float(aris.min()), "ARI max": float(aris.max()),
                         "ARI between seeds (mean)": float(np.mean(between)),
                         "s per run": (time.perf_counter() - t0) / args.seeds})
            print(rows[-1], flush=True)
    body = ("ARI against the truth (toy regions; HER2ST author clusters) over seeds 0..n-1, n_clusters = number of "
            "truth classes, default parameters otherwise; 'between seeds' = mean ARI between the labels of every "
            "pair of seeds.\n\n" + table(rows))
    append_results("Seed variation of the clustering tools", body,
                   "python -m benchmarks.eval_seeds " + " ".join(argv))


if __name__ == "__main__":
    main()
