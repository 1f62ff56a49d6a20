from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

import stfuse as sf
from stfuse.models import BaseModel
from stfuse.nn import (
    ConvAutoencoder,
    NeighbourhoodCrossAttention,
    info_nce,
    mlp,
    neighbourhood_tokens,
    nt_xent,
    train,
)


def test_nt_xent_prefers_aligned_pairs():
    torch.manual_seed(0)
    x = torch.randn(16, 8)
    assert nt_xent(x, x + 0.01 * torch.randn(16, 8)) < nt_xent(x, torch.randn(16, 8))
    assert nt_xent(x[:1], x[:1]) == 0


def test_info_nce_alpha_weights_directions():
    torch.manual_seed(0)
    a, b = torch.randn(8, 4), torch.randn(8, 4)
    full = info_nce(a, b, alpha=1.0)
    assert info_nce(a, b, alpha=0.0) == pytest.approx(float(info_nce(b, a, alpha=1.0)), rel=1e-5)
    assert info_nce(a, b, alpha=0.5) == pytest.approx(0.5 * float(full) + 0.5 * float(info_nce(b, a, alpha=1.0)), rel=1e-5)


def test_cross_attention_matches_full_token_attention():
    torch.manual_seed(0)
    n, k = 6, 3
    att = NeighbourhoodCrossAttention(4, 5, 8, heads=1)
    q, kv = torch.randn(n, 4), torch.randn(n, 5)
    nbr = torch.tensor([[(i + j + 1) % n for j in range(k)] for i in range(n)])
    tokens = neighbourhood_tokens(nbr)
    out = att(q, kv, tokens)
    for i in range(n):  # the full softmax((H Wq)(R Wk)^T / sqrt(E)) R Wv over the neighbourhood, centre row
        t = tokens[i]
        Q, K, V = att.q(q[t]), att.k(kv[t]), att.v(kv[t])
        full = torch.softmax(Q @ K.T / 8**0.5, dim=-1) @ V
        assert torch.allclose(out[i], full[0], atol=1e-5)


def test_cross_attention_masks_padding():
    torch.manual_seed(0)
    att = NeighbourhoodCrossAttention(2, 2, 4, heads=2)
    tokens = torch.tensor([[0, 1, -1], [1, 0, -1]])
    q, kv = torch.randn(3, 2), torch.randn(3, 2)
    a = att(q, kv, tokens)
    kv2 = kv.clone()
    kv2[2] = 1e3  # spot 2 is only a padding target: must not matter
    assert torch.allclose(a, att(q, kv2, tokens))
    assert att.last_attention[:, :, 2].abs().max() == 0


def test_autoencoder_shapes_and_mlp():
    ae = ConvAutoencoder()
    x = torch.rand(2, 3, 128, 128)
    assert ae.encoder(x).shape == (2, 128, 16, 16)
    assert ae(x).shape == x.shape and 0 <= float(ae(x).min()) and float(ae(x).max()) <= 1
    net = mlp([5, 7, 3], dropout=0.2)
    assert net(torch.randn(4, 5)).shape == (4, 3)


def test_train_history_early_stopping_and_determinism():
    def run(seed):
        with sf.nn.seeded(seed):
            net = torch.nn.Sequential(torch.nn.Linear(2, 8), torch.nn.Dropout(0.5), torch.nn.Linear(8, 1))
        x = torch.randn(64, 2, generator=torch.Generator().manual_seed(1))
        y = x[:, :1] * 2

        def batches(g):
            perm = torch.randperm(64, generator=g)
            return [(x[perm[i : i + 16]], y[perm[i : i + 16]]) for i in range(0, 64, 16)]

        def step(m, b):
            mse = ((m(b[0]) - b[1]) ** 2).mean()
            return {"loss": mse, "mse": mse}

        hist = train(net, step, batches, epochs=30, lr=1e-2, device="cpu", seed=seed,
                     val_batches=lambda: [(x, y)], patience=3)
        return net, hist

    n1, h1 = run(0)
    n2, h2 = run(0)
    assert h1 == h2
    assert all(torch.equal(a, b) for a, b in zip(n1.state_dict().values(), n2.state_dict().values()))
    assert {"loss", "mse", "val_loss", "val_mse"} <= set(h1)
    assert h1["loss"][-1] < h1["loss"][0]


def test_train_early_stopping_monitors_the_chosen_validation_term():
    net = torch.nn.Linear(1, 1)
    x = torch.linspace(-1, 1, 32)[:, None]

    def step(m, b):
        fit = ((m(b) - 2 * b) ** 2).mean()
        # "other" only grows: watching it stops after `patience` epochs and keeps the first epoch
        return {"loss": fit, "other": torch.tensor(float(len(seen))) + 0 * fit}

    seen: list[int] = []
    hist = train(net, lambda m, b: (seen.append(1), step(m, b))[1], lambda g: [x], epochs=20, lr=1e-2,
                 device="cpu", seed=0, val_batches=lambda: [x], patience=2, monitor="other")
    assert len(hist["loss"]) == 3 and hist["best_epoch"] == [1.0]
    with pytest.raises(KeyError, match="no 'auc' term"):
        train(net, step, lambda g: [x], epochs=2, lr=1e-2, device="cpu", seed=0, val_batches=lambda: [x],
              patience=2, monitor="auc")


