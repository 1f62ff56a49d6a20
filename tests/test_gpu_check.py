"""benchmarks/gpu_check.py runs in CPU mode (CI has no GPU): same code path, tiny sizes."""

from __future__ import annotations

import pytest
import torch
from benchmarks import gpu_check


def test_gpu_check_cpu_mode(capsys):
    rows = gpu_check.main(["--device", "cpu", "--toy-spots", "80", "--steps", "1", "--epochs", "1",
                           "--sections", "toy"])
    out = capsys.readouterr().out
    assert "CPU mode" in out and "CUDA mode" not in out
    assert [r["tool"] for r in rows] == ["im.embed", "senca", "stmic", "spacrd", "histospace"]
    # on CPU the "device" run is a CPU run: same seed, same result
    assert all(r["vs CPU"].startswith(("ARI 1.000", "r 1.0000", "prediction r 1.0000")) for r in rows)
    assert all(r["saved -> CPU equal"] in (True, "") and r["on device"] in (True, "") for r in rows)
    assert all(r["peak GPU MiB"] == "" and r["autocast"] == "" for r in rows)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal without CUDA")
def test_gpu_check_refuses_cuda_without_cuda():
    with pytest.raises(SystemExit, match="no CUDA"):
        gpu_check.main(["--device", "cuda"])
