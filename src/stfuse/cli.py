"""The ``stfuse`` command line: ``stfuse read-st``, ``stfuse run <tool>``, ``stfuse demo``.

The options of ``stfuse run <tool>`` are read from the source of ``sf.tl.<tool>`` (its signature, type
hints and numpy docstring) without importing it, so ``stfuse --help`` starts without loading torch,
scanpy or spatialdata; the tool is imported only when it runs. Option values are converted with the
type hints (``int``, ``float``, ``bool``, ``str``, ``None``, ``Literal`` choices, comma-separated lists);
a bad value, an unknown option or any :class:`stfuse.StfuseError` prints one line and exits with 2.
"""

from __future__ import annotations

import argparse
import ast
import functools
import os
import re
import shutil
import sys
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ._docs import expand_docs
from ._errors import StfuseError

__all__ = ["build_parser", "main"]

TOOLS = ("senca", "spacrd", "stmic", "histospace")
# keywords that are not options: objects, handled by their own options, or only meaningful for an AnnData
# (the command line reads a SpatialData .zarr)
_SKIP = {"copy", "return_model", "model", "reference", "library_id", "library_key"}
_TL = Path(__file__).parent / "tl"
_NONE = ("none", "null")
_TRUE, _FALSE = ("true", "yes", "1"), ("false", "no", "0")


class _UsageError(Exception):
    """A command-line mistake: reported on one line, exit code 2."""

    def __init__(self, prog: str, message: str):
        super().__init__(message)
        self.prog = prog


class _Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line (no usage block) and exit with 2 through :func:`main`."""

    def error(self, message: str) -> Any:  # type: ignore[override]
        raise _UsageError(self.prog, message)


# --- options from the tools' source -------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Option:
    name: str
    annotation: ast.expr | None
    default: str  # source text of the default
    help: str


@dataclass(frozen=True)
class _Tool:
    name: str
    summary: str
    params: tuple[str, ...]  # every parameter name of the function
    options: tuple[_Option, ...]
    model_class: str | None  # class of the ``model`` parameter (for --model), None when the tool takes none


@functools.cache
def _module(path: Path) -> ast.Module:
    return ast.parse(path.read_text(encoding="utf-8"), filename=str(path))


def _tool_file(name: str) -> Path:
    """The ``tl`` module defining ``name``, from ``tl/__init__.py``'s ``from ._x import name`` lines."""
    for node in _module(_TL / "__init__.py").body:
        if isinstance(node, ast.ImportFrom) and node.level == 1 and any(a.name == name for a in node.names):
            return _TL / f"{node.module}.py"
    raise KeyError(f"stfuse.tl has no tool {name!r}")


def _aliases(path: Path) -> dict[str, ast.expr]:
    """Module-level ``Name = <type>`` assignments of ``path``, following ``from ._x import Name`` once."""
    out: dict[str, ast.expr] = {}
    for node in _module(path).body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            out[node.targets[0].id] = node.value
        elif isinstance(node, ast.ImportFrom) and node.level == 1 and node.module:
            other = path.parent / f"{node.module}.py"
            if other.exists():
                found = {n.targets[0].id: n.value for n in _module(other).body if isinstance(n, ast.Assign)
                         and len(n.targets) == 1 and isinstance(n.targets[0], ast.Name)}
                out.update({a.asname or a.name: found[a.name] for a in node.names if a.name in found})
    return out


def _rst(text: str) -> str:
    """Docstring text as plain text: roles and literals unwrapped, ``%`` escaped for argparse."""
    text = re.sub(r":\w+:`~?([^`]+)`", r"\1", text).replace("``", "")
    return text.replace("%", "%%")


def _param_docs(doc: str) -> dict[str, str]:
    """``name -> description`` from the "Parameters" section of a numpy docstring (``a, b`` share one)."""
    lines = expand_docs(doc).splitlines()
    try:
        start = next(i for i, line in enumerate(lines[:-1]) if line.strip() == "Parameters"
                     and set(lines[i + 1].strip()) == {"-"})
    except StopIteration:
        return {}
    out: dict[str, list[str]] = {}
    names: list[str] = []
    for i in range(start + 2, len(lines)):
        line = lines[i]
        if i + 1 < len(lines) and line.strip() and set(lines[i + 1].strip()) == {"-"}:
            break  # the next section
        if line and not line[0].isspace():
            names = [n.strip().lstrip("*") for n in line.split(":")[0].split(",")]
            for n in names:
                out[n] = []
        elif line.strip():
            for n in names:
                out[n].append(line.strip())
    return {n: " ".join(words) for n, words in out.items()}