def test_train_weight_averaging_keeps_the_mean_of_the_epochs_weights():
    x = torch.linspace(-1, 1, 32)[:, None]
    seen: list[torch.Tensor] = []

    def step(m, b):
        return {"loss": ((m(b) - 2 * b) ** 2).mean()}

    net = torch.nn.Linear(1, 1)
    plain = copy.deepcopy(net)

    def batches(g):
        yield x

    hist = train(net, lambda m, b: (seen.append(m.weight.detach().clone()) if m.training else None, step(m, b))[1],
                 batches, epochs=6, lr=1e-1, device="cpu", seed=0, average_from=3)
    # the weights after epochs 3..6 are those seen at the start of epochs 4..6, plus the final ones
    train(plain, step, batches, epochs=6, lr=1e-1, device="cpu", seed=0)
    after = [*seen[3:], plain.weight.detach()]
    assert hist["averaged_epochs"] == [1.0, 2.0, 3.0, 4.0]
    assert torch.allclose(net.weight, torch.stack(after).mean(0), atol=1e-6)
    with pytest.raises(ValueError, match="counts epochs from 1"):
        train(net, step, batches, epochs=1, lr=1e-2, device="cpu", seed=0, average_from=0)


def test_train_refuses_nan_loss():
    net = torch.nn.Linear(1, 1)
    with pytest.raises(FloatingPointError, match="lower lr"):
        train(net, lambda m, b: {"loss": m(b).sum() * float("nan")}, lambda g: [torch.ones(2, 1)],
              epochs=1, lr=1e-3, device="cpu", seed=0)


def test_train_refuses_nan_loss_naming_the_epoch_and_stops_at_that_step_on_cpu():
    net = torch.nn.Linear(1, 1)
    calls: list[int] = []

    def step(m, b):
        calls.append(1)
        bad = len(calls) == 5  # epoch 3, first of its two batches
        return {"loss": m(b).sum() * (float("inf") if bad else 1.0)}

    with pytest.raises(FloatingPointError, match=r"inf at epoch 3; lower lr"):
        train(net, step, lambda g: [torch.ones(2, 1), torch.ones(2, 1)], epochs=5, lr=1e-3, device="cpu", seed=0)
    assert len(calls) == 5  # on CPU the check is per step: no step after the bad one


def _old_train_history(net, step, batches, *, epochs, lr, seed):
    """The loop as it was before the per-epoch host copy: float() of every term at every step."""
    opt = torch.optim.Adam([p for p in net.parameters() if p.requires_grad], lr=lr)
    gen = torch.Generator().manual_seed(seed)
    hist: dict[str, list[float]] = {}
    with sf.nn.seeded(seed):
        for _ in range(epochs):
            net.train()
            terms: dict[str, list[float]] = {}
            for b in batches(gen):
                out = step(net, b)
                opt.zero_grad(set_to_none=True)
                out["loss"].backward()
                opt.step()
                for k, v in out.items():
                    terms.setdefault(k, []).append(float(v.detach()))
            for k, v in terms.items():
                hist.setdefault(k, []).append(float(np.mean(v)))
    return hist


def test_train_history_on_cpu_equals_the_per_step_float_loop():
    # loss terms are kept as device tensors and copied once per epoch; on CPU the history (and the
    # weights) must be bit-for-bit what the per-step float() loop gave
    x = torch.randn(96, 3, generator=torch.Generator().manual_seed(2))
    y = x @ torch.tensor([[1.0], [-2.0], [0.5]])

    def batches(g):
        perm = torch.randperm(96, generator=g)
        return [(x[perm[i : i + 32]], y[perm[i : i + 32]]) for i in range(0, 96, 32)]

    def step(m, b):
        mse = ((m(b[0]) - b[1]) ** 2).mean()
        return {"loss": mse + 0.1 * m[0].weight.abs().mean(), "mse": mse, "half": (mse * 0.5).double()}

    def net():
        with sf.nn.seeded(3):
            return torch.nn.Sequential(torch.nn.Linear(3, 16), torch.nn.Dropout(0.3), torch.nn.Linear(16, 1))

    a, b = net(), net()
    new = train(a, step, batches, epochs=4, lr=1e-2, device="cpu", seed=7)
    old = _old_train_history(b, step, batches, epochs=4, lr=1e-2, seed=7)
    assert new == old
    assert all(torch.equal(p, q) for p, q in zip(a.state_dict().values(), b.state_dict().values()))


