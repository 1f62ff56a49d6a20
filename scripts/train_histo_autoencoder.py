"""Train the HistoSPACE convolutional autoencoder whose encoder is stfuse's default image encoder.

The weights land in ``src/stfuse/im/weights/histospace_autoencoder.pt`` (shipped in the wheel) with a
JSON record next to them (command, data, epochs, reconstruction errors).

Data: the H&E images of the HER2ST sections that have one (B4, C2–C6), read with
``sf.datasets.her2st``. Tiles are cut with ``sf.im`` patch extraction, so they are exactly what
``sf.im.embed`` feeds the encoder: one spot diameter (≈145 px at full resolution) resized to 128 px,
centred on every spot, plus ``--extra-per-spot`` tiles per spot centred between/around spots (up to
one spot spacing away). Augmentation: random flips and 90° rotations, and random ``--crop`` px crops
of the 128 px tiles (same pixel scale; the network is fully convolutional, so the weights apply
unchanged to 128 px tiles, and a 64 px crop trains four times faster on a CPU). A random
``--val-fraction`` of the spots (with their extra tiles) is held out; validation MSE is measured on
full 128 px tiles. Loss: mean squared reconstruction error of pixels in [0, 1]; Adam;
``stfuse.nn.train`` with a fixed seed.

Usage (the shipped weights; about 6 min on 2 shared CPU cores)::

    STFUSE_DATA=../shared/data python scripts/train_histo_autoencoder.py
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from _weights import command, data_root, save_weights  # noqa: E402

import stfuse as sf  # noqa: E402
from stfuse._spots import get_spots  # noqa: E402
from stfuse.im import iter_patches, patch_side_px  # noqa: E402
from stfuse.nn import ConvAutoencoder, train  # noqa: E402

SECTIONS = ("B4", "C2", "C3", "C4", "C5", "C6")
TILE = 128
DEFAULT_OUT = ROOT / "src" / "stfuse" / "im" / "weights" / "histospace_autoencoder.pt"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default=None, help="HER2ST folder (default: $STFUSE_DATA/her2st or ../shared/data/her2st)")
    p.add_argument("--sections", nargs="+", default=list(SECTIONS))
    p.add_argument("--extra-per-spot", type=int, default=2, help="tiles per spot centred around/between spots")
    p.add_argument("--min-inside", type=float, default=0.75, help="drop tiles less inside the image than this")
    p.add_argument("--val-fraction", type=float, default=0.1)
    p.add_argument("--epochs", type=int, default=8)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--crop", type=int, default=64, help="training crop side (px of the 128 px tiles)")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT)
    return p.parse_args(argv)


def collect_tiles(root: Path, sections: list[str], *, extra: int, min_inside: float, rng: np.random.Generator):
    """uint8 tiles ``(n, 3, 128, 128)``, the spot each belongs to (for the split), and per-section counts."""
    tiles, groups, info = [], [], {}
    offset = 0
    for s in sections:
        t0 = time.time()
        sdata = sf.datasets.her2st(s, root)
        spots = get_spots(sdata, need_image=True, image_hint=f"HER2ST section {s} has no image in {root}.")
        side = patch_side_px(spots)  # one spot diameter, as sf.im.embed uses by default
        spacing = spots.spacing()
        n = spots.n_obs
        centres = [spots.centers]
        for _ in range(extra):
            r = spacing * np.sqrt(rng.uniform(0.25, 1.0, n))  # 0.5–1 spacing away: between/around spots
            a = rng.uniform(0.0, 2.0 * np.pi, n)
            centres.append(spots.centers + np.column_stack([r * np.cos(a), r * np.sin(a)]))
        centres = np.concatenate(centres)
        group = np.tile(np.arange(n), extra + 1) + offset
        out = np.empty((len(centres), 3, TILE, TILE), np.uint8)
        inside = np.empty(len(centres))
        for b in iter_patches(spots, side, out_px=TILE, batch_size=256, centers=centres):
            out[b.index] = b.patches
            inside[b.index] = b.inside
        keep = inside >= min_inside
        tiles.append(out[keep])
        groups.append(group[keep])
        info[s] = {"spots": int(n), "tiles": int(keep.sum()), "patch_side_px": round(float(side), 2)}
        print(f"{s}: {n} spots, {int(keep.sum())} tiles of {side:.1f} px -> {TILE} px ({time.time() - t0:.0f} s)",
              flush=True)
        offset += n
        del sdata, spots
    return np.concatenate(tiles), np.concatenate(groups), info


def augment(x: torch.Tensor, gen: torch.Generator, crop: int) -> torch.Tensor:
    """Random crop, flips and 90° rotations per tile (driven by ``gen``)."""
    b = x.shape[0]
    top = torch.randint(0, TILE - crop + 1, (b,), generator=gen).tolist()
    left = torch.randint(0, TILE - crop + 1, (b,), generator=gen).tolist()
    rot = torch.randint(0, 4, (b,), generator=gen).tolist()
    flip = torch.randint(0, 2, (b,), generator=gen).tolist()
    out = []
    for i in range(b):
        t = x[i, :, top[i] : top[i] + crop, left[i] : left[i] + crop]
        if flip[i]:
            t = t.flip(-1)
        out.append(torch.rot90(t, rot[i], dims=(-2, -1)))
    return torch.stack(out)


def mse_on(ae: torch.nn.Module, tiles: torch.Tensor, batch_size: int = 64) -> float:
    ae.eval()
    total, n = 0.0, 0
    with torch.no_grad():
        for i in range(0, len(tiles), batch_size):
            x = tiles[i : i + batch_size].float().div_(255.0)
            total += float(((ae(x) - x) ** 2).mean()) * len(x)
            n += len(x)
    return total / max(n, 1)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    sf.settings.verbosity = 1
    t_start = time.time()
    rng = np.random.default_rng(args.seed)
    root = data_root(args.data)
    tiles, groups, info = collect_tiles(root, args.sections, extra=args.extra_per_spot,
                                        min_inside=args.min_inside, rng=rng)
    ids = np.unique(groups)
    val_ids = rng.choice(ids, size=max(1, round(args.val_fraction * len(ids))), replace=False)
    is_val = np.isin(groups, val_ids)
    train_x = torch.from_numpy(tiles[~is_val])
    val_x = torch.from_numpy(tiles[is_val])
    print(f"{len(train_x)} training tiles, {len(val_x)} validation tiles ({len(val_ids)} held-out spots)", flush=True)
    # trivial reference: every pixel predicted by its tile's mean colour
    xv = val_x.float().div(255.0)
    mean_colour_mse = float(((xv - xv.mean(dim=(2, 3), keepdim=True)) ** 2).mean())

    def batches(gen: torch.Generator):
        perm = torch.randperm(len(train_x), generator=gen)
        for i in range(0, len(perm) - args.batch_size + 1, args.batch_size):  # drop the last partial batch (BN)
            x = train_x[perm[i : i + args.batch_size]].float().div_(255.0)
            yield augment(x, gen, args.crop)

    def val_batches():
        for i in range(0, len(val_x), 64):
            yield val_x[i : i + 64].float().div_(255.0)

    def step(model: torch.nn.Module, x: torch.Tensor):
        return {"loss": torch.mean((model(x) - x) ** 2)}

    from stfuse.nn import seeded

    with seeded(args.seed):
        ae = ConvAutoencoder()
    t_train = time.time()
    history = train(ae, step, batches, epochs=args.epochs, lr=args.lr, device="cpu", seed=args.seed,
                    val_batches=val_batches, desc="HistoSPACE autoencoder")
    train_s = time.time() - t_train
    for e, (lt, lv) in enumerate(zip(history["loss"], history["val_loss"]), 1):
        print(f"epoch {e}: train MSE {lt:.5f} ({args.crop} px crops), val MSE {lv:.5f} (128 px tiles)")
    sub = torch.from_numpy(np.random.default_rng(args.seed).permutation(len(train_x))[:1024])
    train_mse = mse_on(ae, train_x[sub])
    val_mse = mse_on(ae, val_x)
    print(f"final reconstruction MSE on 128 px tiles: train {train_mse:.5f} (1024 tiles), val {val_mse:.5f}; "
          f"mean-colour baseline on val {mean_colour_mse:.5f}", flush=True)

    record = {
        "command": command("train_histo_autoencoder.py", argv),
        "model": "stfuse.nn.ConvAutoencoder (HistoSPACE: Conv3x3 3-32-64-128 + BN + ReLU + MaxPool2, mirrored decoder, sigmoid)",
        "data": {"source": "HER2ST (Andersson et al. 2021), ST-imgs", "sections": info,
                 "tile_px": TILE, "tile_side": "1 spot diameter (sf.im patch extraction), resized to 128 px",
                 "extra_tiles_per_spot": args.extra_per_spot, "min_inside": args.min_inside,
                 "train_tiles": len(train_x), "val_tiles": len(val_x), "val_spots": len(val_ids)},
        "training": {"epochs": args.epochs, "batch_size": args.batch_size, "crop_px": args.crop, "lr": args.lr,
                     "optimizer": "Adam", "loss": "pixel MSE, inputs in [0, 1]", "seed": args.seed,
                     "augmentation": "random crop, horizontal flip, rot90", "torch": torch.__version__,
                     "threads": torch.get_num_threads(), "machine": platform.machine(),
                     "train_seconds": round(train_s, 1), "total_seconds": round(time.time() - t_start, 1)},
        "history": {"train_mse_crops": [round(v, 6) for v in history["loss"]],
                    "val_mse": [round(v, 6) for v in history["val_loss"]]},
        "final": {"train_mse": round(train_mse, 6), "val_mse": round(val_mse, 6),
                  "val_mean_colour_baseline_mse": round(mean_colour_mse, 6)},
        "stfuse_version": sf.__version__,
    }
    return save_weights(ae, args.out, record)


if __name__ == "__main__":
    main()
