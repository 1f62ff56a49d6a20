"""Shared helpers for benchmarks: timing, peak memory, results file."""

from __future__ import annotations

import datetime as _dt
import gc
import os
import platform
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "RESULTS.md"


def machine() -> str:
    """One line describing this machine."""
    cpu = platform.processor() or platform.machine()
    mem = psutil.virtual_memory().total / 2**30
    try:
        import torch

        gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    except Exception:  # pragma: no cover
        gpu = "no GPU"
    return f"{os.cpu_count()}-core {cpu} CPU, {mem:.0f} GiB RAM, {gpu}, Python {platform.python_version()}"


class PeakRSS:
    """Sample the process RSS every few ms; ``peak`` is the maximum above the starting RSS (MiB)."""

    def __init__(self, interval: float = 0.005) -> None:
        self.interval = interval
        self.proc = psutil.Process()
        self.start = 0
        self.max = 0
        self._stop = threading.Event()

    def __enter__(self) -> PeakRSS:
        gc.collect()
        self.start = self.max = self.proc.memory_info().rss
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            self.max = max(self.max, self.proc.memory_info().rss)
            time.sleep(self.interval)

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()
        self.max = max(self.max, self.proc.memory_info().rss)

    @property
    def peak_mib(self) -> float:
        return (self.max - self.start) / 2**20


def measure(fn: Callable[[], Any], *, repeat: int = 1) -> tuple[float, float, Any]:
    """Best wall time over ``repeat`` runs (s), peak extra RSS of the first run (MiB), last result."""
    times, peak, out = [], 0.0, None
    for i in range(repeat):
        with PeakRSS() as mem:
            t = time.perf_counter()
            out = fn()
            times.append(time.perf_counter() - t)
        if i == 0:
            peak = mem.peak_mib
    return min(times), peak, out


def append_results(title: str, body: str, command: str) -> None:
    """Append a dated section to benchmarks/RESULTS.md."""
    date = _dt.date.today().isoformat()
    text = f"\n## {title}\n\n- date: {date}\n- machine: {machine()}\n- command: `{command}`\n\n{body.strip()}\n"
    if not RESULTS.exists():
        RESULTS.write_text("# Benchmark results\n\nAppended by `make bench` (and the evaluation scripts named in each section).\n")
    with open(RESULTS, "a") as f:
        f.write(text)
    print(text)


def table(rows: list[dict[str, Any]]) -> str:
    """A markdown table from a list of dicts (keys of the first row as header)."""
    if not rows:
        return ""
    keys = list(rows[0])
    fmt = lambda v: f"{v:.3g}" if isinstance(v, float) else str(v)  # noqa: E731
    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    lines += ["| " + " | ".join(fmt(r.get(k, "")) for k in keys) + " |" for r in rows]
    return "\n".join(lines)


def downscaled(sdata: Any, factor: float) -> Any:
    """A copy of a one-image SpatialData as if scanned ``factor`` times coarser (image, circles, table).

    The image's finest level is resized (PIL, antialiased box filter) to ``factor`` of its side; spot
    centres, radii and ``obsm["spatial"]`` are scaled alike, so the spots' physical size is unchanged and
    the microns per pixel grow by ``1 / factor``. The squidpy ``uns["spatial"]`` thumbnails are dropped.
    """
    import numpy as np
    from PIL import Image
    from shapely import affinity
    from spatialdata import SpatialData
    from spatialdata.models import Image2DModel, ShapesModel, TableModel
    from spatialdata.transformations import Identity

    (ikey, image), = sdata.images.items()
    level0 = image["scale0"].ds["image"] if hasattr(image, "ds") or "scale0" in image else image
    arr = np.asarray(level0.data if hasattr(level0, "data") else level0)
    h, w = arr.shape[1:]
    small = Image.fromarray(np.moveaxis(arr, 0, -1)).resize((max(1, round(w * factor)), max(1, round(h * factor))),
                                                            Image.Resampling.BOX)
    img = Image2DModel.parse(np.moveaxis(np.asarray(small), -1, 0), dims=("c", "y", "x"), c_coords=["r", "g", "b"],
                             transformations={"global": Identity()})
    shapes = {}
    for k, gdf in sdata.shapes.items():
        g = gdf.copy()
        g.attrs.pop("transform", None)
        g["geometry"] = g.geometry.apply(lambda p: affinity.scale(p, factor, factor, origin=(0, 0)))
        if "radius" in g:
            g["radius"] = g["radius"] * factor
        shapes[k] = ShapesModel.parse(g, transformations={"global": Identity()})
    tables = {}
    for k, t in sdata.tables.items():
        t = t.copy()
        if "spatial" in t.obsm:
            t.obsm["spatial"] = np.asarray(t.obsm["spatial"], dtype=float) * factor
        t.uns.pop("spatial", None)
        attrs = t.uns.pop(TableModel.ATTRS_KEY, None)
        tables[k] = TableModel.parse(t, region=attrs["region"], region_key=attrs["region_key"],
                                     instance_key=attrs["instance_key"]) if attrs else t
    return SpatialData(images={ikey: img}, shapes=shapes, tables=tables)


def keyword_options(pairs: list[str]) -> dict[str, Any]:
    """``["average_from=5", "hidden=(256,)"]`` (a ``--set`` option) -> tool keyword arguments (Python literals)."""
    import ast

    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise SystemExit(f"--set takes KEY=VALUE, got {pair!r}")
        try:
            out[key] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            out[key] = value
    return out
