"""Sphinx configuration for stfuse."""

from __future__ import annotations

import os
import socket
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
os.environ.setdefault("MPLBACKEND", "Agg")

import stfuse  # noqa: E402

project = "stfuse"
author = "stfuse developers"
copyright = "2026, stfuse developers"
version = release = stfuse.__version__

extensions = [
    "myst_nb",
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.napoleon",
    "sphinx.ext.intersphinx",
    "sphinx.ext.viewcode",
    "sphinx.ext.mathjax",
    "sphinx_copybutton",
]
myst_enable_extensions = ["colon_fence", "dollarmath"]
nb_execution_mode = "off"  # tutorial outputs are committed; tests execute the notebooks
autosummary_generate = True
autodoc_typehints = "description"
autodoc_member_order = "bysource"
napoleon_google_docstring = False
napoleon_numpy_docstring = True
napoleon_use_rtype = False
templates_path = ["_templates"]
exclude_patterns = ["_build", "_static", "**.ipynb_checkpoints", "jupyter_execute", "tutorials/*.zarr", "tutorials/results"]
html_theme = "furo"
html_static_path = ["_static"]
html_title = f"stfuse {version}"
suppress_warnings = ["mystnb.unknown_mime_type", "myst.header"]


def _online(host: str = "docs.python.org", port: int = 443) -> bool:
    try:
        socket.create_connection((host, port), timeout=2).close()
        return True
    except OSError:
        return False


# Cross-links need the projects' inventories, fetched over the network: on Read the Docs always,
# locally only when online (offline builds stay warning-free).
intersphinx_mapping = {}
if os.environ.get("READTHEDOCS") or _online():
    intersphinx_mapping = {
        "python": ("https://docs.python.org/3", None),
        "numpy": ("https://numpy.org/doc/stable", None),
        "pandas": ("https://pandas.pydata.org/docs", None),
        "anndata": ("https://anndata.readthedocs.io/en/stable", None),
        "scanpy": ("https://scanpy.readthedocs.io/en/stable", None),
        "squidpy": ("https://squidpy.readthedocs.io/en/stable", None),
        "spatialdata": ("https://spatialdata.scverse.org/en/stable", None),
        "torch": ("https://docs.pytorch.org/docs/stable", None),
        "dask": ("https://docs.dask.org/en/stable", None),
    }
