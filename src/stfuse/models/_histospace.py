"""HistoSPACE: spatial gene expression from H&E tiles alone (Kumar & Chatterjee, 2024).

Arrays in, arrays out: tiles ``(n, 3, s, s)`` uint8 and expression ``(n, n_genes)``; no AnnData or
SpatialData here (the glue is :func:`stfuse.tl.histospace`).

The network is a frozen image encoder and a regressor on its maps. Encoders: ``"tissue"`` (default;
stfuse's :class:`stfuse.nn.TissueCNN` on 160 px tiles, ``192 × 10 × 10`` maps) or ``"histospace"``
(the HistoSPACE autoencoder's :class:`stfuse.nn.ConvEncoder` on 128 px tiles, ``128 × 16 × 16``).
Regressors: ``"mlp"`` (default; per-channel mean and sd of the maps, standardised, dropout, FC, GELU,
dropout, FC), ``"conv"`` (the paper's: Conv3×3 block, BatchNorm, ReLU, MaxPool, flatten, FC, FC) or
``"ridge"`` (closed form on the pooled maps). With a frozen encoder its maps are computed once per tile
(float16 cache, or recomputed per batch above ``cache_gb``).
"""

from __future__ import annotations

import copy
import hashlib
import os
from collections.abc import Callable, Iterator, Sequence
from typing import Any, ClassVar, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .. import _logging as log
from .._errors import InputError
from ..metrics import pearson_per_gene
from ..nn import (
    ConvEncoder,
    TissueCNN,
    histospace_autoencoder,
    map_cache,
    pooled_maps,
    seeded,
    tile_digests,
    tissue_cnn,
    train,
)
from ._base import BaseModel

__all__ = ["ENCODERS", "HEADS", "HistoSPACE", "HistoSPACEModule", "dihedral"]


class _TissueMaps(nn.Module):
    """:class:`~stfuse.nn.TissueCNN` as a map encoder: its last feature map ``(b, 192, s / 16, s / 16)``."""

    def __init__(self) -> None:
        super().__init__()
        self.net = TissueCNN()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net.feature_map(x)


#: the frozen encoders: map network, its output channels, its down-sampling factor, the tile side it is fed
ENCODERS: dict[str, tuple[Callable[[], nn.Module], int, int, int]] = {
    "tissue": (_TissueMaps, TissueCNN().widths[-1], 16, 160),
    "histospace": (ConvEncoder, ConvEncoder.channels[-1], 8, 128),
}
#: per-head defaults of the regressor's width and dropouts (``None`` arguments resolve to these). The mlp's were
#: chosen on HER2ST C2 + C3 + C4 -> C5 (see the closing note of the HistoSPACE issue and benchmarks/RESULTS.md)
HEADS: dict[str, dict[str, float]] = {
    "mlp": {"hidden": 512, "dropout": 0.8, "input_dropout": 0.5},
    "conv": {"hidden": 256, "dropout": 0.0, "input_dropout": 0.0},
    "ridge": {"hidden": 0, "dropout": 0.0, "input_dropout": 0.0},
}
TILE_PX = ENCODERS["tissue"][3]
#: ridge penalties searched by ``head="ridge"`` (on standardised pooled features)
RIDGE_ALPHAS = np.logspace(-1, 7, 17)
_ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {"relu": nn.ReLU, "gelu": nn.GELU, "tanh": nn.Tanh}


def dihedral(x: torch.Tensor, k: int) -> torch.Tensor:
    """One of the 8 rotations/flips of the square images ``x`` (``(..., h, w)``): rot90 ``k % 4``, then flip if ``k >= 4``.

    Examples
    --------
    >>> import torch
    >>> from stfuse.models._histospace import dihedral
    >>> x = torch.arange(4.0).view(1, 1, 2, 2)
    >>> dihedral(x, 1).flatten().tolist()
    [1.0, 3.0, 0.0, 2.0]
    """
    k = int(k)
    y = torch.rot90(x, k % 4, dims=(-2, -1)) if k % 4 else x
    return torch.flip(y, dims=(-1,)) if k >= 4 else y


