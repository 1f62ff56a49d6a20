"""Build a tutorial notebook from a list of (kind, source) cells and execute it in place.

Used to write ``tutorials/*.ipynb``: ``python scripts/nb.py build SPEC.py OUT.ipynb`` where SPEC.py defines
``CELLS = [("md", "..."), ("code", "..."), ...]``; ``python scripts/nb.py run OUT.ipynb`` executes it in place
(outputs committed). ``STFUSE_TUTORIAL_QUICK=1`` runs the quick mode the test suite uses.
"""

from __future__ import annotations

import re
import runpy
import sys


def build(spec: str, out: str) -> None:
    import nbformat

    cells = runpy.run_path(spec)["CELLS"]
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_markdown_cell(s.strip()) if k == "md" else nbformat.v4.new_code_cell(s.strip())
                for k, s in cells]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, out)


def run(path: str, timeout: int = 3600) -> None:
    import tempfile

    import nbclient
    import nbformat

    nb = nbformat.read(path, as_version=4)
    with tempfile.TemporaryDirectory() as work:  # files the tutorial writes do not land in the repository
        nbclient.NotebookClient(nb, timeout=timeout, kernel_name="python3",
                                resources={"metadata": {"path": work}}).execute()
    clean(nb)
    nbformat.write(nb, path)


_NOISE = re.compile(r"(\d+%\|)|(it/s)|(s/it)|IProgress|SyntaxWarning|docrep|^\s*doc = func|autonotebook|notebook_tqdm")


def clean(nb) -> None:
    """Drop progress bars and library warnings from stderr outputs: noise in the rendered page."""
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        kept = []
        for o in cell.outputs:
            if o.output_type == "stream" and o.name == "stderr":
                lines = [ln for ln in o.text.replace("\r", "\n").splitlines() if ln.strip() and not _NOISE.search(ln)]
                if not lines:
                    continue
                o.text = "\n".join(lines) + "\n"
            kept.append(o)
        cell.outputs = kept


def clean_file(path: str) -> None:
    import nbformat

    nb = nbformat.read(path, as_version=4)
    clean(nb)
    nbformat.write(nb, path)


if __name__ == "__main__":
    cmd, *args = sys.argv[1:]
    {"build": build, "run": run, "clean": clean_file}[cmd](*args)
