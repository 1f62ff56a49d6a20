"""The ``stfuse`` command line: ``stfuse read-st``, ``stfuse run <tool>``, ``stfuse demo``."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from ._errors import StfuseError

__all__ = ["main"]


def _read_st(args: argparse.Namespace) -> str:
    from .io import read_st

    sdata = read_st(args.counts, args.spots, args.image, image_scale=args.image_scale, labels=args.labels,
                    clusters=args.clusters, cluster_names=args.cluster_names, section=args.section)
    out = Path(args.out)
    if out.exists() and not args.overwrite:
        raise StfuseError(f"{out} exists; pass --overwrite to replace it.")
    sdata.write(out, overwrite=args.overwrite)
    t = sdata.tables["table"]
    return f"wrote {out}: {t.n_obs} spots, {t.n_vars} genes, images: {list(sdata.images)}"


def _demo(args: argparse.Namespace) -> str:
    from ._demo import run_demo

    return run_demo(Path(args.out), quick=args.quick)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (exposed for the docs and tests)."""
    from ._version import __version__

    p = argparse.ArgumentParser(prog="stfuse", description="Fuse spatial transcriptomics with H&E histology.")
    p.add_argument("--version", action="version", version=f"stfuse {__version__}")
    p.add_argument("-v", "--verbose", action="count", default=0, help="more log output (-v info, -vv hints)")
    sub = p.add_subparsers(dest="command", required=True)

    r = sub.add_parser("read-st", help="convert legacy ST files (counts, spot file, image) to a SpatialData zarr")
    r.add_argument("out", help="output .zarr path")
    r.add_argument("--counts", required=True, help="spots x genes counts .tsv(.gz)")
    r.add_argument("--spots", required=True, help="spot detector file (_selection.tsv)")
    r.add_argument("--image", help="H&E image (JPEG/PNG)")
    r.add_argument("--image-scale", type=float, default=1.0, help="image size relative to the spot pixel coordinates")
    r.add_argument("--labels", help="pathologist labels (_labeled_coordinates.tsv)")
    r.add_argument("--clusters", help="author clusters (-cluster-annotation.tsv.gz)")
    r.add_argument("--cluster-names", help="motivation.csv with cluster names")
    r.add_argument("--section", help="section name (default: from the counts file name)")
    r.add_argument("--overwrite", action="store_true")
    r.set_defaults(func=_read_st)

    d = sub.add_parser("demo", help="run the tools on HER2ST ($STFUSE_DATA) or the toy data; write zarr + figure")
    d.add_argument("--out", default="results/demo", help="output folder")
    d.add_argument("--quick", action="store_true", help="fewer epochs (a smoke test)")
    d.set_defaults(func=_demo)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``stfuse`` command; returns the exit code."""
    args = build_parser().parse_args(argv)
    from . import settings

    settings.verbosity = min(1 + args.verbose, 4)
    try:
        summary = args.func(args)
    except (StfuseError, FileNotFoundError, ValueError, KeyError) as e:
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        print(f"stfuse {args.command}: error: {msg}", file=sys.stderr)
        return 2
    print(summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