class HistoSPACEModule(nn.Module):
    """The HistoSPACE regressor (pure torch): encoder maps → regressor → ``n_genes`` expression values.

    Parameters
    ----------
    n_genes
        Number of predicted genes.
    encoder
        ``"tissue"`` (:class:`~stfuse.nn.TissueCNN` maps, ``192 × s/16 × s/16``) or ``"histospace"``
        (:class:`~stfuse.nn.ConvEncoder` maps, ``128 × s/8 × s/8``); see ``stfuse.models._histospace.ENCODERS``.
    head
        ``"mlp"``: standardised :func:`~stfuse.nn.pooled_maps` → Dropout ``input_dropout`` → FC
        ``hidden`` → GELU → Dropout ``dropout`` → FC. ``"conv"`` (the paper's regressor): conv block
        → flatten → (Dropout) FC ``hidden`` → (activation, Dropout) FC. ``"ridge"``: one linear layer on the
        pooled maps.
    hidden
        Width of the first fully connected layer (``None``: ``HEADS``; 256 in the paper).
    fc_activation
        ``"conv"`` head: activation between the two FC layers; ``None`` as in the paper (the two
        layers then compose to one linear map of rank ``hidden``).
    dropout, input_dropout
        Dropout before the last FC layer, and on the pooled features (``"mlp"``) or before the first FC layer
        (``"conv"``, which uses ``dropout`` for both); ``None``: ``HEADS``.
    tile_px
        Input tile side (``None``: the encoder's, 160 or 128 px).
    scale_targets
        Keep per-gene ``target_mean``/``target_scale`` buffers: the regressor predicts standard units
        and :meth:`regress` maps them back to the targets' units.

    Examples
    --------
    >>> import torch
    >>> from stfuse.models import HistoSPACEModule
    >>> net = HistoSPACEModule(10)
    >>> net(torch.rand(2, 3, 160, 160)).shape
    torch.Size([2, 10])
    >>> HistoSPACEModule(10, encoder="histospace", head="conv")(torch.rand(2, 3, 128, 128)).shape
    torch.Size([2, 10])
    """

    def __init__(self, n_genes: int, *, encoder: str = "tissue", head: str = "mlp", hidden: int | None = None,
                 fc_activation: str | None = None, dropout: float | None = None, input_dropout: float | None = None,
                 tile_px: int | None = None, scale_targets: bool = False) -> None:
        super().__init__()
        make, c, down, px = ENCODERS[encoder]
        tile_px = px if tile_px is None else int(tile_px)
        defaults = HEADS[head]
        hidden = int(defaults["hidden"] if hidden is None else hidden)
        dropout = float(defaults["dropout"] if dropout is None else dropout)
        input_dropout = float(defaults["input_dropout"] if input_dropout is None else input_dropout)
        self.encoder = make()
        self.head_kind = head
        self.freeze_encoder = True
        self.scale_targets = bool(scale_targets)
        if self.scale_targets:  # the regressor works in per-gene standard units; outputs are mapped back
            self.register_buffer("target_mean", torch.zeros(n_genes))
            self.register_buffer("target_scale", torch.ones(n_genes))
        if head == "ridge":  # a linear map of the pooled maps (per-channel mean and sd), fitted in closed form
            self.linear = nn.Linear(2 * c, n_genes)
            return
        if head == "mlp":  # pooled maps, standardised by the training tiles' statistics (set by fit)
            self.register_buffer("feature_mean", torch.zeros(2 * c))
            self.register_buffer("feature_scale", torch.ones(2 * c))
            self.mlp = nn.Sequential(nn.Dropout(input_dropout), nn.Linear(2 * c, hidden), nn.GELU(),
                                     nn.Dropout(dropout), nn.Linear(hidden, n_genes))
            return
        self.head = nn.Sequential(nn.Conv2d(c, c, 3, padding=1), nn.BatchNorm2d(c), nn.ReLU(inplace=True),
                                  nn.MaxPool2d(2), nn.Flatten())
        side = tile_px // down // 2
        fc: list[nn.Module] = [nn.Dropout(dropout)] if dropout else []
        fc.append(nn.Linear(c * side * side, hidden))
        if fc_activation is not None:
            fc.append(_ACTIVATIONS[fc_activation]())
        if dropout:
            fc.append(nn.Dropout(dropout))
        fc.append(nn.Linear(hidden, n_genes))
        self.fc = nn.Sequential(*fc)

    def train(self, mode: bool = True) -> HistoSPACEModule:
        """Set train/eval mode; a frozen encoder (and its BatchNorm statistics) always stays in eval mode."""
        super().train(mode)
        if self.freeze_encoder:
            self.encoder.eval()
        return self

    def regress(self, z: torch.Tensor) -> torch.Tensor:
        """Expression from encoder maps ``(b, c, h, w)``."""
        if self.head_kind == "ridge":
            return self.linear(pooled_maps(z))
        if self.head_kind == "mlp":
            return self.regress_pooled(pooled_maps(z))
        out = self.fc(self.head(z))
        return out * self.target_scale + self.target_mean if self.scale_targets else out

    def regress_pooled(self, f: torch.Tensor) -> torch.Tensor:
        """``"mlp"`` head: expression from pooled maps ``(b, 2c)`` (:func:`~stfuse.nn.pooled_maps`)."""
        out = self.mlp((f - self.feature_mean) / self.feature_scale)
        return out * self.target_scale + self.target_mean if self.scale_targets else out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Expression from tiles ``(b, 3, s, s)`` scaled to [0, 1]."""
        return self.regress(self.encoder(x))


def _ridge(F: np.ndarray, Y: np.ndarray, Fv: np.ndarray | None, Yv: np.ndarray | None,
           alphas: np.ndarray) -> tuple[np.ndarray, np.ndarray, float, dict[str, list[float]]]:
    """Ridge of ``Y`` on standardised ``F`` (closed form, SVD); alpha by the mean per-gene r on ``(Fv, Yv)``.

    Without validation data alpha is chosen by generalised cross-validation (mean squared error).
    Returns the weight ``(n_genes, p)`` and bias ``(n_genes,)`` on the raw features, the alpha, and the
    score of every alpha.
    """
    F = F.astype(np.float64)
    mu, sd = F.mean(0), F.std(0) + 1e-8
    ym = Y.mean(0)
    U, S, Vt = np.linalg.svd((F - mu) / sd, full_matrices=False)
    UtY = U.T @ (Y - ym)
    scores: list[float] = []
    coefs = []
    for a in alphas:
        d = S / (S**2 + a)
        coef = Vt.T @ (d[:, None] * UtY)  # (p, g) on standardised features
        coefs.append(coef)
        if Fv is not None:
            P = ((Fv - mu) / sd) @ coef + ym
            scores.append(float(np.nanmean(pearson_per_gene(Yv, P))))
        else:  # GCV: residual / (1 - df / n)^2
            h = S**2 / (S**2 + a)
            resid = (Y - ym) - U @ (h[:, None] * UtY)
            n = len(F)
            scores.append(-float((resid**2).mean() / (1 - h.sum() / n) ** 2))
    best = int(np.nanargmax(scores))
    coef = coefs[best] / sd[:, None]
    return coef.T.astype(np.float32), (ym - mu @ coef).astype(np.float32), float(alphas[best]), {
        "alphas": [float(a) for a in alphas], "alpha_scores": scores}


def _fuse(module: nn.Module) -> nn.Module:
    """An inference copy of ``module`` with every Conv2d → BatchNorm2d pair folded into one convolution.

    Same outputs in eval mode (up to float rounding), about 1.5× faster on CPU.
    """
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    def fold(m: nn.Module) -> nn.Module:
        if isinstance(m, nn.Sequential):
            out: list[nn.Module] = []
            children = list(m)
            i = 0
            while i < len(children):
                a = children[i]
                b = children[i + 1] if i + 1 < len(children) else None
                if isinstance(a, nn.Conv2d) and isinstance(b, nn.BatchNorm2d):
                    out.append(fuse_conv_bn_eval(a, b))
                    i += 2
                else:
                    out.append(fold(a))
                    i += 1
            return nn.Sequential(*out)
        for name, child in list(m.named_children()):
            setattr(m, name, fold(child))
        return m

    return fold(copy.deepcopy(module).eval()).eval()


def _as_float(tiles: np.ndarray, tile_px: int) -> torch.Tensor:
    """uint8 ``(b, 3, s, s)`` → float in [0, 1] at ``tile_px`` (antialiased resize when needed)."""
    x = torch.from_numpy(np.ascontiguousarray(tiles)).float().div_(255.0)
    if x.shape[-1] != tile_px or x.shape[-2] != tile_px:
        x = F.interpolate(x, size=(tile_px, tile_px), mode="bilinear", antialias=True, align_corners=False)
    return x


def _check_tiles(tiles: Any, what: str) -> None:
    shape = getattr(tiles, "shape", None)
    if shape is None or len(shape) != 4 or shape[1] != 3 or shape[2] != shape[3]:
        raise InputError(f"{what} must be an array of square RGB tiles (n, 3, s, s); got shape {shape}.")
    if getattr(tiles, "dtype", None) != np.uint8:
        raise InputError(f"{what} must be uint8 RGB (0-255); got dtype {getattr(tiles, 'dtype', None)}.")


def _chunks(n: int, size: int) -> Iterator[np.ndarray]:
    for s in range(0, n, size):
        yield np.arange(s, min(s + size, n))


class HistoSPACE(BaseModel):
    """HistoSPACE expression-from-histology model: fit on tiles + expression, predict from tiles, save, load.

    Parameters
    ----------
    genes
        Names of the predicted genes, in the column order of the targets.
    encoder
        The frozen image encoder whose maps the regressor reads: ``"tissue"`` (default; stfuse's
        :class:`~stfuse.nn.TissueCNN`, the default encoder of :mod:`stfuse.im`, on 160 px tiles) or
        ``"histospace"`` (the paper's: the HistoSPACE autoencoder's encoder, on 128 px tiles).
    head
        ``"mlp"`` (default): the per-channel mean and sd of the encoder's maps, standardised, then
        Dropout ``input_dropout`` → FC ``hidden`` → GELU → Dropout ``dropout`` → FC ``n_genes``,
        trained with Adam. ``"conv"``: the paper's regressor (convolution block, two FC layers) on the
        maps. ``"ridge"``: ridge regression of the targets on the same pooled maps, closed form, the
        penalty chosen by the mean per-gene r on the validation tiles (generalised cross-validation
        without them): a fast, honest baseline on the same tiles and targets.
    hidden
        Width of the first FC layer (``None``: 512 for ``"mlp"``, 256 for ``"conv"`` as in the paper).
    fc_activation
        ``"conv"`` head: ``None`` (paper: no activation between the FC layers), ``"relu"``,
        ``"gelu"`` or ``"tanh"``. The ``"mlp"`` head always uses GELU.
    dropout
        Dropout before the last FC layer (``None``: 0.8 for ``"mlp"``; 0 for ``"conv"`` as in the
        paper, where it also applies before the first FC layer).
    input_dropout
        ``"mlp"`` head: dropout of the standardised pooled features (``None``: 0.5).
    finetune_encoder
        Train the encoder too (paper: frozen). Frozen encoders have their maps computed
        once per tile, which is several times cheaper.
    encoder_weights
        ``None``: the shipped weights of ``encoder`` (:func:`stfuse.nn.tissue_cnn`,
        :func:`stfuse.nn.histospace_autoencoder`); a path to other weights of that network;
        ``"random"``: no pretraining (for tests and ablations). Loaded when :meth:`fit` is first called.
    tile_px
        Tile side the network sees (``None``: the encoder's, 160 or 128 px).
    scale_targets
        Train the ``"mlp"``/``"conv"`` regressor on per-gene standardised targets (mean 0, sd 1 on the training
        spots; predictions are mapped back), so that every gene weighs alike in the loss, as in the
        per-gene correlation that judges it; ``False``: the raw log-expression (paper).
    resolution_augment
        Sampling factors in (0, 1) of extra training variants: each tile also as if scanned that many
        times as coarsely (down-sampled to ``factor · tile_px`` and back, then rotated/flipped), so a
        model trained on fine scans predicts on coarse ones (e.g. ``(0.3,)`` for a Visium ``hires``
        image from a 0.5 µm/px scan). Every factor adds 8 variants whose frozen maps are cached.
    device
        Torch device (``"auto"``: CUDA when available).
    random_state
        Seed of initialisation, batching, augmentation and dropout.

    Notes
    -----
    With a frozen encoder its maps are computed once per tile content, weights and rotation/flip and
    kept in the process-wide :data:`stfuse.nn.map_cache` (float16, ``sf.nn.map_cache.max_gb``), so
    further fits and predictions on the same tiles (other folds, refits, test-time augmentation)
    reuse them; ``sf.nn.map_cache.clear()`` frees that memory.

    Examples
    --------
    >>> import numpy as np
    >>> from stfuse.models import HistoSPACE
    >>> rng = np.random.default_rng(0)
    >>> tiles = rng.integers(0, 255, (40, 3, 128, 128), dtype=np.uint8)
    >>> Y = rng.normal(size=(40, 5)).astype("float32")
    >>> model = HistoSPACE([f"g{i}" for i in range(5)], encoder_weights="random", device="cpu")
    >>> model.fit(tiles, Y, epochs=1)  # doctest: +ELLIPSIS
    HistoSPACE(trained, ...)
    >>> model.predict(tiles).shape
    (40, 5)
    """

    #: 2: the data contract (normalisation, tile size and stain) is in ``registry``, not ``info``;
    #: 3: ``encoder`` and the ``"mlp"`` head (older models are the ``"histospace"`` encoder, ``"conv"`` or ``"ridge"`` head)
    format_version: ClassVar[int] = 3

    def __init__(
        self,
        genes: Sequence[str],
        *,
        encoder: Literal["tissue", "histospace"] = "tissue",
        head: Literal["mlp", "conv", "ridge"] = "mlp",
        hidden: int | None = None,
        fc_activation: Literal["relu", "gelu", "tanh"] | None = None,
        dropout: float | None = None,
        input_dropout: float | None = None,
        finetune_encoder: bool = False,
        encoder_weights: str | os.PathLike | None = None,
        tile_px: int | None = None,
        scale_targets: bool = True,
        resolution_augment: Sequence[float] = (),
        device: str = "auto",
        random_state: int = 0,
    ) -> None:
        if genes is None or len(genes) == 0:
            raise InputError("HistoSPACE needs the names of the genes it predicts (genes=[...]).")
        if len(set(map(str, genes))) != len(genes):
            raise InputError("The gene names given to HistoSPACE are not unique.")
        if encoder not in ENCODERS:
            raise InputError(f"encoder must be one of {sorted(ENCODERS)}, got {encoder!r}.")
        if head not in HEADS:
            raise InputError(f"head must be one of {sorted(HEADS)}, got {head!r}.")
        if fc_activation is not None and fc_activation not in _ACTIVATIONS:
            raise InputError(f"fc_activation must be None or one of {sorted(_ACTIVATIONS)}, got {fc_activation!r}.")
        hidden = int(HEADS[head]["hidden"] if hidden is None else hidden)
        dropout = float(HEADS[head]["dropout"] if dropout is None else dropout)
        input_dropout = float(HEADS[head]["input_dropout"] if input_dropout is None else input_dropout)
        for name, value in (("dropout", dropout), ("input_dropout", input_dropout)):
            if not 0.0 <= value < 1.0:
                raise InputError(f"{name} must be in [0, 1), got {value}.")
        if head != "ridge" and hidden < 1:
            raise InputError(f"hidden must be a positive integer, got {hidden}.")
        tile_px = ENCODERS[encoder][3] if tile_px is None else int(tile_px)
        if tile_px < 32 or tile_px % 16:
            raise InputError(f"tile_px must be a multiple of 16 and at least 32, got {tile_px}.")
        if any(not 0.0 < float(f) < 1.0 for f in resolution_augment):
            raise InputError(f"resolution_augment takes sampling factors in (0, 1), got {list(resolution_augment)}.")
        if head == "ridge" and finetune_encoder:
            raise InputError("head='ridge' is fitted in closed form on a frozen encoder; use finetune_encoder=False.")
        super().__init__(
            genes=[str(g) for g in genes], device=device, random_state=random_state, encoder=encoder, head=head,
            hidden=hidden, fc_activation=fc_activation, dropout=dropout, input_dropout=input_dropout,
            finetune_encoder=bool(finetune_encoder),
            encoder_weights=None if encoder_weights is None else str(encoder_weights), tile_px=tile_px,
            scale_targets=bool(scale_targets) and head != "ridge",
            resolution_augment=[float(f) for f in resolution_augment],
        )

    @classmethod
    def _saved_params(cls, params: dict[str, Any], format_version: int) -> dict[str, Any]:
        """Saved constructor arguments in today's terms.

        Before format 3 every model was the ``"histospace"`` encoder with the ``"conv"`` head (or
        ``"ridge"``, which was saved), and its ``hidden``/``dropout`` were saved.
        """
        if format_version < 3:
            params = {"encoder": "histospace", "head": "conv", **params}
        return params

    def _build(self) -> HistoSPACEModule:
        p = self.params
        net = HistoSPACEModule(len(self.genes), encoder=p["encoder"], head=p["head"], hidden=p["hidden"],
                               fc_activation=p["fc_activation"], dropout=p["dropout"],
                               input_dropout=p.get("input_dropout"), tile_px=p["tile_px"],
                               scale_targets=p.get("scale_targets", False))
        net.freeze_encoder = not p["finetune_encoder"]
        return net

    # --- encoder ------------------------------------------------------------------------------
    def _load_pretrained(self) -> None:
        """Load the autoencoder's encoder weights once, before the first fit."""
        if "encoder_checksum" in self.info:
            return
        weights = self.params["encoder_weights"]
        if weights == "random":
            self.info["encoder_checksum"] = "random"
            return
        if self.params["encoder"] == "tissue":
            net, checksum = tissue_cnn(weights)
            self.module.encoder.net.load_state_dict(net.state_dict())
        else:
            ae, checksum = histospace_autoencoder(weights)
            self.module.encoder.load_state_dict(ae.encoder.state_dict())
        self.info["encoder_checksum"] = checksum

    def _encode(self, tiles: Any, index: np.ndarray, k: int | np.ndarray = 0,
                encoder: nn.Module | None = None) -> torch.Tensor:
        """Encoder maps of ``tiles[index]`` (dihedral variant ``k`` per tile), on the device, no grad."""
        x = _as_float(tiles[np.sort(index)], self.params["tile_px"])
        order = np.argsort(np.argsort(index))
        x = x[torch.from_numpy(order)]
        x = _augment(x, k, self._factors).to(self.device)
        enc = encoder if encoder is not None else _fuse(self.module.encoder)
        with torch.no_grad():
            return enc(x)

    @property
    def _frozen(self) -> bool:
        return not self.params["finetune_encoder"]

    @property
    def _factors(self) -> tuple[float, ...]:
        """Sampling factors of the variants: variant ``v`` is rotation/flip ``v % 8`` at ``_factors[v // 8]``."""
        return (1.0, *map(float, self.params.get("resolution_augment", ())))

    def _network_key(self) -> str:
        """Names the encoder's current weights and input size: the network part of :data:`map_cache` keys."""
        h = hashlib.blake2b(digest_size=12)
        for k, v in self.module.encoder.state_dict().items():
            h.update(k.encode())
            h.update(v.detach().cpu().contiguous().numpy().tobytes())
        return f"{self.params['encoder']}-encoder:{h.hexdigest()}:{self.params['tile_px']}px"

    def _map_bytes(self) -> int:
        _, c, down, _ = ENCODERS[self.params["encoder"]]
        side = self.params["tile_px"] // down
        return c * side * side * 2

    def _maps(self, tiles: Any, variants: Sequence[int], desc: str | None = None, *,
              digests: list[bytes] | None = None, encoder: nn.Module | None = None) -> torch.Tensor:
        """float16 frozen-encoder maps ``(len(variants), n, c, h, w)`` through :data:`map_cache`."""
        enc = encoder if encoder is not None else _fuse(self.module.encoder)
        key = self._network_key()
        digests = tile_digests(tiles) if digests is None else digests

        def encode(batch: np.ndarray, v: int) -> torch.Tensor:
            return self._encode(batch, np.arange(len(batch)), v, enc)

        out = []
        for i, v in enumerate(variants):
            bar = None if desc is None else (lambda c, i=i: log.progress(
                c, desc=f"{desc} (encoder maps, variant {i + 1}/{len(variants)})"))
            name = (int(v) % 8, self._factors[int(v) // 8])  # the rotation/flip and the sampling factor
            out.append(map_cache.get(tiles, lambda b, _, v=v: encode(b, v), network=key, variant=name,
                                     digests=digests, progress=bar))
        return torch.stack(out)

    def _map_cache(self, tiles: Any, variants: Sequence[int], cache_gb: float, desc: str) -> torch.Tensor | None:
        """The maps of every tile and variant ``(len(variants), n, ...)``, or ``None`` when above ``cache_gb``."""
        need = int(tiles.shape[0]) * len(variants) * self._map_bytes()
        if need > cache_gb * 2**30:
            log.info(f"{desc}: encoder maps would take {need / 2**30:.2f} GiB > cache_gb={cache_gb}; "
                     "recomputing them per batch")
            return None
        return self._maps(tiles, variants, desc)

    def _features(self, tiles: Any, variants: Sequence[int], desc: str | None = None,
                  chunk: int = 512) -> np.ndarray:
        """Pooled frozen-encoder features ``(len(variants), n, 2c)`` float64, computed ``chunk`` tiles at a time."""
        n = int(tiles.shape[0])
        out = np.empty((len(variants), n, 2 * ENCODERS[self.params["encoder"]][1]), np.float64)
        enc = _fuse(self.module.encoder)
        for s in range(0, n, chunk):
            idx = slice(s, min(s + chunk, n))
            z = self._maps(tiles[idx], variants, desc if s == 0 else None, encoder=enc)
            out[:, idx] = pooled_maps(z.flatten(0, 1)).view(len(variants), -1, out.shape[-1]).double().numpy()
        return out

    # --- training -----------------------------------------------------------------------------
    def fit(
        self,
        tiles: Any,
        Y: np.ndarray,
        *,
        val_tiles: Any | None = None,
        val_Y: np.ndarray | None = None,
        epochs: int = 150,
        batch_size: int = 64,
        lr: float = 3e-4,
        weight_decay: float = 0.0,
        loss: Literal["huber", "mse"] = "huber",
        huber_delta: float = 1.0,
        augment: bool = True,
        patience: int | None = 20,
        cache_gb: float = 2.0,
        ridge_alphas: Sequence[float] | None = None,
    ) -> HistoSPACE:
        """Train on tiles and their expression; select the epoch with the lowest validation loss.

        Parameters
        ----------
        tiles
            ``(n, 3, s, s)`` uint8 RGB tiles (a numpy array or memmap; read batch by batch).
        Y
            ``(n, n_genes)`` targets (library-size normalised log1p expression of :attr:`genes`).
        val_tiles, val_Y
            Validation tiles and targets (spots of the training sections kept out of training). The
            weights of the epoch with the lowest validation loss are kept; without validation data
            the last epoch is kept.
        epochs, batch_size, lr, weight_decay
            Adam settings (the ``"mlp"`` head's, chosen on HER2ST C2 + C3 + C4 -> C5; paper, for its
            ``"conv"`` head: 50 epochs, batch 32, lr 1e-4).
        loss
            ``"huber"`` (δ = ``huber_delta``, paper) or ``"mse"``.
        augment
            Random rotations by 90° and flips of the tiles (the 8 dihedral variants; with a frozen
            encoder their maps are computed once each).
        patience
            Stop after this many epochs without a lower validation loss (``None``: run all epochs).
        cache_gb
            Memory allowed for cached encoder maps (frozen encoder); above it maps are recomputed per
            batch, so memory stays bounded for large training sets.
        ridge_alphas
            ``head="ridge"``: the penalties searched (default :data:`RIDGE_ALPHAS`, on standardised
            features); one value fixes it (a refit).

        Returns
        -------
        ``self``, trained; ``info["history"]`` holds the per-epoch losses.
        """
        _check_tiles(tiles, "tiles")
        Y = np.ascontiguousarray(Y, dtype=np.float32)
        n, g = int(tiles.shape[0]), len(self.genes)
        if Y.shape != (n, g):
            raise InputError(f"Y must be (n_tiles, n_genes) = ({n}, {g}); got {Y.shape}.")
        if not np.isfinite(Y).all():
            raise InputError("Y contains NaN or infinite values.")
        if (val_tiles is None) != (val_Y is None):
            raise InputError("Give both val_tiles and val_Y, or neither.")
        if val_tiles is not None:
            _check_tiles(val_tiles, "val_tiles")
            val_Y = np.ascontiguousarray(val_Y, dtype=np.float32)
            if val_Y.shape != (int(val_tiles.shape[0]), g):
                raise InputError(f"val_Y must be ({val_tiles.shape[0]}, {g}); got {val_Y.shape}.")
        if loss not in ("huber", "mse"):
            raise InputError(f"loss must be 'huber' or 'mse', got {loss!r}.")
        if epochs < 1 or batch_size < 1 or not lr > 0:
            raise InputError("epochs and batch_size must be positive integers and lr positive.")
        if n < 2:
            raise InputError(f"HistoSPACE needs at least 2 training tiles, got {n}.")

        self._load_pretrained()
        net = self.module
        frozen = not self.params["finetune_encoder"]
        net.freeze_encoder = frozen
        for p in net.encoder.parameters():
            p.requires_grad_(not frozen)
        # the variants trained on: every rotation/flip (augment) at every sampling factor
        variants = np.array([8 * j + k for j in range(len(self._factors)) for k in (range(8) if augment else [0])])
        n_var = len(variants)
        if self.params.get("head", "conv") == "ridge":
            alphas = RIDGE_ALPHAS if ridge_alphas is None else np.asarray(ridge_alphas, dtype=float)
            return self._fit_ridge(tiles, Y, val_tiles, val_Y, variants.tolist(), alphas)
        with seeded(self.random_state, self.device):
            cache = self._map_cache(tiles, variants.tolist(), cache_gb, "training tiles") if frozen else None
            vcache = (self._map_cache(val_tiles, [0], cache_gb, "validation tiles")
                      if frozen and val_tiles is not None else None)
        frozen_encoder = _fuse(net.encoder) if frozen else None
        pooled = net.head_kind == "mlp"  # the head reads the pooled maps only: pool the cached maps once
        if pooled:
            cache, vcache = (None if c is None else torch.stack([pooled_maps(m) for m in c]) for c in (cache, vcache))
            # standardise the pooled maps by the training tiles (as they are, not rotated)
            feats = (cache[0].double().numpy() if cache is not None and variants[0] == 0
                     else self._features(tiles, [0])[0])
            net.feature_mean.copy_(torch.from_numpy(feats.mean(0)).float())
            net.feature_scale.copy_(torch.from_numpy(np.maximum(feats.std(0), 1e-6)).float())
        Yt = torch.from_numpy(Y)
        if net.scale_targets:
            net.target_mean.copy_(torch.from_numpy(Y.mean(0)))
            net.target_scale.copy_(torch.from_numpy(np.maximum(Y.std(0), 1e-6)))
            mean, scale = net.target_mean, net.target_scale
        else:
            mean = scale = None
        base = (lambda p, y: F.huber_loss(p, y, delta=huber_delta)) if loss == "huber" else F.mse_loss

        def crit(p: torch.Tensor, y: torch.Tensor) -> torch.Tensor:  # in standard units when targets are scaled
            return base(p, y) if mean is None else base((p - mean) / scale, (y - mean) / scale)

        def forward(idx: np.ndarray, k: np.ndarray, src: Any, c: torch.Tensor | None) -> torch.Tensor:
            if c is not None:
                z = c[torch.from_numpy(k), torch.from_numpy(idx)].to(self.device).float()
                return net.regress_pooled(z) if pooled else net.regress(z)
            if frozen:
                return net.regress(self._encode(src, idx, variants[k], frozen_encoder))
            x = _as_float(src[np.sort(idx)], self.params["tile_px"])[torch.from_numpy(np.argsort(np.argsort(idx)))]
            return net(_augment(x, variants[k], self._factors).to(self.device))

        def step(module: nn.Module, batch: tuple) -> dict[str, torch.Tensor]:
            idx, k, src, c, y = batch
            return {"loss": crit(forward(idx, k, src, c), y.to(self.device))}

        def batches(gen: torch.Generator) -> Iterator[tuple]:
            perm = torch.randperm(n, generator=gen).numpy()
            ks = torch.randint(0, n_var, (n,), generator=gen).numpy()
            for s in range(0, n, batch_size):
                idx = perm[s : s + batch_size]
                if len(idx) < 2 and n > 1:  # BatchNorm needs two samples
                    continue
                yield idx, ks[idx], tiles, cache, Yt[idx]

        val_batches = None
        if val_tiles is not None:
            Yv = torch.from_numpy(val_Y)
            nv = int(val_tiles.shape[0])

            def val_batches() -> Iterator[tuple]:
                for idx in _chunks(nv, 256):
                    yield idx, np.zeros(len(idx), np.int64), val_tiles, vcache, Yv[idx]

        history = train(
            net, step, batches, epochs=int(epochs), lr=float(lr), weight_decay=float(weight_decay), device=self.device,
            seed=self.random_state, val_batches=val_batches, patience=patience if val_tiles is not None else None,
            desc="HistoSPACE",
        )
        self.info["history"] = history
        self.info["train"] = {"n_train": n, "n_val": 0 if val_tiles is None else int(val_tiles.shape[0]),
                              "epochs": int(epochs), "batch_size": int(batch_size), "lr": float(lr),
                              "weight_decay": float(weight_decay), "loss": loss, "huber_delta": float(huber_delta),
                              "augment": bool(augment), "patience": patience,
                              "epochs_run": len(history.get("loss", [])),
                              "best_epoch": int(history["best_epoch"][0]) if "best_epoch" in history else None}
        self.is_trained = True
        return self

    def _fit_ridge(self, tiles: Any, Y: np.ndarray, val_tiles: Any | None, val_Y: np.ndarray | None,
                   variants: Sequence[int], alphas: np.ndarray) -> HistoSPACE:
        """``head="ridge"``: closed-form ridge on the pooled maps of every training tile and variant."""
        Fs = self._features(tiles, list(variants), "training tiles")
        F_tr = Fs.reshape(-1, Fs.shape[-1])
        Y_tr = np.tile(Y, (len(variants), 1))
        Fv = self._features(val_tiles, [0], "validation tiles")[0] if val_tiles is not None else None
        W, b, alpha, scores = _ridge(F_tr, Y_tr, Fv, val_Y, alphas)
        with torch.no_grad():
            self.module.linear.weight.copy_(torch.from_numpy(W))
            self.module.linear.bias.copy_(torch.from_numpy(b))
        self.info["history"] = {}
        self.info["train"] = {"n_train": len(Y), "n_val": 0 if val_tiles is None else len(val_Y),
                              "head": "ridge", "augment": len(variants) > 1, "alpha": alpha,
                              "selection": ("fixed" if len(alphas) == 1 else "validation mean per-gene r"
                                            if Fv is not None else "GCV"), **scores}
        log.info(f"HistoSPACE ridge head: alpha {alpha:g} ({self.info['train']['selection']})")
        self.is_trained = True
        return self

    # --- prediction ---------------------------------------------------------------------------
    def predict(self, tiles: Any, *, batch_size: int = 64, tta: bool = False) -> np.ndarray:
        """Predicted expression ``(n, n_genes)`` float32 of uint8 tiles, computed ``batch_size`` tiles at a time.

        Parameters
        ----------
        tiles
            ``(n, 3, s, s)`` uint8 RGB tiles (resized to ``tile_px`` when needed).
        batch_size
            Tiles per forward pass; memory is bounded by one batch plus the output.
        tta
            Average the predictions of the 8 rotations/flips of each tile (8× slower).

        Returns
        -------
        ``(n, n_genes)`` float32, in the units of the training targets.
        """
        if not self.is_trained:
            raise InputError("This HistoSPACE model is not trained; call fit(...) or load a saved model.")
        _check_tiles(tiles, "tiles")
        n = int(tiles.shape[0])
        out = np.empty((n, len(self.genes)), np.float32)
        self.module.eval()
        net = _fuse(self.module)
        variants = range(8) if tta else range(1)
        with torch.no_grad():
            for idx in _chunks(n, int(batch_size)):
                batch = tiles[idx[0] : idx[-1] + 1]
                if self._frozen:  # maps through the cache: a tile seen in training (or another fold) is not re-encoded
                    z = self._maps(batch, variants, encoder=net.encoder).to(self.device)
                    acc = sum(net.regress(z[i].float()) for i in range(len(variants)))
                else:
                    x = _as_float(batch, self.params["tile_px"])
                    acc = sum(net(dihedral(x, k).to(self.device)) for k in variants)
                out[idx] = (acc / len(variants)).float().cpu().numpy()
        return out


def resample(x: torch.Tensor, factor: float) -> torch.Tensor:
    """Images ``(b, c, s, s)`` as if scanned ``factor`` times as finely: down-sampled to ``factor · s`` and back.

    Examples
    --------
    >>> import torch
    >>> from stfuse.models._histospace import resample
    >>> x = torch.rand(2, 3, 32, 32)
    >>> resample(x, 0.25).shape, bool(torch.equal(resample(x, 1.0), x))
    (torch.Size([2, 3, 32, 32]), True)
    """
    if factor >= 1.0:
        return x
    s = x.shape[-1]
    small = F.interpolate(x, size=(max(2, round(s * factor)),) * 2, mode="bilinear", antialias=True, align_corners=False)
    return F.interpolate(small, size=(s, s), mode="bilinear", align_corners=False)


def _augment(x: torch.Tensor, k: int | np.ndarray, factors: Sequence[float] = (1.0,)) -> torch.Tensor:
    """Apply variant ``k`` (one per image, or one for all) to the batch ``x``: resampling ``factors[k // 8]``, then rotation/flip ``k % 8``."""
    if np.isscalar(k):
        return dihedral(resample(x, factors[int(k) // 8]), int(k) % 8)
    k = np.asarray(k)
    if (k == 0).all():
        return x
    out = torch.empty_like(x)
    for v in np.unique(k):
        sel = torch.from_numpy(np.flatnonzero(k == v))
        out[sel] = dihedral(resample(x[sel], factors[int(v) // 8]), int(v) % 8)
    return out