def test_train_never_autocasts_on_cpu():
    assert sf.nn.autocast_dtype("cpu") is None
    net = torch.nn.Linear(2, 1)
    x = torch.randn(8, 2)
    seen: list[tuple[bool, torch.dtype]] = []

    def step(m, b):
        out = m(b)
        seen.append((torch.is_autocast_enabled("cpu"), out.dtype))
        return {"loss": (out ** 2).mean()}

    for amp in (None, True, False):
        h = train(net, step, lambda g: [x], epochs=2, lr=1e-2, device="cpu", seed=0, amp=amp,
                  val_batches=lambda: [x])
        assert set(h) == {"loss", "val_loss"}  # nothing recorded about autocast in the history itself
    assert seen and all(not on and dt == torch.float32 for on, dt in seen)


def test_to_device_keeps_values_and_dtype():
    a = np.arange(6, dtype=np.int64).reshape(2, 3)
    t = sf.nn.to_device(a, "cpu")
    assert t.dtype == torch.int64 and t.tolist() == a.tolist()
    assert sf.nn.to_device(a, "cpu", torch.float32).dtype == torch.float32


class _Tiny(BaseModel):
    def _build(self):
        return torch.nn.Linear(self.params["n_in"], 2)


def test_base_model_save_load_and_gene_check(tmp_path):
    m = _Tiny(genes=["a", "b", "c"], n_in=3, device="cpu", random_state=3)
    m.info["normalisation"] = {"target_sum": 1e4, "arr": np.arange(2)}
    m.is_trained = True
    m.save(tmp_path / "m")
    with pytest.raises(sf.InputError, match="overwrite=True"):
        m.save(tmp_path / "m")
    back = _Tiny.load(tmp_path / "m", device="cpu")
    assert back.genes == ["a", "b", "c"] and back.params == {"n_in": 3} and back.is_trained
    x = torch.randn(4, 3)
    assert torch.equal(m.module(x), back.module(x))
    back.check_genes(["c", "b", "a", "z"])
    with pytest.raises(sf.GeneMismatchError, match=r"missing .*\['c'\]"):
        back.check_genes(["a", "b"])
    with pytest.raises(sf.DataNotFoundError, match="not a saved stfuse model"):
        _Tiny.load(tmp_path)
    w1 = _Tiny(n_in=3, device="cpu", random_state=5).module.weight
    w2 = _Tiny(n_in=3, device="cpu", random_state=5).module.weight
    assert torch.equal(w1, w2)


def test_tissue_cnn_features_any_input_size():
    from stfuse.nn import TissueCNN

    net = TissueCNN((8, 8, 16, 16)).eval()
    assert net.output_dim == 32
    for px in (32, 64, 96):
        out = net(torch.rand(3, 3, px, px))
        assert out.shape == (3, 32) and torch.isfinite(out).all()


def test_load_state_dict_unwraps_and_returns_float32(tmp_path):
    from stfuse.nn import file_checksum, load_state_dict, shipped_weights

    net = torch.nn.Linear(3, 2)
    torch.save({"state_dict": {k: v.half() for k, v in net.state_dict().items()}}, tmp_path / "w.pt")
    state = load_state_dict(tmp_path / "w.pt")
    assert all(v.dtype == torch.float32 for v in state.values())
    torch.nn.Linear(3, 2).load_state_dict(state)
    assert len(file_checksum(tmp_path / "w.pt")) == 16
    with pytest.raises(sf.WeightsUnavailableError, match=r"train_tissue_encoder\.py"):
        shipped_weights("tissue", tmp_path / "missing.pt")


def test_cross_attention_edge_index_matches_tokens():
    from stfuse.nn import nbr_to_edges

    torch.manual_seed(0)
    att = NeighbourhoodCrossAttention(4, 5, 8, heads=2)
    nbr = torch.tensor([[1, 2], [0, -1], [0, 1]])
    q, kv = torch.randn(3, 4), torch.randn(3, 5)
    by_tokens = att(q, kv, neighbourhood_tokens(nbr))
    dense = att.last_attention
    by_edges = att(q, kv, edge_index=nbr_to_edges(nbr))
    assert torch.allclose(by_tokens, by_edges, atol=1e-6)
    assert att.last_attention.shape == (8, 2) and torch.allclose(dense.sum(-1), torch.ones(3, 2))
    with pytest.raises(ValueError, match="exactly one"):
        att(q, kv)


def test_graph_mean_and_edges():
    from stfuse.nn import graph_mean, nbr_to_edges, tokens_to_edges

    x = torch.tensor([[1.0], [2.0], [6.0]])
    e = nbr_to_edges(torch.tensor([[1, 2], [0, -1], [-1, -1]]))
    assert e.tolist() == [[0, 1, 2, 1, 0, 2], [0, 0, 0, 1, 1, 2]]
    assert graph_mean(x, e).squeeze(1).tolist() == [3.0, 1.5, 6.0]
    assert tokens_to_edges(torch.tensor([[-1, 2]])).tolist() == [[2], [0]]
    # gradients flow through index_select/scatter (the PyG path), also on an isolated target
    x.requires_grad_(True)
    graph_mean(x, e).sum().backward()
    assert torch.allclose(x.grad.squeeze(1), torch.tensor([1 / 3 + 1 / 2, 1 / 3 + 1 / 2, 1 / 3 + 1]))