@functools.cache
def _tool(name: str) -> _Tool:
    """What the command line needs to know about ``sf.tl.<name>``, read from its source."""
    path = _tool_file(name)
    func = next(n for n in _module(path).body if isinstance(n, ast.FunctionDef) and n.name == name)
    a = func.args
    positional = a.posonlyargs + a.args
    defaults = [None] * (len(positional) - len(a.defaults)) + list(a.defaults)
    pairs = list(zip(positional, defaults, strict=True)) + list(zip(a.kwonlyargs, a.kw_defaults, strict=True))
    doc = ast.get_docstring(func) or name
    helps = _param_docs(doc)
    options, params, model_class = [], [], None
    for arg, default in pairs[1:]:  # the first parameter is the data
        params.append(arg.arg)
        if arg.arg == "model" and arg.annotation is not None:
            model_class = next((p.id for p in _union(arg.annotation, {}) if isinstance(p, ast.Name)), None)
        if arg.arg in _SKIP or default is None:
            continue
        options.append(_Option(arg.arg, arg.annotation, ast.unparse(default), _rst(helps.get(arg.arg, ""))))
    return _Tool(name, _rst(doc.splitlines()[0]), tuple(params), tuple(options), model_class)


def _union(ann: ast.expr, aliases: dict[str, ast.expr], depth: int = 0) -> list[ast.expr]:
    """The alternatives of a type hint (``a | b``, ``Optional[a]``, ``Union[a, b]``; aliases resolved)."""
    if depth > 5:
        return [ann]
    if isinstance(ann, ast.BinOp) and isinstance(ann.op, ast.BitOr):
        return _union(ann.left, aliases, depth + 1) + _union(ann.right, aliases, depth + 1)
    if isinstance(ann, ast.Name) and ann.id in aliases:
        return _union(aliases[ann.id], aliases, depth + 1)
    if isinstance(ann, ast.Subscript) and _base(ann) in ("Optional", "Union"):
        items = ann.slice.elts if isinstance(ann.slice, ast.Tuple) else [ann.slice]
        return [p for item in items for p in _union(item, aliases, depth + 1)] + (
            [ast.Constant(None)] if _base(ann) == "Optional" else [])
    return [ann]


def _base(ann: ast.expr) -> str:
    """``Literal`` for ``Literal[...]``/``typing.Literal[...]``, ``int`` for ``int``, ``PathLike`` for ``os.PathLike``."""
    node = ann.value if isinstance(ann, ast.Subscript) else ann
    if isinstance(node, ast.Attribute):
        return node.attr
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Constant) and node.value is None:
        return "None"
    return ""


def _auto(text: str) -> Any:
    """Text to None, a bool, a number, a list (``a,b``) or the text itself (for parameters typed ``Any``)."""
    if "," in text:
        return [_auto(t) for t in text.split(",") if t.strip()]
    low = text.strip().lower()
    if low in _NONE:
        return None
    if low in ("true", "false"):
        return low == "true"
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text


def _to_bool(text: str) -> bool:
    low = text.strip().lower()
    if low in _TRUE or low in _FALSE:
        return low in _TRUE
    raise ValueError(text)


def _literal(choices: list[Any]) -> Callable[[str], Any]:
    def convert(text: str) -> Any:
        for c in choices:
            if text == str(c):
                return c
        raise ValueError(text)

    return convert


_SCALARS: dict[str, tuple[str, Callable[[str], Any]]] = {
    "int": ("an integer", int), "float": ("a number", float), "bool": ("true or false", _to_bool),
    "str": ("text", str), "PathLike": ("a path", str), "Path": ("a path", str), "Any": ("a value", _auto),
}
_LISTS = ("Sequence", "list", "tuple", "Iterable", "Collection")


