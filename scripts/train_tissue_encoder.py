"""Train ``tissue``, stfuse's default image encoder: a small CNN, self-supervised (SimCLR) on H&E tiles.

The weights land in ``src/stfuse/im/weights/tissue_cnn.pt`` (shipped in the wheel) with a JSON record
next to them (command, data, schedule, seed, losses, time).

Data: the H&E images of the public HER2ST sections that have one (B4, C2–C6; ``sf.datasets.her2st``).
Tiles cover the whole tissue, not only spot centres: centres are drawn uniformly within 1.5 spot
spacings of the spots and kept when at least half of the tile is tissue (not white background); each
tile has a physical side drawn from ``--sides-um`` (one spot diameter to two spot spacings of the ST
platform: 100–400 µm), read at full resolution and stored at ``--store-px`` pixels.

Objective: SimCLR (NT-Xent between two augmented views, projection head 2-layer MLP, discarded after
training). Augmentations suited to H&E, applied per view on the fly:

- **resolution**: the tile is down-sampled to the pixel size of a scan of ``u`` µm/px, ``u``
  log-uniform in ``--res-um`` (0.5–4 µm/px), and up-sampled back, so that a patch of fixed physical
  size looks alike at any scan resolution (0.25 µm/px WSIs to Visium ``hires`` images);
- random resized crop (55–100 % of the side), horizontal flip, 90° rotations;
- stain: HED jitter (Tellez et al. 2018: each of haematoxylin, eosin, DAB optical densities scaled by
  ``1 + U(-σ, σ)`` and shifted by ``U(-σ/4, σ/4)``), brightness/contrast jitter.

Usage (the shipped weights; runs in the background on one CPU core)::

    STFUSE_DATA=../shared/data python scripts/train_tissue_encoder.py --threads 1
"""

from __future__ import annotations

import argparse
import math
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from _weights import command, data_root, save_weights  # noqa: E402

import stfuse as sf  # noqa: E402
from stfuse._spots import get_spots  # noqa: E402
from stfuse.im import iter_patches  # noqa: E402
from stfuse.nn import TissueCNN, nt_xent, seeded  # noqa: E402

