"""GPU check (issue 18): every tool on the device against the same run on CPU, save on the device / load on CPU.

``python -m benchmarks.gpu_check [--device cuda|cpu] [--spots 20000] [--toy-spots 900] [--steps 50] [--results]``

On a CUDA machine (``--device cuda``, the default when CUDA is present) it asserts that stfuse picks
CUDA (``device="auto"``), then on the toy section and on a synthetic section of ``--spots`` spots:

- embeds the image with an encoder module already on CUDA (:meth:`stfuse.im.Encoder.from_module`);
- runs ``sf.tl.senca``, ``sf.tl.stmic``, ``sf.tl.spacrd`` and ``sf.tl.histospace`` on the device with
  ``return_model=True`` where the tool trains, and checks that every parameter and buffer is on it;
- runs each again on CPU and compares the labels (adjusted Rand index; Pearson r for the HistoSPACE
  predictions and the SpaCRD scores);
- saves the trained models from the device, loads them on CPU, checks the weights are equal and, for
  SpaCRD and HistoSPACE, applies the loaded model on CPU to the section;
- prints the seconds and the peak GPU memory (``torch.cuda.max_memory_allocated``) of every step.

Without CUDA, or with ``--device cpu``, it says so and runs the same code path on small sizes (the
"device" run is then a CPU run too, so the comparisons check determinism), so CI can execute it
(``tests/test_gpu_check.py``). ``--results`` appends the table to ``benchmarks/RESULTS.md``.
"""

from __future__ import annotations

import argparse
import copy
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sklearn.metrics import adjusted_rand_score

import stfuse as sf

from ._util import append_results, table

#: sizes and training lengths of each mode (CPU mode: small enough for CI)
MODES: dict[str, dict[str, Any]] = {
    "cuda": {"toy_spots": 900, "spots": 20_000, "steps": 50, "epochs": 5, "genes": 150},
    "cpu": {"toy_spots": 120, "spots": 200, "steps": 2, "epochs": 1, "genes": 60},
}


def _encoder_module() -> torch.nn.Module:
    """A small convolutional image encoder (random weights, seeded): 16 features per patch."""
    with sf.nn.seeded(0):
        return torch.nn.Sequential(
            torch.nn.Conv2d(3, 8, 5, stride=2), torch.nn.ReLU(), torch.nn.Conv2d(8, 16, 3, stride=2), torch.nn.ReLU(),
            torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(),
        )


def _on(module: torch.nn.Module, device: str) -> bool:
    """Whether every parameter and buffer of ``module`` lives on ``device``'s type."""
    want = torch.device(device).type
    return all(t.device.type == want for t in [*module.parameters(), *module.buffers()])


class _Meter:
    """Seconds and peak GPU memory (MiB, ``nan`` on CPU) of one call."""

    def __init__(self, device: str) -> None:
        self.cuda = torch.device(device).type == "cuda"

    def __call__(self, fn: Callable[[], Any]) -> tuple[Any, float, float]:
        if self.cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        t0 = time.perf_counter()
        out = fn()
        if self.cuda:
            torch.cuda.synchronize()
        seconds = time.perf_counter() - t0
        peak = torch.cuda.max_memory_allocated() / 2**20 if self.cuda else float("nan")
        return out, seconds, peak


def _new_keys(table_: Any, before: dict[str, set[str]]) -> dict[str, list[str]]:
    return {k: sorted(set(getattr(table_, k).keys()) - before[k]) for k in ("obs", "obsm")}


def _keys(table_: Any) -> dict[str, set[str]]:
    return {"obs": set(table_.obs.columns), "obsm": set(table_.obsm.keys())}


def _pearson(a: np.ndarray, b: np.ndarray) -> float:
    a, b = np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()
    if a.std() == 0 or b.std() == 0:
        return float(np.array_equal(a, b))
    return float(np.corrcoef(a, b)[0, 1])


def _weights_equal(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k].cpu(), sb[k].cpu()) for k in sa)


TOOLS = ("senca", "stmic", "spacrd", "histospace")


