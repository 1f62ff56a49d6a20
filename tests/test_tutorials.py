"""Executes every notebook in tutorials/ end to end in quick mode (STFUSE_TUTORIAL_QUICK=1: tiny models, few epochs).

A tutorial reads ``QUICK = os.environ.get("STFUSE_TUTORIAL_QUICK") == "1"`` in its first code cell and shrinks its
work accordingly; everything else (the calls, the plots, the files it writes) runs as a user would run it.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

TUTORIALS = sorted((Path(__file__).resolve().parents[1] / "tutorials").glob("*.ipynb"))


@pytest.mark.slow
@pytest.mark.tutorial
@pytest.mark.parametrize("notebook", TUTORIALS, ids=[p.stem for p in TUTORIALS])
def test_tutorial_runs(notebook: Path, tmp_path, monkeypatch):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    nb = nbformat.read(notebook, as_version=4)
    text = "".join(c.source for c in nb.cells)
    her2st = Path(os.environ["STFUSE_DATA"]) / "her2st"
    if "sf.datasets.her2st(" in text and not (her2st / "ST-cnts").is_dir():
        pytest.skip(f"{notebook.name} needs HER2ST in {her2st}")
    assert "QUICK" in text, f"{notebook.name} must read STFUSE_TUTORIAL_QUICK (see this test's docstring)"
    monkeypatch.setenv("STFUSE_TUTORIAL_QUICK", "1")
    monkeypatch.setenv("MPLBACKEND", "Agg")
    src = str(Path(__file__).resolve().parents[1] / "src")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(p for p in (src, os.environ.get("PYTHONPATH", "")) if p))
    client = nbclient.NotebookClient(nb, timeout=900, kernel_name="python3",
                                     resources={"metadata": {"path": str(tmp_path)}})
    client.execute()  # raises CellExecutionError naming the failing cell
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors
