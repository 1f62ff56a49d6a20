from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch

import stfuse as sf
from stfuse._spots import get_spots

distributed = pytest.importorskip("distributed")


def _tiny():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1),
                              torch.nn.Flatten())
    return sf.im.Encoder.from_module(net, name="tiny", input_px=24)


def test_embed_on_a_local_cluster_equals_single_process():
    sdata = sf.datasets.toy(n_spots=64, seed=4, chunks=128)
    spots = get_spots(sdata)
    enc = _tiny()
    single = sf.im.image_features(spots, enc, batch_size=8, client=False, stain="macenko")
    with (
        distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=False, dashboard_address=None) as cluster,
        distributed.Client(cluster) as client,
    ):
        par = sf.im.image_features(spots, enc, batch_size=8, stain="macenko")  # the active client is used
        tasks = client.run_on_scheduler(lambda dask_scheduler: list(dask_scheduler.task_prefixes))
        assert "embed_chunk" in tasks  # ran as dask tasks
        sf.im.embed(sdata, enc, batch_size=8)  # embed writes as usual
    assert not par.cached and par.provenance == single.provenance
    np.testing.assert_allclose(par.X, single.X, rtol=1e-5, atol=1e-6)
    assert sdata.tables["table"].obsm["X_tiny_55um"].shape == (64, 8)


def test_client_true_without_cluster():
    spots = get_spots(sf.datasets.toy(n_spots=16, seed=4))
    with pytest.raises(sf.InputError, match="no dask distributed Client is active"):
        sf.im.image_features(spots, _tiny(), client=True)


def test_image_file_decodes_once_per_process(tmp_path, monkeypatch):
    """The lazy image pickles by path; every unpickled copy in a process shares one decoder."""
    from PIL import Image

    from stfuse.io import _image

    Image.fromarray(np.full((64, 80, 3), 7, np.uint8)).save(tmp_path / "img.png")
    img = sf.io.lazy_image(tmp_path / "img.png", chunks=32)
    decoded = []
    real = _image._decode
    monkeypatch.setattr(_image, "_decode", lambda p: decoded.append(p) or real(p))
    payload = pickle.dumps(img)
    assert len(payload) < 20_000  # the path travels, not the pixels
    a, b = pickle.loads(payload), pickle.loads(pickle.dumps(img))
    assert int(a[:, :10, :10].sum().compute()) == 7 * 300
    assert (b.compute() == 7).all() and len(decoded) == 1
