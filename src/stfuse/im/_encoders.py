"""Image encoders: each knows its input size, normalisation, output dimension and weights checksum."""

from __future__ import annotations

import hashlib
import os
import urllib.error
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .._errors import InputError, WeightsUnavailableError
from .._settings import settings
from ..nn import ResNet50, file_checksum, histospace_autoencoder, load_state_dict, pooled_maps, tissue_cnn

__all__ = ["Encoder", "EncoderRegistry", "encoders", "get_encoder"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
RESNET50_URL = "https://download.pytorch.org/models/resnet50-0676ba61.pth"
#: side of the tiles the ``tissue`` encoder sees. It was trained on 64 px views of 100–400 µm tiles
#: (resolution-augmented), but, being fully convolutional with mean/std pooling, it describes a patch
#: best when it sees it finer: 160 px was the best of 64, 96, 128, 160 and 192 px on the HER2ST probes
#: (kNN accuracy, linear probe, ridge to genes; exploration in issue 14's closing note, 2026-12-03);
#: benchmarks/RESULTS.md "Image encoders" compares it with the 64 px it was trained on.
TISSUE_INPUT_PX = 160
#: the encoder every tool uses unless told otherwise
DEFAULT_ENCODER = "tissue"


@dataclass
class Encoder:
    """An image encoder ready to embed uint8 patches.

    Attributes
    ----------
    name
        Registry name (``"histospace"``, ``"resnet50"``, ``"timm:<model>"``) or a user-given name.
    module
        A :class:`torch.nn.Module` (or callable) mapping a normalised ``(b, 3, input_px, input_px)``
        float batch to ``(b, output_dim)`` features.
    input_px
        Side of the input tiles.
    mean, std
        Per-channel normalisation applied to pixels scaled to [0, 1].
    output_dim
        Feature width (found by a dry run when not given).
    checksum
        Identifies the weights; cached embeddings are reused only when it matches (``None``: never cache).
    """

    name: str
    module: Callable[[torch.Tensor], torch.Tensor]
    input_px: int
    mean: tuple[float, float, float] = (0.0, 0.0, 0.0)
    std: tuple[float, float, float] = (1.0, 1.0, 1.0)
    output_dim: int | None = None
    checksum: str | None = None
    _device: str = field(default="cpu", repr=False)

    @classmethod
    def from_module(cls, module: Callable[[torch.Tensor], torch.Tensor], *, name: str | None = None,
                    input_px: int = 224, mean: tuple[float, float, float] = IMAGENET_MEAN,
                    std: tuple[float, float, float] = IMAGENET_STD) -> Encoder:
        """Wrap any ``torch.nn.Module`` or callable mapping an image batch to features.

        Examples
        --------
        >>> import torch
        >>> import stfuse as sf
        >>> net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())
        >>> enc = sf.im.Encoder.from_module(net, name="tiny", input_px=32)
        >>> enc.output_dim
        8
        """
        checksum = _state_checksum(module) if isinstance(module, nn.Module) else None
        name = name or (type(module).__name__ if isinstance(module, nn.Module) else getattr(module, "__name__", "custom"))
        enc = cls(name=name, module=module, input_px=int(input_px), mean=tuple(mean), std=tuple(std), checksum=checksum)
        enc.output_dim = enc._dry_run()
        return enc

    def to(self, device: str) -> Encoder:
        """Move the module to ``device`` (in place) and return self."""
        if isinstance(self.module, nn.Module):
            # channels_last: NHWC convolutions (measured 1.3-1.9x faster on CPU); weights are unchanged
            self.module.to(device, memory_format=torch.channels_last)
            self.module.eval()
        self._device = device
        return self

    def _dry_run(self) -> int:
        # on the module's own device: a user module may already live on a GPU
        param = next(self.module.parameters(), None) if isinstance(self.module, nn.Module) else None
        if param is not None:
            self._device = str(param.device)
        x = torch.zeros(2, 3, self.input_px, self.input_px, device=self._device)
        out = self._forward(x)
        return int(out.shape[1])

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            if isinstance(self.module, nn.Module):
                self.module.eval()
            out = self.module(x)
        if not isinstance(out, torch.Tensor):
            out = torch.as_tensor(np.asarray(out))
        if out.ndim != 2 or out.shape[0] != x.shape[0]:
            raise InputError(
                f"Encoder {self.name!r} returned features of shape {tuple(out.shape)} for a batch of {x.shape[0]} "
                "images; it must return (batch, features). Add pooling/flattening to the module."
            )
        if self.output_dim is not None and out.shape[1] != self.output_dim:
            raise InputError(f"Encoder {self.name!r} returned {out.shape[1]} features, expected {self.output_dim}.")
        return out

    def preprocess(self, patches: np.ndarray) -> torch.Tensor:
        """uint8 ``(b, 3, s, s)`` → float, resized to ``input_px``, scaled to [0, 1] and normalised."""
        import torch.nn.functional as F

        x = torch.from_numpy(np.ascontiguousarray(patches)).float().div_(255.0)
        if x.shape[-1] != self.input_px or x.shape[-2] != self.input_px:
            x = F.interpolate(x, size=(self.input_px, self.input_px), mode="bilinear", antialias=True,
                              align_corners=False)
        mean = torch.tensor(self.mean).view(1, 3, 1, 1)
        std = torch.tensor(self.std).view(1, 3, 1, 1)
        return (x - mean) / std

    def __call__(self, patches: np.ndarray) -> np.ndarray:
        """Features ``(b, output_dim)`` float32 of uint8 patches."""
        x = self.preprocess(patches).to(self._device).contiguous(memory_format=torch.channels_last)
        return self._forward(x).float().cpu().numpy()

    def provenance(self) -> dict[str, Any]:
        """What identifies embeddings made by this encoder (recorded in ``uns``)."""
        return {"encoder": self.name, "checksum": self.checksum, "input_px": self.input_px,
                "output_dim": self.output_dim}


def _state_checksum(module: nn.Module) -> str:
    h = hashlib.sha256()
    for k, v in module.state_dict().items():
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


# ------------------------------------------------------------------------------------------------
# histospace: the HistoSPACE autoencoder's encoder, weights shipped with the package
# ------------------------------------------------------------------------------------------------
class _PooledConvEncoder(nn.Module):
    """ConvEncoder + per-channel mean and standard deviation over the 16 × 16 map (256 features)."""

    def __init__(self, encoder: nn.Module) -> None:
        super().__init__()
        self.encoder = encoder

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return pooled_maps(self.encoder(x))


def _histospace(weights: str | os.PathLike | None = None) -> Encoder:
    ae, checksum = histospace_autoencoder(weights)
    return Encoder(name="histospace", module=_PooledConvEncoder(ae.encoder), input_px=128, output_dim=256,
                   checksum=checksum)


# ------------------------------------------------------------------------------------------------
# tissue: small CNN trained self-supervised with resolution augmentation (scripts/train_tissue_encoder.py)
# ------------------------------------------------------------------------------------------------
def _tissue(weights: str | os.PathLike | None = None) -> Encoder:
    net, checksum = tissue_cnn(weights)
    return Encoder(name="tissue", module=net, input_px=TISSUE_INPUT_PX,
                   output_dim=net.output_dim, checksum=checksum)


# ------------------------------------------------------------------------------------------------
# resnet50: plain-torch ResNet-50 (stfuse.nn.ResNet50) with torchvision weights
# ------------------------------------------------------------------------------------------------
def _resnet50(weights: str | os.PathLike | None = None) -> Encoder:
    net = ResNet50()
    if isinstance(weights, str) and weights == "random":
        warnings.warn("resnet50 with random weights: for timing only, the features mean nothing.", UserWarning,
                      stacklevel=3)
        with torch.random.fork_rng():
            torch.manual_seed(0)
            net = ResNet50()
        net.eval()
        return Encoder(name="resnet50", module=net, input_px=224, mean=IMAGENET_MEAN, std=IMAGENET_STD,
                       output_dim=2048, checksum="random")
    if weights is not None:
        path = Path(weights)
        if not path.is_file():
            raise WeightsUnavailableError(f"ResNet-50 weights file {str(path)!r} does not exist.")
    else:
        cache = settings.cachedir / "weights"
        path = cache / Path(RESNET50_URL).name
        if not path.is_file():
            try:
                torch.hub.load_state_dict_from_url(RESNET50_URL, model_dir=str(cache), progress=settings.verbosity >= 1,
                                                   check_hash=True, map_location="cpu")
            except (urllib.error.URLError, OSError, RuntimeError) as e:
                raise WeightsUnavailableError(
                    f"Could not download the ImageNet ResNet-50 weights from {RESNET50_URL} ({e}). Either pass "
                    "weights=path to a torchvision resnet50 state dict (e.g. resnet50-0676ba61.pth), or connect to "
                    f"the internet once so they are cached in {cache}."
                ) from None
    missing, unexpected = net.load_state_dict(load_state_dict(path), strict=False)
    if [k for k in missing if not k.startswith("fc.")] or unexpected:
        raise InputError(
            f"{str(path)!r} is not a torchvision ResNet-50 state dict (missing {missing[:3]}, unexpected {unexpected[:3]})."
        )
    net.eval()
    return Encoder(name="resnet50", module=net, input_px=224, mean=IMAGENET_MEAN, std=IMAGENET_STD,
                   output_dim=2048, checksum=file_checksum(path))


def _timm(model_name: str, weights: str | os.PathLike | None = None) -> Encoder:
    try:
        import timm
    except ImportError:
        raise ImportError(f"Encoder 'timm:{model_name}' needs timm: `pip install 'stfuse[timm]'`.") from None
    if weights is None:
        raise WeightsUnavailableError(
            f"Encoder 'timm:{model_name}' needs a local checkpoint: pass weights=path (e.g. the UNI "
            "pytorch_model.bin you downloaded after accepting its licence)."
        )
    net = timm.create_model(model_name, pretrained=False, num_classes=0)
    net.load_state_dict(load_state_dict(weights), strict=False)
    net.eval()
    cfg = getattr(net, "pretrained_cfg", {}) or {}
    size = int(cfg.get("input_size", (3, 224, 224))[-1])
    return Encoder.from_module(net, name=f"timm:{model_name}", input_px=size,
                               mean=tuple(cfg.get("mean", IMAGENET_MEAN)), std=tuple(cfg.get("std", IMAGENET_STD)))


class EncoderRegistry(dict):
    """Name → factory ``f(weights=None) -> Encoder``; ``"timm:<model>"`` names are resolved on the fly.

    Examples
    --------
    >>> import stfuse as sf
    >>> sorted(sf.im.encoders)
    ['histospace', 'resnet50', 'tissue']
    """

    def register(self, name: str, factory: Callable[..., Encoder]) -> None:
        """Add an encoder factory under ``name`` (``factory(weights=None)`` returns an :class:`Encoder`)."""
        self[name] = factory


encoders = EncoderRegistry(tissue=_tissue, histospace=_histospace, resnet50=_resnet50)


def get_encoder(encoder: str | Encoder | nn.Module | Callable, *, weights: str | os.PathLike | None = None,
                device: str = "cpu") -> Encoder:
    """Resolve an encoder given by name, :class:`Encoder`, ``torch.nn.Module`` or callable.

    Parameters
    ----------
    encoder
        ``"tissue"`` (default of every tool; offline; a small CNN trained self-supervised with
        resolution augmentation by ``scripts/train_tissue_encoder.py``, fed 160 px tiles: above
        ``"histospace"``, squidpy's features and the mean colour on HER2ST at native and 0.3x
        resolution, see ``benchmarks/RESULTS.md``), ``"histospace"`` (offline; the HistoSPACE
        paper's autoencoder, the previous default), ``"resnet50"`` (ImageNet; ``weights=path`` or
        downloaded once), ``"timm:<model>"`` (needs timm and ``weights=path``), an :class:`Encoder`, or any
        module/callable mapping a ``(b, 3, 224, 224)`` ImageNet-normalised batch to ``(b, d)`` features.
    weights
        Local weights file for named encoders; ``"random"`` for timing-only random ResNet-50 weights.
    device
        Device to run on.

    Returns
    -------
    The :class:`Encoder`, on ``device``.

    Examples
    --------
    >>> import stfuse as sf
    >>> enc = sf.im.get_encoder("resnet50", weights="random")  # doctest: +SKIP
    >>> enc.output_dim  # doctest: +SKIP
    2048
    """
    if isinstance(encoder, Encoder):
        enc = encoder
    elif isinstance(encoder, str):
        if encoder.startswith("timm:"):
            enc = _timm(encoder.split(":", 1)[1], weights)
        elif encoder in encoders:
            enc = encoders[encoder](weights=weights)
        else:
            raise InputError(
                f"Unknown encoder {encoder!r}; available: {sorted(encoders)}, 'timm:<model>', an sf.im.Encoder, "
                "or any torch.nn.Module mapping image batches to features."
            )
    elif callable(encoder):
        enc = Encoder.from_module(encoder)
    else:
        raise InputError(f"encoder must be a name, an sf.im.Encoder or a torch module; got {type(encoder).__name__}.")
    return enc.to(device)