def _converter(ann: ast.expr | None, aliases: dict[str, ast.expr]) -> tuple[Callable[[str], Any], str] | None:
    """A function turning option text into a value of type ``ann``, and its metavar; None if not representable."""
    if ann is None:
        return _auto, "VALUE"
    parts = _union(ann, aliases)
    nullable = any(_base(p) == "None" for p in parts)
    tries: list[tuple[str, Callable[[str], Any]]] = []
    metavars: list[str] = []
    for p in parts:
        base = _base(p)
        if base == "Literal" and isinstance(p, ast.Subscript):
            items = p.slice.elts if isinstance(p.slice, ast.Tuple) else [p.slice]
            choices = [i.value for i in items if isinstance(i, ast.Constant)]
            tries.append(("one of " + ", ".join(map(repr, choices)), _literal(choices)))
            metavars.append("{" + ",".join(map(str, choices)) + "}")
        elif base in _LISTS and isinstance(p, ast.Subscript):
            inner = p.slice.elts[0] if isinstance(p.slice, ast.Tuple) else p.slice
            item = _converter(inner, aliases)
            if item is not None:
                tries.append(("a comma-separated list", _listing(item[0])))
                metavars.append("A,B,...")
        elif base in _SCALARS:
            tries.append(_SCALARS[base])
            metavars.append({"int": "N", "float": "X", "bool": "BOOL", "Any": "VALUE"}.get(base, "TEXT"))
    if not tries:
        return None
    tries.sort(key=lambda t: t[1] in (str, _auto))  # text last: a number or a choice first

    def convert(text: str) -> Any:
        if nullable and text.strip().lower() in _NONE:
            return None
        for _, cast in tries:
            try:
                return cast(text)
            except ValueError:
                pass
        expected = " or ".join([w for w, _ in tries] + (["none"] if nullable else []))
        raise argparse.ArgumentTypeError(f"{text!r} is not {expected}")

    return convert, "|".join(dict.fromkeys(metavars)) + ("|none" if nullable else "")


def _listing(item: Callable[[str], Any]) -> Callable[[str], list[Any]]:
    def convert(text: str) -> list[Any]:
        return [item(t.strip()) for t in text.split(",") if t.strip()]

    return convert


def _add_tool_options(parser: argparse.ArgumentParser, tool: _Tool) -> None:
    """One option per keyword parameter of the tool (values not given are left to the tool's defaults)."""
    aliases = _aliases(_tool_file(tool.name))
    group = parser.add_argument_group(f"options of sf.tl.{tool.name}")
    for opt in tool.options:
        flag = "--" + opt.name.replace("_", "-")
        text = f"{opt.help} (default: {_rst(_default_text(opt.default))})".strip()
        dest = f"tool:{opt.name}"
        if isinstance(opt.annotation, ast.Name) and opt.annotation.id == "bool":
            group.add_argument(flag, dest=dest, action=argparse.BooleanOptionalAction, default=argparse.SUPPRESS,
                               help=text)
            continue
        conv = _converter(opt.annotation, aliases)
        if conv is not None:
            group.add_argument(flag, dest=dest, type=conv[0], metavar=conv[1], default=argparse.SUPPRESS, help=text)


def _default_text(source: str) -> str:
    """A default's source text, with the project's key constants (``K.NAME``) replaced by their values."""
    from . import _keys

    found = re.fullmatch(r"K\.(\w+)", source)
    return repr(getattr(_keys, found.group(1), source)) if found else source


def _options_line(tool: _Tool) -> str:
    flags = ["--reference"] if "reference" in tool.params else []
    flags += ["--model"] if tool.model_class else []
    flags += ["--save-model"] if "return_model" in tool.params else []
    flags += ["--" + o.name.replace("_", "-") for o in tool.options]
    return ", ".join(["--out", "--overwrite", *flags])


def _unknown(args: argparse.Namespace, extra: list[str]) -> _UsageError:
    """The error for arguments the parser did not take, naming the tool's options."""
    if getattr(args, "command", None) != "run":
        return _UsageError("stfuse", f"unrecognized arguments: {' '.join(extra)}")
    tool = _tool(args.tool)
    prog = f"stfuse run {tool.name}"
    flags = [e for e in extra if e.startswith("--")]
    what = f"{tool.name} does not take {', '.join(flags)}" if flags else f"unrecognized arguments: {' '.join(extra)}"
    return _UsageError(prog, f"{what}; its options: {_options_line(tool)}")


# --- commands -----------------------------------------------------------------------------------------------------


