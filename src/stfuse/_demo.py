"""``make demo`` / ``stfuse demo``: run stfuse on HER2ST when available, else on the toy section."""

from __future__ import annotations

from pathlib import Path

from . import _logging as log

__all__ = ["run_demo"]


def _load():
    from . import datasets
    from ._errors import DataNotFoundError

    try:
        root = datasets.her2st_path(None, download=False)
        sdata = datasets.her2st("C2", root)
        return sdata, f"HER2ST section C2 from {root}"
    except DataNotFoundError as e:
        log.warning(f"HER2ST not available ({e}); using the synthetic toy section")
        return datasets.toy(n_spots=900), "synthetic toy section (sf.datasets.toy)"


def run_demo(out: Path, *, quick: bool = False) -> str:
    """Read a section, build its spatial graph, write a zarr and a figure; return a summary."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from . import gr
    from ._spots import get_spots

    out.mkdir(parents=True, exist_ok=True)
    sdata, source = _load()
    g = gr.spatial_graph(sdata)
    spots = get_spots(sdata)
    lvl = spots.levels[-1] if spots.has_image else None
    fig, ax = plt.subplots(figsize=(6, 6))
    if lvl is not None:
        ax.imshow(np.asarray(lvl.data.compute()).transpose(1, 2, 0), extent=(0, lvl.shape_yx[1] / lvl.scale,
                                                                            lvl.shape_yx[0] / lvl.scale, 0))
    ax.scatter(spots.centers[:, 0], spots.centers[:, 1], s=8, c="tab:blue")
    ax.set_title(f"{source}: {spots.n_obs} spots")
    ax.set_axis_off()
    fig.savefig(out / "demo.png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    sdata.write(out / "demo.zarr", overwrite=True)
    n_edges = int((g.indices >= 0).sum())
    return f"{source}: {spots.n_obs} spots, {n_edges} graph edges; wrote {out / 'demo.zarr'} and {out / 'demo.png'}"
