"""Image networks: the small tissue CNN of stfuse's default encoder, a plain-torch ResNet-50, weight loading."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import torch
from torch import nn

from .._errors import WeightsUnavailableError
from ._blocks import ConvAutoencoder

__all__ = ["ResNet50", "TissueCNN", "file_checksum", "histospace_autoencoder", "load_state_dict", "shipped_weights",
           "tissue_cnn"]


def file_checksum(path: str | os.PathLike) -> str:
    """First 16 hex digits of the SHA-256 of a file (identifies weights in embedding caches).

    Examples
    --------
    >>> import tempfile, pathlib
    >>> from stfuse.nn import file_checksum
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "w.bin"
    >>> _ = p.write_bytes(b"abc")
    >>> file_checksum(p)
    'ba7816bf8f01cfea'
    """
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 22):
            h.update(chunk)
    return h.hexdigest()[:16]


def load_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """A state dict from a ``torch.save`` file (CPU, float32; ``{"state_dict": ...}`` wrappers unwrapped).

    Weights shipped in half precision (to stay small) come back as float32.

    Examples
    --------
    >>> import tempfile, pathlib, torch
    >>> from stfuse.nn import load_state_dict
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "w.pt"
    >>> torch.save({"state_dict": {"w": torch.ones(2, dtype=torch.float16)}}, p)
    >>> load_state_dict(p)["w"].dtype
    torch.float32
    """
    state = torch.load(Path(path), map_location="cpu", weights_only=True)
    state = state.get("state_dict", state) if isinstance(state, dict) else state
    return {k: v.float() if torch.is_tensor(v) and v.is_floating_point() else v for k, v in state.items()}


# ------------------------------------------------------------------------------------------------
# TissueCNN: a small residual CNN, fast on a CPU, trained self-supervised on H&E tiles
# ------------------------------------------------------------------------------------------------
class _Basic(nn.Module):
    """Residual block: Conv3×3 (stride) → BN → ReLU → Conv3×3 → BN, plus a 1×1 projection shortcut."""

    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.short = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False), nn.BatchNorm2d(c_out))
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self.bn2(self.conv2(out)) + self.short(x))


class TissueCNN(nn.Module):
    """Small residual CNN for H&E tiles: stem Conv3×3/2, three residual stages (stride 2 each), pooling.

    A ``(b, 3, s, s)`` batch (any ``s`` ≥ 16; trained on 64 px views, fed 160 px tiles by :mod:`stfuse.im`) becomes
    ``(b, 2 * widths[-1])`` features: per-channel mean and standard deviation of the last map
    (the mean summarises the tissue, the standard deviation its heterogeneity within the patch).

    Parameters
    ----------
    widths
        Channels of the stem and the three stages.

    Examples
    --------
    >>> import torch
    >>> from stfuse.nn import TissueCNN
    >>> TissueCNN()(torch.zeros(2, 3, 64, 64)).shape
    torch.Size([2, 384])
    """

    def __init__(self, widths: tuple[int, int, int, int] = (32, 48, 96, 192)) -> None:
        super().__init__()
        self.widths = tuple(int(w) for w in widths)
        w = self.widths
        self.stem = nn.Sequential(nn.Conv2d(3, w[0], 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(w[0]),
                                  nn.ReLU(inplace=True))
        self.stages = nn.Sequential(*[_Basic(w[i], w[i + 1], 2) for i in range(3)])

    @property
    def output_dim(self) -> int:
        """Width of the features."""
        return 2 * self.widths[-1]

    def feature_map(self, x: torch.Tensor) -> torch.Tensor:
        """The last ``(b, widths[-1], s/16, s/16)`` map."""
        return self.stages(self.stem(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.feature_map(x).flatten(2)
        return torch.cat([z.mean(dim=2), z.std(dim=2, unbiased=False)], dim=1)


# ------------------------------------------------------------------------------------------------
# ResNet-50 with torchvision-compatible state-dict keys
# ------------------------------------------------------------------------------------------------
class _Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, c_in: int, width: int, stride: int = 1, downsample: nn.Module | None = None) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, width * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(width * 4)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


class ResNet50(nn.Module):
    """ResNet-50 (v1.5, stride on the 3×3 conv) whose ``state_dict`` keys match torchvision's.

    ``forward`` returns the 2048-d average-pooled features (the input of ``fc``).

    Examples
    --------
    >>> import torch
    >>> from stfuse.nn import ResNet50
    >>> ResNet50()(torch.zeros(1, 3, 64, 64)).shape
    torch.Size([1, 2048])
    """

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        c_in = 64
        for i, (width, blocks, stride) in enumerate([(64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2)], start=1):
            down = nn.Sequential(nn.Conv2d(c_in, width * 4, 1, stride=stride, bias=False), nn.BatchNorm2d(width * 4))
            layers = [_Bottleneck(c_in, width, stride, down)]
            c_in = width * 4
            layers += [_Bottleneck(c_in, width) for _ in range(blocks - 1)]
            setattr(self, f"layer{i}", nn.Sequential(*layers))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(2048, 1000)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return torch.flatten(self.avgpool(x), 1)


# ------------------------------------------------------------------------------------------------
# weights shipped with stfuse (trained by scripts/ in the repository on public HER2ST images)
# ------------------------------------------------------------------------------------------------
WEIGHTS_DIR = Path(__file__).parent / "weights"
SHIPPED = {
    "histospace": (WEIGHTS_DIR / "histospace_autoencoder.pt", "scripts/train_histo_autoencoder.py"),
    "tissue": (WEIGHTS_DIR / "tissue_cnn.pt", "scripts/train_tissue_encoder.py"),
}


def shipped_weights(name: str, weights: str | os.PathLike | None = None) -> tuple[dict[str, torch.Tensor], str]:
    """State dict and checksum of the weights shipped as ``name`` (or of the file ``weights``).

    Raises :class:`stfuse.WeightsUnavailableError` naming the training script when the file is missing.

    Examples
    --------
    >>> from stfuse.nn import TissueCNN, shipped_weights
    >>> state, checksum = shipped_weights("tissue")
    >>> TissueCNN().load_state_dict(state)
    <All keys matched successfully>
    """
    default, script = SHIPPED[name]
    path = Path(weights) if weights is not None else default
    if not path.is_file():
        raise WeightsUnavailableError(
            f"{name} weights not found at {str(path)!r}. They ship with stfuse; in a source checkout train them "
            f"with `python {script}`, or pass weights=path."
        )
    return load_state_dict(path), file_checksum(path)


def histospace_autoencoder(weights: str | os.PathLike | None = None) -> tuple[ConvAutoencoder, str]:
    """The HistoSPACE autoencoder with the shipped (or given) weights, in eval mode, and the weights checksum.

    Examples
    --------
    >>> from stfuse.nn import histospace_autoencoder
    >>> ae, checksum = histospace_autoencoder()
    >>> len(checksum)
    16
    """
    state, checksum = shipped_weights("histospace", weights)
    ae = ConvAutoencoder()
    ae.load_state_dict(state)
    return ae.eval(), checksum


def tissue_cnn(weights: str | os.PathLike | None = None) -> tuple[TissueCNN, str]:
    """The :class:`TissueCNN` of stfuse's default encoder with the shipped (or given) weights, and the checksum.

    Examples
    --------
    >>> from stfuse.nn import tissue_cnn
    >>> net, checksum = tissue_cnn()
    >>> net.output_dim
    384
    """
    state, checksum = shipped_weights("tissue", weights)
    widths = tuple(int(state[k].shape[0]) for k in ("stem.0.weight", "stages.0.conv1.weight", "stages.1.conv1.weight",
                                                    "stages.2.conv1.weight"))
    net = TissueCNN(widths)
    net.load_state_dict(state)
    return net.eval(), checksum
