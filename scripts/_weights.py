"""What the weight-training scripts share: where the data are, the command line, saving weights + record."""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import sys
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]


def data_root(arg: str | None) -> Path:
    """The HER2ST folder: ``arg``, else ``$STFUSE_DATA/her2st``, else ``../shared/data/her2st``."""
    if arg:
        return Path(arg)
    env = os.environ.get("STFUSE_DATA")
    return Path(env) / "her2st" if env else ROOT.parent / "shared" / "data" / "her2st"


def command(script: str, argv: list[str] | None) -> str:
    """The command line that ran ``script`` (``argv``: arguments given programmatically)."""
    args = argv if argv is not None else sys.argv[1:]
    return f"python scripts/{script}" + (" " + shlex.join(args) if args else "")


def save_weights(module: torch.nn.Module, out: Path, record: dict[str, Any]) -> dict[str, Any]:
    """Save ``module``'s state dict to ``out`` and ``record`` (+ the file's SHA-256) beside it as JSON."""
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.save({k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()}, out)
    record = {**record, "sha256": hashlib.sha256(out.read_bytes()).hexdigest()}
    out.with_suffix(".json").write_text(json.dumps(record, indent=2) + "\n")
    print(f"saved {out} ({out.stat().st_size / 1e6:.2f} MB) and {out.with_suffix('.json').name}")
    return record