SECTIONS = ("B4", "C2", "C3", "C4", "C5", "C6")
DEFAULT_OUT = ROOT / "src" / "stfuse" / "im" / "weights" / "tissue_cnn.pt"
# RGB -> optical density -> stains (skimage's rgb_from_hed, rows H, E, DAB)
RGB_FROM_HED = torch.tensor([[0.65, 0.70, 0.29], [0.07, 0.99, 0.11], [0.27, 0.57, 0.78]])
RGB_FROM_HED = RGB_FROM_HED / RGB_FROM_HED.norm(dim=1, keepdim=True)
HED_FROM_RGB = torch.linalg.inv(RGB_FROM_HED)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default=None, help="HER2ST folder (default: $STFUSE_DATA/her2st or ../shared/data/her2st)")
    p.add_argument("--sections", nargs="+", default=list(SECTIONS))
    p.add_argument("--tiles-per-section", type=int, default=4000)
    p.add_argument("--sides-um", type=float, nargs="+", default=[100.0, 200.0, 400.0])
    p.add_argument("--store-px", type=int, default=96)
    p.add_argument("--input-px", type=int, default=64)
    p.add_argument("--res-um", type=float, nargs=2, default=[0.5, 4.0])
    p.add_argument("--hed-sigma", type=float, default=0.08)
    p.add_argument("--steps", type=int, default=3000)
    p.add_argument("--minutes", type=float, default=None, help="stop after this much training time")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--weight-decay", type=float, default=1e-4)
    p.add_argument("--temperature", type=float, default=0.2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    p.add_argument("--log-every", type=int, default=50)
    p.add_argument("--out", type=Path, default=DEFAULT_OUT)
    return p.parse_args(argv)


def collect_tiles(root: Path, args: argparse.Namespace, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, dict]:
    """uint8 tiles ``(n, 3, store_px, store_px)`` over the tissue of every section, their sides (µm), a summary."""
    tiles, sides, info = [], [], {}
    for s in args.sections:
        t0 = time.time()
        sdata = sf.datasets.her2st(s, root)
        spots = get_spots(sdata, need_image=True, image_hint=f"HER2ST section {s} has no image in {root}.")
        mpp = spots.microns_per_pixel
        spacing = spots.spacing()
        per_side = -(-args.tiles_per_section // len(args.sides_um))
        kept_s = 0
        for side_um in args.sides_um:
            side = side_um / mpp
            m = 2 * per_side
            base = spots.centers[rng.integers(0, spots.n_obs, m)]
            r = 1.5 * spacing * np.sqrt(rng.uniform(0.0, 1.0, m))
            a = rng.uniform(0.0, 2.0 * np.pi, m)
            centres = base + np.column_stack([r * np.cos(a), r * np.sin(a)])
            out = np.empty((m, 3, args.store_px, args.store_px), np.uint8)
            ok = np.zeros(m, bool)
            for b in iter_patches(spots, side, out_px=args.store_px, batch_size=256, centers=centres):
                out[b.index] = b.patches
                x = b.patches.astype(np.float32)
                tissue = (x.min(axis=1) < 200) & (x.max(axis=1) - x.min(axis=1) > 15)  # not white background
                ok[b.index] = (b.inside > 0.95) & (tissue.mean(axis=(1, 2)) > 0.5)
            keep = np.flatnonzero(ok)[:per_side]
            tiles.append(out[keep])
            sides.append(np.full(len(keep), side_um, np.float32))
            kept_s += len(keep)
        info[s] = {"spots": int(spots.n_obs), "tiles": kept_s, "microns_per_pixel": round(float(mpp), 4)}
        print(f"{s}: {kept_s} tissue tiles ({time.time() - t0:.0f} s)", flush=True)
        del sdata, spots
    return np.concatenate(tiles), np.concatenate(sides), info


def hed_jitter(x: torch.Tensor, sigma: float, gen: torch.Generator) -> torch.Tensor:
    """Scale and shift the H, E, DAB optical densities of ``x`` (RGB in [0, 1]) per image."""
    b = x.shape[0]
    od = -torch.log((x * 255.0 + 1.0) / 256.0)  # (b, 3, h, w)
    hed = torch.einsum("bchw,cd->bdhw", od, HED_FROM_RGB)
    alpha = 1.0 + (torch.rand(b, 3, 1, 1, generator=gen) * 2 - 1) * sigma
    beta = (torch.rand(b, 3, 1, 1, generator=gen) * 2 - 1) * sigma / 4
    od = torch.einsum("bdhw,dc->bchw", hed * alpha + beta, RGB_FROM_HED)
    return ((torch.exp(-od) * 256.0 - 1.0) / 255.0).clamp_(0.0, 1.0)


def augment(x: torch.Tensor, side_um: torch.Tensor, args: argparse.Namespace, gen: torch.Generator) -> torch.Tensor:
    """One random view of uint8 tiles ``x`` (b, 3, s, s) of physical sides ``side_um``: float (b, 3, p, p)."""
    b, _, s, _ = x.shape
    p = args.input_px
    x = x.float().div_(255.0)
    # resolution: down to the pixel count of a scan at u µm/px, then back up (only where that is coarser)
    lo, hi = math.log(args.res_um[0]), math.log(args.res_um[1])
    u = torch.exp(lo + (hi - lo) * torch.rand(b, generator=gen))
    n_px = torch.clamp((side_um / u).round(), min=8).long()
    out = x.clone()
    for n in torch.unique(n_px).tolist():
        if n >= s:
            continue
        sel = torch.nonzero(n_px == n).flatten()
        small = F.interpolate(x[sel], size=(n, n), mode="bilinear", antialias=True, align_corners=False)
        out[sel] = F.interpolate(small, size=(s, s), mode="bilinear", align_corners=False)
    # random resized crop + flip + rot90 as one affine resampling to p px
    scale = 0.55 + 0.45 * torch.rand(b, generator=gen)  # side fraction
    tx = (torch.rand(b, generator=gen) * 2 - 1) * (1 - scale)
    ty = (torch.rand(b, generator=gen) * 2 - 1) * (1 - scale)
    k = torch.randint(0, 4, (b,), generator=gen).float() * (math.pi / 2)
    flip = torch.where(torch.rand(b, generator=gen) < 0.5, -1.0, 1.0)
    cos, sin = torch.cos(k) * scale, torch.sin(k) * scale
    theta = torch.stack([torch.stack([cos * flip, -sin, tx], 1), torch.stack([sin * flip, cos, ty], 1)], 1)
    grid = F.affine_grid(theta, (b, 3, p, p), align_corners=False)
    if s * 0.55 > 1.5 * p:  # mostly down-sampling: smooth first so the resampling does not alias
        out = F.interpolate(out, size=(2 * p, 2 * p), mode="bilinear", antialias=True, align_corners=False)
    out = F.grid_sample(out, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
    out = hed_jitter(out, args.hed_sigma, gen)
    bright = 1.0 + (torch.rand(b, 1, 1, 1, generator=gen) * 2 - 1) * 0.1
    contrast = 1.0 + (torch.rand(b, 1, 1, 1, generator=gen) * 2 - 1) * 0.1
    mean = out.mean(dim=(1, 2, 3), keepdim=True)
    return ((out - mean) * contrast + mean * bright).clamp_(0.0, 1.0)


class SimCLR(nn.Module):
    def __init__(self, encoder: TissueCNN, proj: int = 128) -> None:
        super().__init__()
        self.encoder = encoder
        d = encoder.output_dim
        self.head = nn.Sequential(nn.Linear(d, d), nn.BatchNorm1d(d), nn.ReLU(inplace=True), nn.Linear(d, proj))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(x))


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    sf.settings.verbosity = 0
    t_start = time.time()
    rng = np.random.default_rng(args.seed)
    tiles, sides, info = collect_tiles(data_root(args.data), args, rng)
    side_um = torch.from_numpy(sides)
    x_all = torch.from_numpy(tiles)
    print(f"{len(x_all)} tiles ({x_all.numel() / 1e9:.2f} GB) in {time.time() - t_start:.0f} s", flush=True)

    with seeded(args.seed):
        model = SimCLR(TissueCNN()).to(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    warm = max(1, args.steps // 20)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda i: min(1.0, (i + 1) / warm) * 0.5 * (1 + math.cos(math.pi * min(i, args.steps) / args.steps)))
    gen = torch.Generator().manual_seed(args.seed)
    history: list[float] = []
    t_train = time.time()
    step = 0
    model.train()
    for step in range(1, args.steps + 1):
        idx = torch.randint(0, len(x_all), (args.batch_size,), generator=gen)
        x, su = x_all[idx], side_um[idx]
        v1 = augment(x, su, args, gen).contiguous(memory_format=torch.channels_last)
        v2 = augment(x, su, args, gen).contiguous(memory_format=torch.channels_last)
        loss = nt_xent(model(v1), model(v2), temperature=args.temperature)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        history.append(float(loss.detach()))
        if step % args.log_every == 0:
            el = time.time() - t_train
            print(f"step {step}: loss {np.mean(history[-args.log_every:]):.4f} ({el / step:.2f} s/step, "
                  f"{el / 60:.1f} min)", flush=True)
        if args.minutes is not None and time.time() - t_train > 60 * args.minutes:
            print(f"time limit reached at step {step}", flush=True)
            break
    train_s = time.time() - t_train

    enc = model.encoder.eval()
    record = {
        "command": command("train_tissue_encoder.py", argv),
        "model": f"stfuse.nn.TissueCNN(widths={enc.widths}), {sum(p.numel() for p in enc.parameters())} parameters",
        "data": {"source": "HER2ST (Andersson et al. 2021), ST-imgs", "sections": info, "tiles": len(x_all),
                 "sides_um": args.sides_um, "store_px": args.store_px,
                 "tile_centres": "uniform within 1.5 spot spacings of the spots; >= 50% tissue"},
        "training": {"objective": "SimCLR NT-Xent", "temperature": args.temperature, "steps": step,
                     "batch_size": args.batch_size, "input_px": args.input_px, "optimizer": "AdamW",
                     "lr": args.lr, "weight_decay": args.weight_decay, "schedule": "linear warm-up 5%, cosine",
                     "augmentation": {"resolution_um_per_px": args.res_um, "crop_side": [0.55, 1.0],
                                      "flip": True, "rot90": True, "hed_sigma": args.hed_sigma,
                                      "brightness": 0.1, "contrast": 0.1},
                     "seed": args.seed, "torch": torch.__version__, "threads": torch.get_num_threads(),
                     "machine": platform.machine(), "train_seconds": round(train_s, 1),
                     "seconds_per_step": round(train_s / max(step, 1), 3),
                     "total_seconds": round(time.time() - t_start, 1)},
        "history": {"loss_per_50_steps": [round(float(np.mean(history[i:i + 50])), 4)
                                          for i in range(0, len(history), 50)]},
        "stfuse_version": sf.__version__,
    }
    return save_weights(enc, args.out, record)


if __name__ == "__main__":
    main()
