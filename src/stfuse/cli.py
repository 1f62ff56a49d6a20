"""The ``stfuse`` command line: ``stfuse read-st``, ``stfuse run <tool>``, ``stfuse demo``."""

from __future__ import annotations

import argparse
import inspect
import sys
import typing
from collections.abc import Sequence
from pathlib import Path
from typing import Any

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


TOOLS = {"senca": "SENCA", "spacrd": "SpaCRD", "stmic": None, "histospace": "HistoSPACE"}
# not options: objects, or keywords for an AnnData (the command line reads a SpatialData .zarr)
_SKIP = {"copy", "return_model", "model", "reference", "library_id", "library_key"}


def _parse_value(text: str) -> Any:
    """Command-line text to a Python value: None/true/false, numbers, lists (a,b,c), else the string."""
    low = text.strip().lower()
    if low in ("none", "null"):
        return None
    if low in ("true", "false"):
        return low == "true"
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    if "," in text:
        return [_parse_value(t) for t in text.split(",") if t.strip()]
    return text


def _tool_options(parser: argparse.ArgumentParser, func: Any) -> list[str]:
    """Add one option per keyword parameter of ``func`` (from its signature and type hints)."""
    hints: dict[str, Any] = {}
    try:
        hints = typing.get_type_hints(func)
    except Exception:
        pass
    names = []
    for name, par in list(inspect.signature(func).parameters.items())[1:]:
        if par.kind not in (par.KEYWORD_ONLY, par.POSITIONAL_OR_KEYWORD) or name in _SKIP:
            continue
        flag = "--" + name.replace("_", "-")
        default = par.default
        choices = [a for a in typing.get_args(hints.get(name)) if isinstance(a, str)] if name in hints else []
        literal = typing.get_origin(hints.get(name)) is typing.Literal
        if isinstance(default, bool):
            parser.add_argument(flag, dest=name, action=argparse.BooleanOptionalAction, default=default)
        elif literal and choices:
            parser.add_argument(flag, dest=name, choices=choices, default=default, help=f"default {default!r}")
        else:
            parser.add_argument(flag, dest=name, type=_parse_value, default=default, help=f"default {default!r}")
        names.append(name)
    return names


def _run(args: argparse.Namespace) -> str:
    import spatialdata as sd

    from . import models, tl
    from ._spots import infer_table_key

    func = getattr(tl, args.tool)
    src = Path(args.input)
    if not src.exists():
        raise FileNotFoundError(f"input {src} does not exist")
    sdata = sd.read_zarr(src)
    kwargs = {n: getattr(args, n) for n in args.tool_params}
    sig = inspect.signature(func).parameters
    if "reference" in sig and args.reference:
        refs = [sd.read_zarr(r) for r in args.reference]
        kwargs["reference"] = refs if len(refs) > 1 else refs[0]
    if args.model:
        kwargs["model"] = getattr(models, TOOLS[args.tool]).load(args.model)
    if args.save_model:
        kwargs["return_model"] = True
    table_key = infer_table_key(sdata, kwargs.get("table_key"))  # the table the tool writes to
    before = set(sdata.tables)
    cols_before = set(sdata.tables[table_key].obs.columns) if table_key in sdata.tables else set()
    model = func(sdata, **kwargs)
    if args.save_model and model is not None:
        model.save(args.save_model, overwrite=True)
    new_tables = sorted(set(sdata.tables) - before)
    if args.out:
        sdata.write(args.out, overwrite=args.overwrite)
        where = args.out
    else:  # update the input store in place: rewrite only the tables
        for name in ([table_key] if table_key in before else []) + new_tables:
            if name in before:
                sdata.delete_element_from_disk(name)
            sdata.write_element(name)
        where = str(src)
    added = sorted(set(sdata.tables[table_key].obs.columns) - cols_before) if table_key in sdata.tables else []
    lines = [f"{args.tool}: wrote {where}"]
    if added:
        lines.append(f"  new obs columns: {added}")
    if new_tables:
        lines.append(f"  new tables: {new_tables}")
    if args.save_model:
        lines.append(f"  model saved to {args.save_model}")
    return "\n".join(lines)


def _demo(args: argparse.Namespace) -> str:
    from ._demo import run_demo

    return run_demo(Path(args.out), quick=args.quick, data=args.data)


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

    run = sub.add_parser("run", help="run a tool on a SpatialData zarr")
    tools = run.add_subparsers(dest="tool", required=True)
    from . import tl

    for name in TOOLS:
        func = getattr(tl, name, None)
        if func is None:
            continue
        summary = (func.__doc__ or "").strip().splitlines()[0] if func.__doc__ else name
        t = tools.add_parser(name, help=summary, description=summary)
        t.add_argument("input", help="SpatialData .zarr (updated in place unless --out)")
        t.add_argument("--out", help="write the result to this new .zarr instead of updating the input")
        t.add_argument("--overwrite", action="store_true", help="allow --out to replace an existing store")
        if name != "stmic":
            t.add_argument("--reference", nargs="+", help="labelled/measured reference .zarr store(s)")
            t.add_argument("--model", help="directory of a saved model to apply (instead of training)")
            t.add_argument("--save-model", help="save the trained model to this directory")
        t.set_defaults(func=_run, tool_params=_tool_options(t, func), reference=None, model=None, save_model=None)

    d = sub.add_parser("demo", help="run the tools on HER2ST ($STFUSE_DATA) or the toy data; write zarr + figure")
    d.add_argument("--out", default="results/demo", help="output folder")
    d.add_argument("--quick", action="store_true", help="fewer epochs (a smoke test)")
    d.add_argument("--data", choices=["auto", "her2st", "toy"], default="auto",
                   help="HER2ST (from $STFUSE_DATA, downloaded when absent) or the synthetic toy; auto: HER2ST, else toy")
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
