"""Shared fixtures. Real data come from $STFUSE_DATA or ../shared/data next to the project root."""

from __future__ import annotations

import os
from pathlib import Path

import matplotlib
import pytest
from hypothesis import settings

matplotlib.use("Agg")
# CI must not depend on the luck of the draw: property tests explore a fixed set of examples
settings.register_profile("ci", derandomize=True, print_blob=True)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

ROOT = Path(__file__).resolve().parents[1]
if not os.environ.get("STFUSE_DATA"):
    os.environ["STFUSE_DATA"] = str((ROOT / ".." / "shared" / "data").resolve())
# tests never download: point the cache somewhere empty unless the user set one
os.environ.setdefault("STFUSE_CACHE", str(ROOT / ".pytest_cache" / "stfuse-cache"))
if os.environ.get("PYTEST_XDIST_WORKER"):
    # two xdist workers on two cores: one torch/numba thread each
    os.environ.setdefault("OMP_NUM_THREADS", "1")

import stfuse as sf  # noqa: E402

sf.settings.verbosity = 0

HER2ST = Path(os.environ["STFUSE_DATA"]) / "her2st"
#: why HER2ST tests skip here, or None when the data are present
NO_HER2ST = None if (HER2ST / "ST-cnts").is_dir() else f"HER2ST data not found in {HER2ST} (set STFUSE_DATA)"


def pytest_collection_modifyitems(config, items):
    if NO_HER2ST is None:
        return
    skip = pytest.mark.skip(reason=NO_HER2ST)
    for item in items:
        if "her2st" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _torch_threads():
    if os.environ.get("PYTEST_XDIST_WORKER"):
        import torch

        torch.set_num_threads(1)
    yield


@pytest.fixture(scope="session")
def her2st_dir() -> Path:
    return HER2ST


@pytest.fixture
def toy():
    """A fresh small toy section (cheap: the image is generated lazily)."""
    return sf.datasets.toy(n_spots=400, seed=0)


@pytest.fixture(scope="session")
def c2():
    """HER2ST C2 with its image (read once per session; do not modify — use a copy)."""
    if NO_HER2ST:
        pytest.skip(NO_HER2ST)
    return sf.datasets.her2st("C2", HER2ST)
