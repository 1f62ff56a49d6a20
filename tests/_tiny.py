"""Every tool with tiny settings, for the generic reliability tests (round trip, interruption, determinism).

Each entry: ``run(sdata, references, **kw)`` calls the tool on ``sdata`` (``references`` are other toy
sections for the transfer tools), ``obs``/``obsm`` keys it writes, and ``plot(sdata)`` draws its plot.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from scipy import sparse

import stfuse as sf


@dataclass
class Tool:
    run: Callable[..., Any]
    obs: list[str] = field(default_factory=list)
    obsm: list[str] = field(default_factory=list)
    uns: list[str] = field(default_factory=list)
    plot: Callable[[Any], Any] | None = None
    trains: bool = False  # has a torch training loop


#: SpaCRD with tiny widths and few epochs
SPACRD_TINY: dict[str, Any] = {"epochs": 3, "pretrain_epochs": 1, "n_top_genes": 40, "batch_size": 64, "device": "cpu",
                               "dim": 16, "hidden": (32,), "heads": 2, "vae_hidden": (16,), "latent": 4}

TOOLS: dict[str, Tool] = {
    "stmic": Tool(run=lambda s, refs, **kw: sf.tl.stmic(s, n_clusters=4, **kw), obs=["stmic"], obsm=["X_stmic"],
                  uns=["stmic"], plot=lambda s: sf.pl.stmic(s, truth="region")),
    "senca": Tool(run=lambda s, refs, **kw: sf.tl.senca(s, n_clusters=4, hidden=16, latent=8, steps=3, **kw),
                  obs=["senca"], obsm=["X_senca"], uns=["senca"], plot=lambda s: sf.pl.senca(s, truth="region"),
                  trains=True),
    "spacrd": Tool(run=lambda s, refs, **kw: sf.tl.spacrd(s, refs, use_image=False, **SPACRD_TINY, **kw),
                   obs=["spacrd", "spacrd_score"], uns=["spacrd"], plot=lambda s: sf.pl.spacrd(s, truth="cancer"),
                   trains=True),
    "histospace": Tool(run=lambda s, refs, **kw: sf.tl.histospace(s, refs, genes=["G030", "G031"], epochs=1, tile_px=32,
                                                                  encoder_weights="random", tta=False, **kw),
                       obsm=["X_histospace_pred"], uns=["histospace"],
                       plot=lambda s: sf.pl.histospace(s, genes=["G030"]), trains=True),
}


def assert_unchanged(before: Any, after: Any) -> None:
    assert set(after.tables) == set(before.tables)
    assert set(after.images) == set(before.images) and set(after.shapes) == set(before.shapes)
    for k, b in before.tables.items():
        a = after.tables[k]
        assert a.shape == b.shape
        xa, xb = (m.toarray() if sparse.issparse(m) else np.asarray(m) for m in (a.X, b.X))
        assert np.array_equal(xa, xb, equal_nan=True)
        pd.testing.assert_frame_equal(a.obs, b.obs)
        pd.testing.assert_frame_equal(a.var, b.var)
        assert list(a.obs_names) == list(b.obs_names) and list(a.var_names) == list(b.var_names)
        assert set(a.obsm) == set(b.obsm) and set(a.obsp) == set(b.obsp) and set(a.layers) == set(b.layers)
        assert set(a.uns) == set(b.uns)
    for k, b in before.shapes.items():
        assert after.shapes[k].geometry.equals(b.geometry) or (
            after.shapes[k].geometry.is_empty.equals(b.geometry.is_empty))
    from spatialdata.transformations import get_transformation

    for k in before.images:
        assert repr(get_transformation(after.images[k], get_all=True)) == repr(
            get_transformation(before.images[k], get_all=True))
