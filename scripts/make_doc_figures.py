"""Regenerate the figures in docs/_static from the HER2ST data ($STFUSE_DATA).

Usage: ``PYTHONPATH=src python scripts/make_doc_figures.py [her2st_c2_spots] [stmic_c2]`` (all by default).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import stfuse as sf

OUT = Path(__file__).resolve().parents[1] / "docs" / "_static"


def her2st_c2_spots() -> Path:
    """HER2ST C2: spots over the H&E image coloured by the authors' expression clusters."""
    sdata = sf.datasets.her2st("C2")
    path = OUT / "her2st_c2_spots.png"
    sf.pl.spots(sdata, color="cluster_name", title="HER2ST C2 — author clusters", panel_size=5.0, dpi=90, save=path)
    return _shrink(path)


def _shrink(path: Path) -> Path:
    """Re-encode a PNG with a 256-colour palette (H&E photos stay legible, files stay < 300 KB)."""
    from PIL import Image

    with Image.open(path) as im:
        small = im.convert("RGB").quantize(colors=256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
    small.save(path, optimize=True)
    return path


def stmic_c2() -> Path:
    """stMIC on HER2ST C2 (7 clusters, the number of author clusters) next to the author clusters."""
    sdata = sf.datasets.her2st("C2")
    truth = sdata.tables["table"].obs["cluster"]
    sf.tl.stmic(sdata, n_clusters=int(truth.dropna().nunique()))
    path = OUT / "stmic_c2.png"
    sf.pl.stmic(sdata, truth="cluster", panel_size=4.0, dpi=80, save=path)
    return _shrink(path)


FIGURES = {"her2st_c2_spots": her2st_c2_spots, "stmic_c2": stmic_c2}


def main(names: list[str]) -> None:
    os.makedirs(OUT, exist_ok=True)
    for name in names or list(FIGURES):
        path = FIGURES[name]()
        print(f"{path}  {path.stat().st_size / 1024:.0f} KB")


if __name__ == "__main__":
    main(sys.argv[1:])