def check_section(name: str, n_spots: int, device: str, cfg: dict[str, Any], *, seed: int = 0,
                  tools: tuple[str, ...] = TOOLS) -> list[dict[str, Any]]:
    """The image embedding, then every tool of ``tools`` on ``device`` and on CPU, for one synthetic section."""
    meter = _Meter(device)
    rows: list[dict[str, Any]] = []
    sdata = sf.datasets.toy(n_spots=n_spots, n_genes=cfg["genes"], seed=seed)
    refs = [sf.datasets.toy(n_spots=n_spots, n_genes=cfg["genes"], seed=seed + 1)]
    t = sdata.tables["table"]
    truth = t.obs["region"].astype(str).to_numpy()
    net = _encoder_module()
    enc_dev = sf.im.Encoder.from_module(net.to(device), name="gpu_check_net", input_px=32)
    enc_cpu = sf.im.Encoder.from_module(copy.deepcopy(net).cpu(), name="gpu_check_net_cpu", input_px=32)

    def row(tool: str, seconds: float, peak: float, *, vs_cpu: str, truth: float | None = None,
            on_device: bool | None = None, autocast: str | None = None, loaded_cpu: bool | None = None) -> None:
        rows.append({"section": name, "spots": n_spots, "tool": tool, "seconds": round(seconds, 2),
                     "peak GPU MiB": "" if np.isnan(peak) else round(peak, 1), "vs CPU": vs_cpu,
                     "ARI truth": "" if truth is None else round(truth, 3),
                     "on device": "" if on_device is None else on_device, "autocast": autocast or "",
                     "saved -> CPU equal": "" if loaded_cpu is None else loaded_cpu})
        print(rows[-1], flush=True)

    def ari(a: Any, b: Any) -> str:
        return f"ARI {adjusted_rand_score(np.asarray(a), np.asarray(b)):.3f}"

    # image embedding with a module already on the device
    _, s, p = meter(lambda: sf.im.embed(sdata, enc_dev, key_added="gpu_check", device=device))
    feats_dev = np.asarray(t.obsm["X_gpu_check"])
    sf.im.embed(sdata, enc_cpu, key_added="gpu_check_cpu", device="cpu")
    row("im.embed", s, p, vs_cpu=f"r {_pearson(feats_dev, t.obsm['X_gpu_check_cpu']):.4f}",
        on_device=_on(enc_dev.module, device))

    if "senca" in tools:
        _senca(sdata, t, truth, device, cfg, meter, row, ari)
    if "stmic" in tools:
        _stmic(sdata, t, truth, device, meter, row, ari, enc_dev, enc_cpu)
    if "spacrd" in tools:
        _spacrd(sdata, refs, t, device, cfg, meter, row, ari, net, enc_dev, enc_cpu)
    if "histospace" in tools:
        _histospace(sdata, refs, t, device, cfg, meter, row)
    return rows


def _senca(sdata, t, truth, device, cfg, meter, row, ari) -> None:
    def senca(dev: str, key: str):
        return sf.tl.senca(sdata, n_clusters=4, image_rep="X_gpu_check", steps=cfg["steps"], hidden=32, latent=16,
                           key_added=key, device=dev, return_model=True)

    m_dev, s, p = meter(lambda: senca(device, "senca_dev"))
    senca("cpu", "senca_cpu")
    with tempfile.TemporaryDirectory() as d:
        m_dev.save(Path(d) / "senca")
        loaded = sf.models.SENCA.load(Path(d) / "senca", device="cpu")
    row("senca", s, p, vs_cpu=ari(t.obs["senca_dev"], t.obs["senca_cpu"]),
        truth=adjusted_rand_score(truth, t.obs["senca_dev"]), on_device=_on(m_dev.module, device),
        autocast=m_dev.info.get("autocast"),
        loaded_cpu=_weights_equal(m_dev.module, loaded.module) and _on(loaded.module, "cpu"))


def _stmic(sdata, t, truth, device, meter, row, ari, enc_dev, enc_cpu) -> None:
    """stMIC (no training: the image encoder runs on the device)."""

    def stmic(dev: str, key: str, enc: Any):
        return sf.tl.stmic(sdata, n_clusters=4, encoder=enc, key_added=key, device=dev)

    _, s, p = meter(lambda: stmic(device, "stmic_dev", enc_dev))
    stmic("cpu", "stmic_cpu", enc_cpu)
    row("stmic", s, p, vs_cpu=ari(t.obs["stmic_dev"], t.obs["stmic_cpu"]),
        truth=adjusted_rand_score(truth, t.obs["stmic_dev"]))


def _spacrd(sdata, refs, t, device, cfg, meter, row, ari, net, enc_dev, enc_cpu) -> None:
    """SpaCRD (reference section -> this one), image features from the encoder."""
    tiny = {"epochs": cfg["epochs"], "pretrain_epochs": 1, "n_top_genes": cfg["genes"], "batch_size": 256, "dim": 32,
            "hidden": (64,), "heads": 2, "vae_hidden": (16,), "latent": 4, "patience": None}

    def spacrd(dev: str, key: str, enc: Any, **kw: Any):
        return sf.tl.spacrd(sdata, refs, encoder=enc, key_added=key, device=dev, return_model=True, **tiny, **kw)

    m_dev, s, p = meter(lambda: spacrd(device, "spacrd_dev", enc_dev))
    spacrd("cpu", "spacrd_cpu", enc_cpu)
    with tempfile.TemporaryDirectory() as d:
        m_dev.save(Path(d) / "spacrd")
        loaded = sf.models.SpaCRD.load(Path(d) / "spacrd", device="cpu")
    same = sf.im.Encoder.from_module(copy.deepcopy(net).cpu(), name="gpu_check_net", input_px=32)  # the trained name
    sf.tl.spacrd(sdata, model=loaded, encoder=same, key_added="spacrd_loaded", device="cpu")
    row("spacrd", s, p, vs_cpu=f"{ari(t.obs['spacrd_dev'], t.obs['spacrd_cpu'])}; score r "
        f"{_pearson(t.obs['spacrd_dev_score'], t.obs['spacrd_cpu_score']):.4f}; loaded on CPU: score r "
        f"{_pearson(t.obs['spacrd_dev_score'], t.obs['spacrd_loaded_score']):.4f}",
        on_device=_on(m_dev.module, device), autocast=m_dev.info.get("training", {}).get("autocast"),
        loaded_cpu=_weights_equal(m_dev.module, loaded.module) and _on(loaded.module, "cpu"))


