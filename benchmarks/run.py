"""Run the benchmarks: ``python -m benchmarks.run [name ...]`` runs ``benchmarks/bench_<name>.py:main``."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> None:
    names = argv if argv is not None else sys.argv[1:]
    found = sorted(p.stem[len("bench_"):] for p in Path(__file__).parent.glob("bench_*.py"))
    chosen = names or found
    unknown = [n for n in chosen if n not in found]
    if unknown:
        raise SystemExit(f"unknown benchmark(s) {unknown}; available: {found}")
    for name in chosen:
        print(f"=== benchmark {name}", flush=True)
        importlib.import_module(f"benchmarks.bench_{name}").main()


if __name__ == "__main__":
    main()
