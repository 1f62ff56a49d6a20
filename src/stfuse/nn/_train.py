"""One training loop for every stfuse model: device, seed, progress bar, early stopping, loss history."""

from __future__ import annotations

import contextlib
import copy
import math
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import numpy as np
import torch

from .. import _logging as log

__all__ = ["History", "autocast_dtype", "seeded", "to_device", "train"]

History = dict[str, list[float]]


@contextlib.contextmanager
def seeded(seed: int, device: str = "cpu"):
    """Seed torch (and CUDA when used) inside the block without disturbing the caller's RNG state.

    Examples
    --------
    >>> import torch
    >>> from stfuse.nn import seeded
    >>> with seeded(0):
    ...     a = torch.rand(2)
    >>> with seeded(0):
    ...     b = torch.rand(2)
    >>> bool((a == b).all())
    True
    """
    devices = [torch.device(device).index or 0] if str(device).startswith("cuda") else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(int(seed))
        yield


def _mean(values: list[float]) -> float:
    return float(np.mean(values)) if values else float("nan")


def _floats(values: list[torch.Tensor]) -> list[float]:
    """Detached scalar tensors as Python floats, with one device-to-host copy for the whole list.

    float32 -> float64 is exact, so the floats equal ``float(v)`` of each tensor.
    """
    if not values:
        return []
    return torch.stack([v.reshape(()).to(torch.float64) for v in values]).cpu().tolist()


def _scalar(v: Any) -> torch.Tensor:
    return v.detach() if isinstance(v, torch.Tensor) else torch.as_tensor(float(v))


def autocast_dtype(device: str | torch.device) -> torch.dtype | None:
    """The dtype :func:`train` autocasts to on ``device``: bfloat16 on CUDA where supported, else float16; ``None`` on CPU.

    Parameters
    ----------
    device
        A torch device.

    Returns
    -------
    ``torch.bfloat16`` or ``torch.float16`` on a CUDA device, ``None`` elsewhere (no autocast).

    Examples
    --------
    >>> from stfuse.nn import autocast_dtype
    >>> autocast_dtype("cpu") is None
    True
    """
    if torch.device(device).type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def to_device(a: Any, device: str | torch.device, dtype: torch.dtype | None = None) -> torch.Tensor:
    """A numpy array (or tensor) as a tensor on ``device``; on CUDA through pinned memory, without a host sync.

    Parameters
    ----------
    a
        Array-like or tensor.
    device
        Target device.
    dtype
        Target dtype (default: the array's).

    Returns
    -------
    The tensor on ``device`` (on CPU it may share memory with ``a``).

    Examples
    --------
    >>> import numpy as np
    >>> from stfuse.nn import to_device
    >>> to_device(np.arange(3), "cpu").tolist()
    [0, 1, 2]
    """
    t = a if isinstance(a, torch.Tensor) else torch.as_tensor(np.asarray(a))
    if dtype is not None and t.dtype != dtype:
        t = t.to(dtype)
    dev = torch.device(device)
    if dev.type == "cuda" and t.device.type == "cpu":
        return t.pin_memory().to(dev, non_blocking=True)
    return t.to(dev)


def _average(module: torch.nn.Module, avg: dict[str, torch.Tensor] | None, n: int) -> dict[str, torch.Tensor]:
    """The running mean of ``n`` earlier states updated with the module's state (counters: the latest)."""
    state = module.state_dict()
    if avg is None:
        return {k: v.detach().clone() for k, v in state.items()}
    for k, v in state.items():
        if v.is_floating_point():
            avg[k] += (v.detach() - avg[k]) / (n + 1)
        else:
            avg[k] = v.detach().clone()
    return avg