def _histospace(sdata, refs, t, device, cfg, meter, row) -> None:
    """HistoSPACE (reference section -> this one), a few genes."""
    genes = list(t.var_names[:4])

    def histospace(dev: str, key: str, **kw: Any):
        before = _keys(t)
        out = sf.tl.histospace(sdata, refs, genes=genes, epochs=cfg["epochs"], tile_px=32, encoder_weights="random",
                               tta=False, key_added=key, device=dev, return_model=True, **kw)
        return out, _new_keys(t, before)["obsm"]

    (m_dev, k_dev), s, p = meter(lambda: histospace(device, "histospace_dev"))
    _, k_cpu = histospace("cpu", "histospace_cpu")
    pred_dev, pred_cpu = (np.asarray(t.obsm[k[0]]) for k in (k_dev, k_cpu))
    with tempfile.TemporaryDirectory() as d:
        m_dev.save(Path(d) / "histospace")
        loaded = sf.models.HistoSPACE.load(Path(d) / "histospace", device="cpu")
    row("histospace", s, p, vs_cpu=f"prediction r {_pearson(pred_dev, pred_cpu):.4f}",
        on_device=_on(m_dev.module, device),
        loaded_cpu=_weights_equal(m_dev.module, loaded.module) and _on(loaded.module, "cpu"))


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    """Run the check; returns the rows printed.

    Examples
    --------
    >>> rows = main(["--device", "cpu", "--spots", "150"])  # doctest: +SKIP
    """
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", choices=["cuda", "cpu"], default=None, help="default: cuda when available")
    ap.add_argument("--spots", type=int, default=None, help="spots of the large synthetic section")
    ap.add_argument("--toy-spots", type=int, default=None, help="spots of the toy section")
    ap.add_argument("--steps", type=int, default=None, help="SENCA steps")
    ap.add_argument("--epochs", type=int, default=None, help="SpaCRD / HistoSPACE epochs")
    ap.add_argument("--tools", nargs="+", choices=TOOLS, default=list(TOOLS), help="tools to check")
    ap.add_argument("--sections", nargs="+", choices=["toy", "synthetic"], default=["toy", "synthetic"])
    ap.add_argument("--results", action="store_true", help="append the table to benchmarks/RESULTS.md")
    args = ap.parse_args(argv)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda":
        if not torch.cuda.is_available():
            raise SystemExit("--device cuda: torch sees no CUDA device here (run with --device cpu).")
        picked = sf.settings.resolve_device("auto")
        assert picked.startswith("cuda"), f"stfuse picked {picked!r} with CUDA available"
        print(f"CUDA mode: {torch.cuda.get_device_name(0)}; stfuse picks {picked!r}", flush=True)
    else:
        print("CPU mode: no CUDA device used; the same code path on small sizes (device runs are CPU runs, "
              "the comparisons check determinism).", flush=True)
    cfg = dict(MODES[device])
    for k in ("spots", "toy_spots", "steps", "epochs"):
        if getattr(args, k) is not None:
            cfg[k] = int(getattr(args, k))
    sf.settings.verbosity = 0
    rows: list[dict[str, Any]] = []
    if "toy" in args.sections:
        rows += check_section("toy", cfg["toy_spots"], device, cfg, tools=tuple(args.tools))
    if "synthetic" in args.sections:
        rows += check_section("synthetic", cfg["spots"], device, cfg, seed=10, tools=tuple(args.tools))
    bad = [r for r in rows if r["on device"] is False or r["saved -> CPU equal"] is False]
    text = table(rows)
    print(text, flush=True)
    if args.results:
        body = (f"`benchmarks/gpu_check.py` ({device} mode): every tool on the device vs the same call on CPU "
                f"(ARI of the labels; Pearson r of scores/predictions), models saved on the device and loaded on "
                f"CPU; SENCA {cfg['steps']} steps, SpaCRD/HistoSPACE {cfg['epochs']} epochs.\n\n" + text)
        append_results(f"GPU check ({device})", body, "python -m benchmarks.gpu_check " + " ".join(argv or []))
    if bad:
        raise SystemExit(f"device placement or save/load check failed: {bad}")
    return rows


if __name__ == "__main__":
    main()
