"""Nothing lost: every tool's results survive a zarr round trip and plot from the re-read object; an interrupted
run leaves the object as it was; a rerun replaces results only after success, with a warning; same seed, same
result."""

from __future__ import annotations

import copy
import warnings

import numpy as np
import pytest
import torch

import stfuse as sf
from _tiny import TOOLS, assert_unchanged


@pytest.fixture(scope="module")
def sections():
    return sf.datasets.toy(n_spots=150, n_genes=80, seed=11), [sf.datasets.toy(n_spots=150, n_genes=80, seed=12)]


@pytest.mark.parametrize("name", list(TOOLS))
def test_round_trip_and_plot(name, sections, tmp_path):
    import spatialdata

    tool = TOOLS[name]
    sdata = copy.deepcopy(sections[0])
    tool.run(sdata, sections[1])
    sdata.write(tmp_path / "s.zarr")
    back = spatialdata.read_zarr(tmp_path / "s.zarr")
    a, b = sdata.tables["table"], back.tables["table"]
    for k in tool.obs:
        assert list(b.obs[k].astype(str)) == list(a.obs[k].astype(str)), k
    for k in tool.obsm:
        assert np.allclose(np.asarray(b.obsm[k]), np.asarray(a.obsm[k])), k
    for k in tool.uns:
        assert k in b.uns, k
    if tool.plot is not None:
        import matplotlib.pyplot as plt

        tool.plot(back)
        plt.close("all")


def _interrupt(monkeypatch, name):
    """Raise KeyboardInterrupt in the middle of the tool's work."""
    calls = {"n": 0}

    def boom(*args, **kwargs):
        calls["n"] += 1
        raise KeyboardInterrupt

    if TOOLS[name].trains:
        real = torch.optim.Adam.step

        def step(self, *args, **kwargs):
            calls["n"] += 1
            if calls["n"] == 3:
                raise KeyboardInterrupt
            return real(self, *args, **kwargs)

        monkeypatch.setattr(torch.optim.Adam, "step", step)
    else:  # stMIC: interrupt the community search, after the features were computed
        import stfuse.tl._clustering as mod

        monkeypatch.setattr(mod, "cluster_n", boom)
    return calls


@pytest.mark.parametrize("name", list(TOOLS))
def test_interrupted_run_leaves_object_unchanged(name, sections, monkeypatch):
    tool = TOOLS[name]
    sdata = copy.deepcopy(sections[0])
    before = copy.deepcopy(sdata)
    calls = _interrupt(monkeypatch, name)
    with pytest.raises(KeyboardInterrupt):
        tool.run(sdata, sections[1])
    assert calls["n"] >= 1
    assert_unchanged(before, sdata)


@pytest.mark.parametrize("name", list(TOOLS))
def test_rerun_replaces_with_warning_and_is_deterministic(name, sections):
    tool = TOOLS[name]
    sdata = copy.deepcopy(sections[0])
    tool.run(sdata, sections[1])
    first = {k: np.asarray(sdata.tables["table"].obsm[k]).copy() for k in tool.obsm}
    labels = {k: sdata.tables["table"].obs[k].astype(str).tolist() for k in tool.obs}
    with pytest.warns(UserWarning, match="Replacing existing results"):
        tool.run(sdata, sections[1])
    t = sdata.tables["table"]
    for k, v in first.items():  # same seed on CPU: identical
        assert np.array_equal(np.asarray(t.obsm[k]), v), k
    for k, v in labels.items():
        assert t.obs[k].astype(str).tolist() == v, k
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # a fresh key does not warn
        tool.run(copy.deepcopy(sections[0]), sections[1])