def train(
    module: torch.nn.Module,
    step: Callable[[torch.nn.Module, Any], Mapping[str, torch.Tensor]],
    batches: Callable[[torch.Generator], Iterable[Any]],
    *,
    epochs: int,
    lr: float,
    device: str,
    seed: int,
    weight_decay: float = 0.0,
    params: Iterable[torch.nn.Parameter] | None = None,
    val_batches: Callable[[], Iterable[Any]] | None = None,
    patience: int | None = None,
    monitor: str = "loss",
    min_delta: float = 0.0,
    grad_clip: float | None = None,
    fused: bool = False,
    max_steps: int | None = None,
    average_from: int | None = None,
    amp: bool | None = None,
    desc: str = "training",
) -> History:
    """Train ``module`` with Adam and return the per-epoch history of every loss term.

    Parameters
    ----------
    module
        The model, already on ``device``.
    step
        ``step(module, batch)`` returns a mapping of loss terms; its ``"loss"`` entry is minimised,
        the others are recorded.
    batches
        ``batches(generator)`` yields the batches of one epoch; shuffle with the generator given, so
        runs with the same seed see the same order.
    epochs, lr, weight_decay
        Adam settings.
    device
        Device the module lives on (used to seed CUDA too).
    seed
        Seed for initialisation-independent randomness (dropout, masking, shuffling).
    params
        Parameters to optimise (default: all that require grad).
    val_batches
        Validation batches; ``step`` is evaluated on them in eval mode each epoch (``val_`` prefix).
    patience
        Stop when the monitored loss (validation if given, else training) has not improved by
        ``min_delta`` for this many epochs, and restore the best weights.
    monitor
        The loss term watched by early stopping (``"loss"``: the minimised total; e.g. ``"bce"`` to
        stop on the supervised term of the validation batches alone). Validation only: without
        ``val_batches`` the training ``"loss"`` is watched.
    grad_clip
        Clip the gradient norm.
    max_steps
        Stop after this many optimiser steps (batches), even within an epoch; the history then also
        holds ``"steps"`` (the count per epoch, cumulative).
    average_from
        Stochastic weight averaging: from this epoch on (1-based), keep the running mean of the
        weights and BatchNorm statistics at the end of every epoch. Validation and early stopping
        then judge the averaged weights, and the module is left holding them (the best average
        with early stopping). The history gains ``"averaged_epochs"``.
    fused
        Use PyTorch's fused Adam (one pass over the parameters; several times faster on CPU for
        large layers, numerically slightly different from the default implementation). Falls back
        to the default where the device does not support it.
    amp
        Automatic mixed precision: run ``step`` under :func:`torch.autocast` (bfloat16 where the GPU
        supports it, else float16 with a gradient scaler). ``None`` (default): on when ``device`` is
        CUDA, off elsewhere. It does nothing on CPU (CPU runs stay float32 and bit-for-bit
        reproducible). Whether it was used is :func:`autocast_dtype` of the device when ``amp`` is on.
    desc
        Progress-bar text.

    Returns
    -------
    ``{"loss": [...], "<term>": [...], "val_loss": [...], ...}`` with one value per epoch, plus
    ``"best_epoch"`` when early stopping monitored the run.

    Notes
    -----
    The loss terms stay on the device within an epoch and are copied to the host once per epoch, so
    a GPU never waits for the host between steps. On CPU a non-finite loss stops training at the step
    where it occurs; on other devices it is detected at the end of the epoch. Either way a
    :class:`FloatingPointError` names the epoch.

    Examples
    --------
    >>> import torch
    >>> from stfuse.nn import train
    >>> net = torch.nn.Linear(2, 1)
    >>> x, y = torch.randn(64, 2), torch.randn(64, 1)
    >>> hist = train(net, lambda m, b: {"loss": ((m(b[0]) - b[1]) ** 2).mean()}, lambda g: [(x, y)],
    ...              epochs=3, lr=1e-2, device="cpu", seed=0)
    >>> len(hist["loss"])
    3
    """
    params = [p for p in (params if params is not None else module.parameters()) if p.requires_grad]
    opt = None
    if fused:
        try:
            opt = torch.optim.Adam(params, lr=lr, weight_decay=weight_decay, fused=True)
        except (RuntimeError, TypeError, ValueError):
            opt = None
    if opt is None:
        opt = torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    if average_from is not None and int(average_from) < 1:
        raise ValueError(f"average_from counts epochs from 1, got {average_from}.")
    history: History = {}
    best, best_state, best_epoch, waited = math.inf, None, -1, 0
    avg: dict[str, torch.Tensor] | None = None
    n_avg = 0
    judged = module  # what validation and early stopping look at: the module, or its weight average
    gen = torch.Generator().manual_seed(int(seed))
    dev = torch.device(device)
    sync_free = dev.type != "cpu"  # on CPU a per-step check costs nothing; on a GPU it would wait every step
    cast = autocast_dtype(dev) if (amp is None or amp) else None
    scaler = torch.amp.GradScaler("cuda") if cast == torch.float16 else None

    def autocast():
        return torch.autocast(dev.type, dtype=cast) if cast is not None else contextlib.nullcontext()

    def check(loss_values: list[float], epoch: int) -> None:
        bad = next((v for v in loss_values if not math.isfinite(v)), None)
        if bad is not None:
            raise FloatingPointError(
                f"{desc}: the loss became {bad} at epoch {epoch + 1}; lower lr or check the input."
            )

    n_steps = 0
    bar = log.progress_bar(desc=desc, total=epochs)
    with seeded(seed, device):
        try:
            for epoch in range(epochs):
                module.train()
                terms: dict[str, list[torch.Tensor]] = {}
                for batch in batches(gen):
                    with autocast():
                        out = step(module, batch)
                    loss = out["loss"]
                    if not sync_free and not torch.isfinite(loss):
                        check([float(loss.detach())], epoch)
                    opt.zero_grad(set_to_none=True)
                    if scaler is not None:
                        scaler.scale(loss).backward()
                        if grad_clip is not None:
                            scaler.unscale_(opt)
                            torch.nn.utils.clip_grad_norm_(params, grad_clip)
                        scaler.step(opt)
                        scaler.update()
                    else:
                        loss.backward()
                        if grad_clip is not None:
                            torch.nn.utils.clip_grad_norm_(params, grad_clip)
                        opt.step()
                    n_steps += 1
                    for k, v in out.items():
                        terms.setdefault(k, []).append(_scalar(v))
                    if max_steps is not None and n_steps >= max_steps:
                        break
                values = {k: _floats(v) for k, v in terms.items()}  # the epoch's one device-to-host copy
                if sync_free:
                    check(values.get("loss", []), epoch)
                for k, v in values.items():
                    history.setdefault(k, []).append(_mean(v))
                if max_steps is not None:
                    history.setdefault("steps", []).append(float(n_steps))
                if average_from is not None and epoch + 1 >= int(average_from):
                    avg, n_avg = _average(module, avg, n_avg), n_avg + 1
                    if judged is module:
                        judged = copy.deepcopy(module)
                    judged.load_state_dict(avg)
                    history.setdefault("averaged_epochs", []).append(float(n_avg))
                watched = history["loss"][-1]
                if val_batches is not None:
                    judged.eval()
                    vterms: dict[str, list[torch.Tensor]] = {}
                    with torch.no_grad(), autocast():
                        for batch in val_batches():
                            for k, v in step(judged, batch).items():
                                vterms.setdefault(k, []).append(_scalar(v))
                    for k, v in vterms.items():
                        history.setdefault(f"val_{k}", []).append(_mean(_floats(v)))
                    if f"val_{monitor}" not in history:
                        raise KeyError(f"{desc}: the step returns no {monitor!r} term to monitor; it returns "
                                       f"{sorted(vterms)}.")
                    watched = history[f"val_{monitor}"][-1]
                bar.update(1)
                bar.set_postfix(loss=f"{history['loss'][-1]:.4g}")
                if patience is not None:
                    if watched < best - min_delta:
                        best, best_epoch, waited = watched, epoch, 0
                        best_state = copy.deepcopy(judged.state_dict())
                    else:
                        waited += 1
                        if waited >= patience:
                            log.info(f"{desc}: early stop at epoch {epoch + 1}, best epoch {best_epoch + 1}")
                            break
                if max_steps is not None and n_steps >= max_steps:
                    break
        finally:
            bar.close()
    if best_state is not None:
        module.load_state_dict(best_state)
        history["best_epoch"] = [float(best_epoch + 1)]
    elif avg is not None:
        module.load_state_dict(avg)
    module.eval()
    return history