def _read_st(args: argparse.Namespace) -> str:
    if args.out and args.out_opt and args.out != args.out_opt:
        raise StfuseError(f"two output paths given ({args.out} and --out {args.out_opt}); give one.")
    out = Path(args.out_opt or args.out or "")
    if not args.out_opt and not args.out:
        raise StfuseError("no output path: pass --out OUT.zarr.")
    if out.exists() and not args.overwrite:
        raise StfuseError(f"{out} exists; pass --overwrite to replace it.")
    from .io import read_st

    sdata = read_st(args.counts, args.spots, args.image, image_scale=args.image_scale, labels=args.labels,
                    clusters=args.clusters, cluster_names=args.cluster_names, section=args.section)
    sdata.write(out, overwrite=args.overwrite)
    t = sdata.tables["table"]
    return f"wrote {out}: {t.n_obs} spots, {t.n_vars} genes, images: {list(sdata.images)}"


_OLD = "_stfuse_old"  # suffix of a table being replaced, between the two renames of the swap


def _staging(store: Path) -> Path:
    """Where an updated table is written before it replaces the old one: beside the store, same file system."""
    return store.parent / f".{store.name}.stfuse-tmp"


def _recover(store: Path) -> None:
    """Undo what an interrupted in-place update left: a table renamed away for the swap, a staging store."""
    tables = store / "tables"
    for old in tables.glob(f"*{_OLD}") if tables.is_dir() else []:
        name = tables / old.name[: -len(_OLD)]
        if name.exists():  # the swap completed: the old copy is garbage
            shutil.rmtree(old)
        else:
            os.replace(old, name)
    shutil.rmtree(_staging(store), ignore_errors=True)


def _write_tables_in_place(sdata: Any, names: list[str], existing: set[str]) -> None:
    """Write ``sdata.tables[names]`` into the store ``sdata`` was read from without ever losing a table on disk.

    A table already in the store is first written completely to a staging store beside it, then swapped
    with the old one by two directory renames; an interruption before the swap leaves the store as it was,
    and one between the renames is undone by the next ``stfuse run`` (:func:`_recover`).
    """
    import spatialdata as sd

    store = Path(sdata.path)
    staging = _staging(store)
    for name in names:
        if name not in existing:
            sdata.write_element(name)
            continue
        shutil.rmtree(staging, ignore_errors=True)
        try:
            with warnings.catch_warnings():  # the staging store holds the table without the spots it annotates
                warnings.filterwarnings("ignore", message="The table is annotating", category=UserWarning)
                staged = sd.SpatialData(tables={name: sdata.tables[name]})
            staged.write(staging)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        table, old = store / "tables" / name, store / "tables" / f"{name}{_OLD}"
        os.replace(table, old)
        os.replace(staging / "tables" / name, table)
        shutil.rmtree(old)
        shutil.rmtree(staging)
    sdata.write_consolidated_metadata()


def _run(args: argparse.Namespace) -> str:
    tool = _tool(args.tool)
    src = Path(args.input)
    if not src.exists():
        raise FileNotFoundError(f"input {src} does not exist")
    if args.out and Path(args.out).exists() and not args.overwrite:
        raise StfuseError(f"{args.out} exists; pass --overwrite to replace it.")
    _recover(src)
    import spatialdata as sd

    from . import models, tl
    from ._spots import infer_table_key

    func = getattr(tl, tool.name)
    sdata = sd.read_zarr(src)
    kwargs = {k.split(":", 1)[1]: v for k, v in vars(args).items() if k.startswith("tool:")}
    if getattr(args, "reference", None):
        refs = [sd.read_zarr(r) for r in args.reference]
        kwargs["reference"] = refs if len(refs) > 1 else refs[0]
    if getattr(args, "model", None):
        kwargs["model"] = getattr(models, tool.model_class).load(args.model)
    save_model = getattr(args, "save_model", None)
    if save_model:
        kwargs["return_model"] = True
    table_key = infer_table_key(sdata, kwargs.get("table_key"))  # the table the tool writes to
    before = set(sdata.tables)
    cols_before = set(sdata.tables[table_key].obs.columns) if table_key in sdata.tables else set()
    model = func(sdata, **kwargs)
    if save_model and model is not None:
        model.save(save_model, overwrite=True)
    new_tables = sorted(set(sdata.tables) - before)
    if args.out:
        sdata.write(args.out, overwrite=args.overwrite)
        where = args.out
    else:  # update the input store in place: rewrite only the tables
        _write_tables_in_place(sdata, ([table_key] if table_key in before else []) + new_tables, before)
        where = str(src)
    added = sorted(set(sdata.tables[table_key].obs.columns) - cols_before) if table_key in sdata.tables else []
    lines = [f"{tool.name}: wrote {where}"]
    if added:
        lines.append(f"  new obs columns: {added}")
    if new_tables:
        lines.append(f"  new tables: {new_tables}")
    if save_model:
        lines.append(f"  model saved to {save_model}")
    return "\n".join(lines)


def _demo(args: argparse.Namespace) -> str:
    from ._demo import run_demo

    return run_demo(Path(args.out), quick=args.quick, data=args.data)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (exposed for the docs and tests); builds without importing the tools.

    Examples
    --------
    >>> from stfuse.cli import build_parser
    >>> args = build_parser().parse_args(["run", "stmic", "c2.zarr", "--n-clusters", "7"])
    >>> args.tool, vars(args)["tool:n_clusters"]
    ('stmic', 7)
    """
    from ._version import __version__

    p = _Parser(prog="stfuse", description="Fuse spatial transcriptomics with H&E histology.")
    p.add_argument("--version", action="version", version=f"stfuse {__version__}")
    p.add_argument("-v", "--verbose", action="count", default=0, help="more log output (-v info, -vv hints)")
    sub = p.add_subparsers(dest="command", required=True)

    r = sub.add_parser("read-st", help="convert legacy ST files (counts, spot file, image) to a SpatialData zarr")
    r.add_argument("out", nargs="?", help="output .zarr path (or --out)")
    r.add_argument("--out", dest="out_opt", metavar="OUT", help="output .zarr path")
    r.add_argument("--counts", required=True, help="spots x genes counts .tsv(.gz)")
    r.add_argument("--spots", required=True, help="spot detector file (_selection.tsv)")
    r.add_argument("--image", help="H&E image (JPEG/PNG)")
    r.add_argument("--image-scale", type=float, default=1.0, help="image size relative to the spot pixel coordinates")
    r.add_argument("--labels", help="pathologist labels (_labeled_coordinates.tsv)")
    r.add_argument("--clusters", help="author clusters (-cluster-annotation.tsv.gz)")
    r.add_argument("--cluster-names", help="motivation.csv with cluster names")
    r.add_argument("--section", help="section name (default: from the counts file name)")
    r.add_argument("--overwrite", action="store_true", help="replace an existing output store")
    r.set_defaults(func=_read_st)

    run = sub.add_parser("run", help="run a tool on a SpatialData zarr")
    tools = run.add_subparsers(dest="tool", required=True)
    for name in TOOLS:
        tool = _tool(name)
        t = tools.add_parser(name, help=tool.summary, description=tool.summary)
        t.add_argument("input", help="SpatialData .zarr (its table is updated in place unless --out)")
        t.add_argument("--out", help="write the result to this new .zarr instead of updating the input")
        t.add_argument("--overwrite", action="store_true", help="allow --out to replace an existing store")
        if "reference" in tool.params:
            t.add_argument("--reference", nargs="+", help="labelled/measured reference .zarr store(s)")
        if tool.model_class:
            t.add_argument("--model", help=f"directory of a saved {tool.model_class} to apply instead of training "
                           "(e.g. from --save-model); the section is prepared as the model's training data were")
        if "return_model" in tool.params:
            t.add_argument("--save-model", help="save the trained model to this directory")
        _add_tool_options(t, tool)
        t.set_defaults(func=_run)

    d = sub.add_parser("demo", help="run the tools on HER2ST ($STFUSE_DATA) or the toy data; write zarr + figure")
    d.add_argument("--out", default="results/demo", help="output folder")
    d.add_argument("--quick", action="store_true", help="fewer epochs (a smoke test)")
    d.add_argument("--data", choices=["auto", "her2st", "toy"], default="auto",
                   help="HER2ST (from $STFUSE_DATA, downloaded when absent) or the synthetic toy; auto: HER2ST, else toy")
    d.set_defaults(func=_demo)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``stfuse`` command; returns the exit code.

    Examples
    --------
    >>> from stfuse.cli import main
    >>> main(["run", "stmic", "missing.zarr"])  # doctest: +SKIP
    2
    """
    try:
        args, extra = build_parser().parse_known_args(argv)
        if extra:
            raise _unknown(args, extra)
    except _UsageError as e:
        print(f"{e.prog}: error: {e}", file=sys.stderr)
        return 2
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
