"""SpaCRD (Xue et al.): cancer-region detection from expression and histology, transferable across sections.

The network (:class:`SpaCRDModule`, pure torch) has three parts:

1. **Modality alignment.** An image MLP encoder and a gene MLP encoder (``in → 1024 → 512 → 512``, each
   hidden layer BatchNorm → ReLU → Dropout 0.2) map both modalities of a spot to 512-d embeddings,
   pulled together by a CLIP-style symmetric InfoNCE (α = 0.5, temperature 0.07).
2. **VRBCA.** Each spot and its ``n_neighs`` nearest spots are the tokens of a bidirectional cross-attention
   (8 heads, 512-d, dropout 0.1): ``h_his = CA(Q=image, K=V=gene)`` and ``h_gene = CA(Q=gene, K=V=image)``,
   fused as ``h* = LayerNorm(Linear([h_his; h_gene]))`` of the centre spot, normalised over the
   **features**. A category-regularised VAE (``512 → 256 → 128 → μ, log σ²`` of 64; decoder back to 512)
   reconstructs ``h*`` with ``MSE + β · KL(q(z|h*) ‖ N(μ_y, I))``, where ``μ_y`` is a learnable mean per
   class (β = 0.5). The KL is bounded below by 0; there is no class-separation term that could grow
   without bound.
3. **Classifier** on ``[μ; log σ²]`` (``128 → 64 → ReLU → 1``), trained with
   ``BCE + γ · L_fused`` (γ = 0.1), ``L_fused`` = InfoNCE + VAE loss.

Arrays in, arrays out: this module knows nothing of AnnData or SpatialData (see :func:`stfuse.tl.spacrd`).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import numpy as np
import torch
import torch.nn.functional as F
from scipy import sparse
from torch import nn

from .. import _logging as log
from .._errors import InputError
from ..data import stratified_split
from ..gr import adjacency, bfs_order
from ..nn import (
    NeighbourhoodCrossAttention,
    autocast_dtype,
    info_nce,
    mlp,
    neighbourhood_tokens,
    to_device,
    train,
)
from ._base import BaseModel

__all__ = ["GMMThreshold", "SpaCRD", "SpaCRDModule", "gmm_threshold"]

Schedule = Literal["staged", "joint"]


# ------------------------------------------------------------------------------------------------
# the network
# ------------------------------------------------------------------------------------------------
class SpaCRDModule(nn.Module):
    """SpaCRD's network: modality encoders, neighbourhood cross-attention fusion, category VAE, classifier.

    Parameters
    ----------
    n_genes, n_image
        Input widths of the gene and image features (``0`` when the modality is not used).
    hidden
        Hidden widths of both MLP encoders (paper: 1024, 512).
    dim
        Embedding and attention width (paper: 512).
    heads
        Attention heads (paper: 8).
    dropout
        Dropout in the encoders (paper: 0.2).
    attn_dropout
        Dropout on the attention weights (paper: 0.1).
    vae_hidden
        Hidden widths of the VAE encoder (decoder mirrored; paper: 256, 128).
    latent
        VAE latent width (paper: 64).
    cross_attention
        ``False``: fuse the centre spot's embeddings without neighbours (ablation).
    vae
        ``False``: classify ``h*`` directly, no VAE (ablation).
    skip
        ``True``: the fusion also sees each centre spot's own modality embeddings beside the
        attention outputs (``h* = LayerNorm(Linear([h_his; h_gene; z_image; z_gene]))``, the skip of
        PyG's ``TransformerConv``), so the model can weigh a spot against its neighbourhood. The paper
        has no skip (``False``).
    vae_reduction
        ``"mean"``: the VAE's reconstruction and KL are means over the features / latent dimensions;
        ``"sum"`` (default): sums over them (the paper's Eq. 16–17: 512× and 64× the weight of the means
        against the BCE). Models saved before this option existed load as ``"mean"``.

    Examples
    --------
    >>> import torch
    >>> from stfuse.models import SpaCRDModule
    >>> net = SpaCRDModule(20, 8, hidden=(16,), dim=8, heads=2, vae_hidden=(8,), latent=4).eval()
    >>> tokens = torch.tensor([[0, 1], [1, 0]])
    >>> net(torch.randn(2, 20), torch.randn(2, 8), tokens)["logit"].shape
    torch.Size([2])
    """

    def __init__(self, n_genes: int, n_image: int, *, hidden: Sequence[int] = (1024, 512), dim: int = 512,
                 heads: int = 8, dropout: float = 0.2, attn_dropout: float = 0.1,
                 vae_hidden: Sequence[int] = (256, 128), latent: int = 64, cross_attention: bool = True,
                 vae: bool = True, skip: bool = False, vae_reduction: Literal["mean", "sum"] = "sum") -> None:
        super().__init__()
        if n_genes <= 0 and n_image <= 0:
            raise InputError("SpaCRD needs at least one modality (genes or image).")
        self.use_genes, self.use_image = n_genes > 0, n_image > 0
        self.cross_attention, self.vae = bool(cross_attention), bool(vae)
        self.skip = bool(skip) and self.cross_attention  # without attention the centre embeddings are fused already
        if vae_reduction not in ("mean", "sum"):
            raise InputError(f"vae_reduction must be 'mean' or 'sum', got {vae_reduction!r}.")
        self.vae_reduction = vae_reduction
        self.gene_encoder = mlp([n_genes, *hidden, dim], dropout=dropout) if self.use_genes else None
        self.image_encoder = mlp([n_image, *hidden, dim], dropout=dropout) if self.use_image else None
        n_mod = int(self.use_genes) + int(self.use_image)
        if self.cross_attention:
            # one modality: the same block attends from the modality to itself over the neighbourhood
            self.attend_his = NeighbourhoodCrossAttention(dim, dim, dim, heads=heads, dropout=attn_dropout) \
                if self.use_image else None
            self.attend_gene = NeighbourhoodCrossAttention(dim, dim, dim, heads=heads, dropout=attn_dropout) \
                if self.use_genes else None
        self.fuse = nn.Linear((2 if self.skip else 1) * n_mod * dim, dim)
        self.norm = nn.LayerNorm(dim)  # over the feature axis of each spot
        if self.vae:
            self.vae_encoder = mlp([dim, *vae_hidden], batchnorm=False, last_activation=True)
            self.mu = nn.Linear(vae_hidden[-1], latent)
            self.logvar = nn.Linear(vae_hidden[-1], latent)
            self.vae_decoder = mlp([latent, *reversed(vae_hidden), dim], batchnorm=False)
            self.class_means = nn.Parameter(torch.zeros(2, latent))
            head_in = 2 * latent
        else:
            head_in = dim
        self.classifier = nn.Sequential(nn.Linear(head_in, 64), nn.ReLU(), nn.Linear(64, 1))

    def embed(self, genes: torch.Tensor | None, image: torch.Tensor | None) -> dict[str, torch.Tensor]:
        """Modality embeddings of the given spots (the rows of ``genes`` / ``image``)."""
        out = {}
        if self.use_genes:
            out["gene"] = self.gene_encoder(genes)
        if self.use_image:
            out["image"] = self.image_encoder(image)
        return out

    def forward(self, genes: torch.Tensor | None, image: torch.Tensor | None, tokens: torch.Tensor,
                ) -> dict[str, torch.Tensor]:
        """Score the spots ``tokens[:, 0]``.

        Parameters
        ----------
        genes, image
            ``(u, n_genes)`` / ``(u, n_image)`` features of every spot referenced by ``tokens``.
        tokens
            ``(m, 1 + k)`` row indices: each scored spot, then its neighbours (``-1`` = none).

        Returns
        -------
        ``logit`` ``(m,)``, the embeddings ``z_gene``/``z_image`` of the scored spots, the fused ``h``,
        and for the VAE ``mu``, ``logvar``, ``recon``.
        """
        emb = self.embed(genes, image)
        centres = tokens[:, 0]
        parts = []
        if self.cross_attention:
            zi, zg = emb.get("image"), emb.get("gene")
            if self.use_image:  # H&E-guided: image queries attend over the gene tokens
                parts.append(self.attend_his(zi, zg if zg is not None else zi, tokens))
            if self.use_genes:  # gene-guided: gene queries attend over the image tokens
                parts.append(self.attend_gene(zg, zi if zi is not None else zg, tokens))
            if self.skip:
                parts += [emb[m][centres] for m in ("image", "gene") if m in emb]
        else:
            parts = [emb[m][centres] for m in ("image", "gene") if m in emb]
        h = self.norm(self.fuse(torch.cat(parts, dim=1)))
        out = {"h": h}
        for m, z in emb.items():
            out[f"z_{m}"] = z[centres]
        if self.vae:
            e = self.vae_encoder(h)
            mu, logvar = self.mu(e), self.logvar(e).clamp(-10.0, 10.0)
            z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar) if self.training else mu
            out.update(mu=mu, logvar=logvar, recon=self.vae_decoder(z))
            feats = torch.cat([mu, logvar], dim=1)
        else:
            feats = h
        out["logit"] = self.classifier(feats).squeeze(1)
        return out

    def losses(self, out: dict[str, torch.Tensor], labels: torch.Tensor, *, alignment: bool, beta: float,
               gamma: float, temperature: float, alpha: float, classify: bool = True,
               labelled: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Loss terms of a forward pass; ``labels`` ``(m,)`` with 1/0 and ``-1`` for unlabelled spots.

        ``labelled``: the indices of the labelled rows (``labels >= 0``) when already known (built on
        the host, so a GPU step need not wait to learn how many there are).
        """
        zero = out["h"].sum() * 0.0
        if labelled is None:
            labelled = (labels >= 0).nonzero().squeeze(1)
        has_labels = labelled.numel() > 0
        terms: dict[str, torch.Tensor] = {}
        terms["align"] = (info_nce(out["z_image"], out["z_gene"], temperature=temperature, alpha=alpha)
                          if alignment and "z_image" in out and "z_gene" in out and len(labels) > 1 else zero)
        if self.vae:
            reduce = (lambda t: t.sum(1).mean()) if self.vae_reduction == "sum" else torch.mean
            recon = reduce((out["recon"] - out["h"]) ** 2)
            if has_labels:
                mu, logvar = out["mu"][labelled], out["logvar"][labelled]
                prior = self.class_means[labels[labelled].long()]
                kl = 0.5 * reduce(logvar.exp() + (mu - prior) ** 2 - 1.0 - logvar)
            else:
                kl = zero
            terms["recon"], terms["kl"] = recon, kl
            terms["vae"] = recon + beta * kl
        else:
            terms["vae"] = zero
        terms["fused"] = terms["align"] + terms["vae"]
        if classify and has_labels:
            terms["bce"] = F.binary_cross_entropy_with_logits(out["logit"][labelled], labels[labelled].float())
        else:
            terms["bce"] = zero
        terms["loss"] = terms["bce"] + gamma * terms["fused"] if classify else terms["fused"]
        return terms


# ------------------------------------------------------------------------------------------------
# the savable model
# ------------------------------------------------------------------------------------------------
def _rows(X: Any, idx: np.ndarray) -> np.ndarray:
    r = X[idx]
    return np.asarray(r.toarray() if sparse.issparse(r) else r, dtype=np.float32)


class SpaCRD(BaseModel):
    """SpaCRD cancer-region detector: train on labelled reference spots, score spots of new sections.

    Arrays in, arrays out; :func:`stfuse.tl.spacrd` prepares the arrays from SpatialData objects.

    Parameters
    ----------
    n_genes
        Number of input genes (``0`` for ``use_genes=False``).
    n_image
        Width of the image features (``0`` for ``use_image=False``).
    genes
        Names of the input genes, in order (checked on new data, saved with the model).
    n_neighs
        Neighbours per spot in the cross-attention (paper: 6).
    use_image, use_genes, cross_attention, vae, alignment
        Ablations of the paper's Table 4: drop the image branch, the gene branch, the neighbourhood
        cross-attention (the centre spot's embeddings are fused alone), the VAE (classify ``h*``), or the
        InfoNCE alignment loss.
    hidden, dim, heads, dropout, attn_dropout, vae_hidden, latent, skip, vae_reduction
        Widths, dropouts (paper defaults), the centre-spot skip and the VAE terms' reduction; see
        :class:`SpaCRDModule`.
    beta
        Weight of the KL term of the category-regularised VAE (paper: 0.5).
    gamma
        Weight of ``L_fused`` (alignment + VAE) next to the BCE. The paper's 0.1 with summed VAE terms lets
        them swamp the BCE (leave-one-patient-out B1 AUC 0.33–0.51); 0.001 was chosen on whole held-out
        HER2ST sections (C2–C5 + B4 → C6 and C2–C6 → B4, expression only: mean AUC 0.900 vs 0.862 for the
        earlier means with 0.1, 0.822 at 0.01, 0.522 at 0.1). ``vae_reduction="mean", gamma=0.1`` is the
        earlier default.
    temperature, alpha
        InfoNCE temperature and direction weight (paper: 0.07, 0.5).
    device
        Torch device (``"auto"``: CUDA when available).
    random_state
        Seed of the initialisation (and the default seed of :meth:`fit`).

    Examples
    --------
    >>> import numpy as np
    >>> import stfuse as sf
    >>> rng = np.random.default_rng(0)
    >>> X, y = rng.random((60, 10), dtype=np.float32), np.arange(60) % 2
    >>> X[y == 1, :3] += 1
    >>> nbrs, _ = sf.gr.knn(rng.random((60, 2)), 6)
    >>> m = sf.models.SpaCRD(n_genes=10, n_image=0, use_image=False, hidden=(16,), dim=8, heads=2,
    ...                      vae_hidden=(8,), latent=4, device="cpu")
    >>> m.fit(X, None, nbrs, y, epochs=5, batch_size=32, patience=None)  # doctest: +ELLIPSIS
    SpaCRD(trained, ...)
    >>> m.predict(X, None, nbrs).shape
    (60,)
    """

    #: 2: the data contract (genes' normalisation, image encoder, labels) is in ``registry``, not ``info``
    format_version: ClassVar[int] = 2

    def __init__(self, *, n_genes: int, n_image: int = 0, genes: Sequence[str] | None = None, n_neighs: int = 6,
                 use_image: bool = True, use_genes: bool = True, cross_attention: bool = True, vae: bool = True,
                 alignment: bool = True, hidden: Sequence[int] = (1024, 512), dim: int = 512, heads: int = 8,
                 dropout: float = 0.2, attn_dropout: float = 0.1, vae_hidden: Sequence[int] = (256, 128),
                 latent: int = 64, skip: bool = False, vae_reduction: Literal["mean", "sum"] = "sum",
                 beta: float = 0.5, gamma: float = 0.001, temperature: float = 0.07, alpha: float = 0.5,
                 device: str = "auto", random_state: int = 0) -> None:
        if not use_image and not use_genes:
            raise InputError("use_image=False and use_genes=False leave SpaCRD with no input; keep at least one.")
        n_genes = int(n_genes) if use_genes else 0
        n_image = int(n_image) if use_image else 0
        if use_genes and n_genes <= 0:
            raise InputError("use_genes=True needs n_genes > 0.")
        if use_image and n_image <= 0:
            raise InputError("use_image=True needs image features (n_image > 0); pass use_image=False for expression only.")
        if genes is not None and use_genes and len(genes) != n_genes:
            raise InputError(f"{len(genes)} gene names given for n_genes={n_genes}.")
        super().__init__(
            genes=genes if use_genes else None, device=device, random_state=random_state,
            n_genes=n_genes, n_image=n_image, n_neighs=int(n_neighs), use_image=bool(use_image),
            use_genes=bool(use_genes), cross_attention=bool(cross_attention), vae=bool(vae),
            alignment=bool(alignment), hidden=[int(h) for h in hidden], dim=int(dim), heads=int(heads),
            dropout=float(dropout), attn_dropout=float(attn_dropout), vae_hidden=[int(h) for h in vae_hidden],
            latent=int(latent), skip=bool(skip), vae_reduction=str(vae_reduction), beta=float(beta),
            gamma=float(gamma), temperature=float(temperature), alpha=float(alpha),
        )

    def _build(self) -> SpaCRDModule:
        p = self.params
        return SpaCRDModule(
            p["n_genes"], p["n_image"], hidden=p["hidden"], dim=p["dim"], heads=p["heads"], dropout=p["dropout"],
            attn_dropout=p["attn_dropout"], vae_hidden=p["vae_hidden"], latent=p["latent"],
            cross_attention=p["cross_attention"], vae=p["vae"], skip=p["skip"], vae_reduction=p["vae_reduction"],
        )

    @classmethod
    def _saved_params(cls, params: dict[str, Any], format_version: int) -> dict[str, Any]:
        """Saved constructor arguments in today's terms.

        Models saved before ``skip`` and ``vae_reduction`` existed had no skip and mean VAE terms (the
        default is now the paper's sums).
        """
        return {"skip": False, "vae_reduction": "mean", **params}

    @property
    def uses_image(self) -> bool:
        """Whether the model needs image features."""
        return bool(self.params["use_image"])

    @property
    def uses_genes(self) -> bool:
        """Whether the model needs gene expression."""
        return bool(self.params["use_genes"])

    # --- inputs --------------------------------------------------------------------------------
    def _check_inputs(self, genes: Any, image: Any, neighbours: Any) -> tuple[Any, Any, np.ndarray]:
        p = self.params
        n = None
        if self.uses_genes:
            if genes is None:
                raise InputError("This SpaCRD model uses gene expression; pass the expression matrix.")
            if genes.shape[1] != p["n_genes"]:
                raise InputError(f"Expression has {genes.shape[1]} genes; the model expects {p['n_genes']}.")
            n = genes.shape[0]
        else:
            genes = None
        if self.uses_image:
            if image is None:
                raise InputError("This SpaCRD model uses image features; pass them (or train with use_image=False).")
            if image.shape[1] != p["n_image"]:
                raise InputError(f"Image features have {image.shape[1]} columns; the model expects {p['n_image']}.")
            if n is not None and image.shape[0] != n:
                raise InputError(f"Expression has {n} spots but image features have {image.shape[0]}.")
            n = image.shape[0]
        else:
            image = None
        nb = np.asarray(neighbours)
        if nb.ndim != 2 or nb.shape[0] != n:
            raise InputError(f"neighbours must be an (n_spots, k) index array for {n} spots, got shape {nb.shape}.")
        if nb.size and (nb.max() >= n or nb.min() < -1):
            raise InputError("neighbours holds indices outside the spots (use -1 for a missing neighbour).")
        return genes, image, nb.astype(np.int64)

    def _gather(self, genes: Any, image: Any, tokens: np.ndarray, centres: np.ndarray):
        """Features of every spot referenced by the tokens of ``centres``, and local token indices.

        ``genes`` / ``image``: host arrays (rows gathered on the host and uploaded) or tensors already
        on the device (:meth:`_resident`; rows gathered there).
        """
        tok = tokens[centres]
        used = np.unique(tok[tok >= 0])
        local = np.where(tok >= 0, np.searchsorted(used, np.maximum(tok, 0)), -1)
        idx = None

        def take(a: Any) -> torch.Tensor | None:
            nonlocal idx
            if a is None:
                return None
            if isinstance(a, torch.Tensor):
                idx = to_device(used, a.device) if idx is None else idx
                return a.index_select(0, idx)
            return to_device(_rows(a, used), self.device)

        return take(genes), take(image), to_device(local, self.device)

    #: most bytes of features :meth:`_resident` puts on a GPU (beyond: gathered on the host per batch)
    RESIDENT_FRACTION: ClassVar[float] = 0.25

    def _resident(self, a: Any) -> Any:
        """``a`` as a float32 tensor on the model's device, kept there for the whole fit, when it fits.

        Dense arrays always (on CPU that is the array itself when already float32); a sparse matrix
        only on a GPU, densified, when it takes at most :attr:`RESIDENT_FRACTION` of the GPU's memory.
        Otherwise ``a`` unchanged (batches gather rows on the host).
        """
        if a is None:
            return None
        dev = torch.device(self.device)
        nbytes = 4 * int(a.shape[0]) * int(a.shape[1])
        if dev.type == "cuda" and nbytes > self.RESIDENT_FRACTION * torch.cuda.get_device_properties(dev).total_memory:
            return a
        if sparse.issparse(a):
            if dev.type == "cpu":
                return a
            a = a.toarray()
        return to_device(np.asarray(a, dtype=np.float32), dev)

    def _batches(self, centres: np.ndarray, batch_size: int, graph: sparse.csr_matrix,
                 gen: torch.Generator | None) -> Iterator[np.ndarray]:
        """Batches of ``centres`` made of small spatially contiguous patches.

        The spots are put in breadth-first order over the neighbour graph and cut into patches of
        ``max(8, batch_size // 8)`` spots, so a patch holds most of its spots' neighbours and a step
        encodes about twice the batch instead of ``1 + k`` times it. For training (``gen`` given), the
        patches are shuffled and each batch gathers patches from random places of random sections, so
        BatchNorm statistics and InfoNCE negatives are not those of one tissue region. Without
        ``gen`` (validation), batches are consecutive in breadth-first order.
        """
        order = bfs_order(graph, gen)
        keep = np.zeros(graph.shape[0], bool)
        keep[centres] = True
        order = order[keep[order]]
        if gen is not None:
            patch = max(8, batch_size // 8)
            patches = [order[a : a + patch] for a in range(0, len(order), patch)]
            order = np.concatenate([patches[i] for i in torch.randperm(len(patches), generator=gen).tolist()])
        n_full = len(order) // batch_size
        ends = [(b + 1) * batch_size for b in range(n_full)]
        if len(order) - n_full * batch_size >= 2 or not ends:  # BatchNorm needs two rows
            ends.append(len(order))
        yield from (order[a:b] for a, b in zip([0, *ends[:-1]], ends))

    # --- training ------------------------------------------------------------------------------
    def fit(self, genes: Any, image: Any, neighbours: Any, labels: Any, *, epochs: int = 100,
            pretrain_epochs: int = 20, schedule: Schedule = "staged", lr: float = 1e-4,
            weight_decay: float = 1e-4, batch_size: int = 256, val_fraction: float = 0.1,
            validation: np.ndarray | None = None, patience: int | None = 10, monitor: str = "bce",
            average_from: int | None = None, random_state: int | None = None, amp: bool | None = None) -> SpaCRD:
        """Train on labelled reference spots.

        Parameters
        ----------
        genes
            ``(n, n_genes)`` prepared expression of the reference spots (array or sparse matrix), or
            ``None`` with ``use_genes=False``.
        image
            ``(n, n_image)`` image features, or ``None`` with ``use_image=False``.
        neighbours
            ``(n, k)`` indices of each spot's nearest spots **in its own section** (``-1`` = none);
            sections are stacked, so indices point into the stacked rows.
        labels
            ``(n,)`` 1 = cancer, 0 = normal, ``-1`` = unlabelled (used as neighbour and for the
            label-free losses, not for BCE/KL).
        epochs
            Epochs of the classification stage (upper bound with early stopping).
        pretrain_epochs
            Epochs of stage-1 alignment pre-training with ``schedule="staged"`` (ignored when there is
            nothing to align: one modality or ``alignment=False``).
        schedule
            ``"staged"`` (default): stage 1 pre-trains the two encoders with the InfoNCE alone, then
            everything is trained jointly with ``BCE + γ · L_fused``. ``"joint"``: the joint objective
            from the first epoch. Pre-aligning first gives the cross-attention keys and queries in a
            shared space before the classifier starts to shape them.
        lr, weight_decay
            Adam settings.
        batch_size
            Spots per batch (also the InfoNCE negatives).
        val_fraction
            Fraction of the labelled spots held out (stratified by class) to monitor the total loss;
            early stopping restores the best epoch. ``0`` disables it.
        validation
            Indices of the spots to hold out instead (e.g. :func:`stfuse.data.stratified_split`, or every
            spot of a held-out section); their labels monitor the loss and they are not trained on.
            Holding out whole sections is what measures transfer to a new section: random spots of a
            section that is also trained on keep improving while the model memorises its references.
        patience
            Early-stopping patience in epochs (``None``: train all ``epochs``).
        monitor
            The validation term that early stopping watches: ``"bce"`` (default; the classification
            loss of the held-out labels) or ``"loss"`` (``BCE + γ · L_fused``).
        average_from
            Stochastic weight averaging from this epoch of the classification stage on (see
            :func:`stfuse.nn.train`): the model keeps the mean of the weights of every epoch since,
            and validation judges that mean. ``None``: the last (or best) epoch's weights.
        random_state
            Seed of dropout, sampling and batching (default: the model's ``random_state``).
        amp
            Mixed precision on CUDA (see :func:`stfuse.nn.train`); ``None``: on for CUDA, off on CPU. The
            dtype used is kept in ``info["training"]["autocast"]``.

        Returns
        -------
        The model (trained in place).
        """
        if schedule not in ("staged", "joint"):
            raise InputError(f"schedule must be 'staged' or 'joint', got {schedule!r}.")
        if monitor not in ("bce", "loss"):
            raise InputError(f"monitor must be 'bce' or 'loss', got {monitor!r}.")
        genes, image, nb = self._check_inputs(genes, image, neighbours)
        y = np.asarray(labels).astype(np.int64).ravel()
        if len(y) != len(nb):
            raise InputError(f"labels has {len(y)} entries for {len(nb)} spots.")
        if not np.isin(y, (-1, 0, 1)).all():
            raise InputError("labels must be 1 (positive), 0 (negative) or -1 (unlabelled).")
        if (y == 1).sum() == 0 or (y == 0).sum() == 0:
            raise InputError(
                f"The reference labels hold a single class ({int((y == 1).sum())} positive, {int((y == 0).sum())} "
                "negative spots); SpaCRD needs both cancer and normal spots to learn from."
            )
        seed = self.random_state if random_state is None else int(random_state)
        if validation is None:
            train_c, val_c = stratified_split(y, val_fraction, np.random.default_rng(seed))
        else:
            val_c = np.unique(np.asarray(validation, dtype=np.int64))
            if val_c.size and (val_c.min() < 0 or val_c.max() >= len(y)):
                raise InputError(f"validation holds indices outside the {len(y)} spots.")
            train_c = np.setdiff1d(np.arange(len(y)), val_c)
        tokens = neighbourhood_tokens(torch.from_numpy(nb)).numpy()
        graph = adjacency(nb)
        genes, image = self._resident(genes), self._resident(image)  # once per fit, not per step
        p = self.params
        kw = dict(alignment=p["alignment"] and p["use_image"] and p["use_genes"], beta=p["beta"], gamma=p["gamma"],
                  temperature=p["temperature"], alpha=p["alpha"])

        def make_step(classify: bool):
            def step(module: SpaCRDModule, centres: np.ndarray) -> dict[str, torch.Tensor]:
                g, i, tok = self._gather(genes, image, tokens, centres)
                out = module(g, i, tok)
                lab = y[centres]
                return module.losses(out, to_device(lab, self.device), classify=classify,
                                     labelled=to_device(np.flatnonzero(lab >= 0), self.device), **kw)
            return step

        def batches(c: np.ndarray):
            return lambda gen: self._batches(c, batch_size, graph, gen)

        val = (lambda: self._batches(val_c, max(batch_size, 1024), graph, None)) if len(val_c) >= 2 else None
        history: dict[str, Any] = {}
        if schedule == "staged" and kw["alignment"] and pretrain_epochs > 0:
            enc = [*self.module.gene_encoder.parameters(), *self.module.image_encoder.parameters()]

            def align_step(module: SpaCRDModule, centres: np.ndarray) -> dict[str, torch.Tensor]:
                g, i, _ = self._gather(genes, image, tokens[:, :1], centres)
                e = module.embed(g, i)
                return {"loss": info_nce(e["image"], e["gene"], temperature=p["temperature"], alpha=p["alpha"])}

            # all spots, labelled or not: the alignment uses no label
            h = train(self.module, align_step, batches(np.arange(len(y))), epochs=int(pretrain_epochs), lr=lr,
                      weight_decay=weight_decay, device=self.device, seed=seed, params=enc, fused=True, amp=amp,
                      desc="SpaCRD stage 1 (alignment)")
            history["pretrain"] = h
        h = train(self.module, make_step(True), batches(train_c), epochs=int(epochs), lr=lr,
                  weight_decay=weight_decay, device=self.device, seed=seed + 1, val_batches=val,
                  patience=patience if val is not None else None, monitor=monitor, fused=True,
                  average_from=average_from, amp=amp, desc="SpaCRD training")
        history.update(h)
        cast = autocast_dtype(self.device) if amp is None or amp else None
        self.is_trained = True
        self.info["history"] = history
        self.info["training"] = {
            "epochs": int(epochs), "pretrain_epochs": int(pretrain_epochs), "schedule": schedule, "lr": float(lr),
            "weight_decay": float(weight_decay), "batch_size": int(batch_size), "val_fraction": float(val_fraction),
            "patience": patience, "monitor": monitor, "average_from": average_from, "random_state": seed, "n_train": len(train_c), "n_val": len(val_c),
            "n_positive": int((y == 1).sum()), "n_negative": int((y == 0).sum()),
            "autocast": None if cast is None else str(cast).removeprefix("torch."),
        }
        log.info(f"SpaCRD trained on {len(train_c)} spots ({len(val_c)} validation), "
                 f"{len(history['loss'])} epochs")
        return self

    # --- scoring -------------------------------------------------------------------------------
    @torch.no_grad()
    def predict(self, genes: Any, image: Any, neighbours: Any, *, batch_size: int = 512) -> np.ndarray:
        """Cancer probability of every spot, in mini-batches (memory bounded by ``batch_size``).

        Parameters
        ----------
        genes, image, neighbours
            As in :meth:`fit`, for the spots to score.
        batch_size
            Spots scored per batch; only the batch, its neighbours and the output are in memory.

        Returns
        -------
        ``(n,)`` float32 scores in [0, 1].
        """
        if not self.is_trained:
            raise InputError("This SpaCRD model is not trained; call fit(...) first or load a trained model.")
        genes, image, nb = self._check_inputs(genes, image, neighbours)
        tokens = neighbourhood_tokens(torch.from_numpy(nb)).numpy()
        self.module.eval()
        out = np.empty(len(nb), np.float32)
        n_batches = math.ceil(len(nb) / batch_size)
        order = bfs_order(adjacency(nb), None)  # contiguous batches: few neighbours outside the batch
        for b in log.progress(range(n_batches), desc="SpaCRD scoring", total=n_batches):
            c = order[b * batch_size : (b + 1) * batch_size]
            g, i, tok = self._gather(genes, image, tokens, c)
            out[c] = torch.sigmoid(self.module(g, i, tok)["logit"]).float().cpu().numpy()
        return out




# ------------------------------------------------------------------------------------------------
# threshold
# ------------------------------------------------------------------------------------------------
@dataclass
class GMMThreshold:
    """A threshold on scores from a two-component Gaussian mixture.

    Attributes
    ----------
    threshold
        Scores ``>=`` it are called positive.
    method
        ``"gmm_intersection"`` (the weighted densities cross between the two means),
        ``"gmm_midpoint"`` (no crossing between the means: midpoint of the means), or
        ``"constant"`` (all scores equal: 0.5).
    means, variances, weights
        The fitted mixture, low-mean component first.
    """

    threshold: float
    method: str
    means: list[float]
    variances: list[float]
    weights: list[float]

    def as_dict(self) -> dict[str, Any]:
        """Plain-Python dict (for ``uns``)."""
        return {"threshold": self.threshold, "method": self.method, "means": self.means,
                "variances": self.variances, "weights": self.weights}


def gmm_threshold(scores: Any, *, random_state: int = 0) -> GMMThreshold:
    """Threshold scores where the two components of a Gaussian mixture fitted to them intersect.

    A 2-component :class:`sklearn.mixture.GaussianMixture` is fitted to the scores (deterministic
    for a given ``random_state``). The threshold is the point between the two means where the
    weighted densities are equal; when they do not cross there, the midpoint of the means is used and
    a warning is logged. No label is looked at.

    Parameters
    ----------
    scores
        1-D scores (e.g. SpaCRD probabilities).
    random_state
        Seed of the mixture's initialisation.

    Returns
    -------
    :class:`GMMThreshold`.

    Examples
    --------
    >>> import numpy as np
    >>> from stfuse.models import gmm_threshold
    >>> rng = np.random.default_rng(0)
    >>> s = np.concatenate([rng.normal(0.1, 0.05, 300), rng.normal(0.9, 0.05, 100)])
    >>> t = gmm_threshold(s)
    >>> t.method, round(t.threshold, 1)
    ('gmm_intersection', 0.5)
    """
    from sklearn.mixture import GaussianMixture

    s = np.asarray(scores, dtype=np.float64).ravel()
    if s.size == 0 or not np.isfinite(s).all():
        raise InputError("gmm_threshold needs a non-empty array of finite scores.")
    if s.size < 2 or np.ptp(s) < 1e-9:
        log.warning("all scores are equal; no mixture to fit, threshold set to 0.5")
        v = float(s[0])
        return GMMThreshold(0.5, "constant", [v, v], [0.0, 0.0], [0.5, 0.5])
    gm = GaussianMixture(2, covariance_type="full", random_state=int(random_state), n_init=3, reg_covar=1e-6)
    gm.fit(s[:, None])
    order = np.argsort(gm.means_.ravel())
    m = gm.means_.ravel()[order]
    v = gm.covariances_.ravel()[order]
    w = gm.weights_.ravel()[order]
    roots = _gaussian_crossings(m, v, w)
    inside = [r for r in roots if m[0] <= r <= m[1]]
    if inside:
        thr, method = float(inside[0]), "gmm_intersection"
    else:
        thr, method = float(m.mean()), "gmm_midpoint"
        log.warning(f"the two mixture components do not intersect between their means ({m[0]:.3g}, {m[1]:.3g}); "
                    f"threshold set to their midpoint {thr:.3g}")
    return GMMThreshold(thr, method, m.tolist(), v.tolist(), w.tolist())


def _gaussian_crossings(m: np.ndarray, v: np.ndarray, w: np.ndarray) -> list[float]:
    """Real x with w0·N(x; m0, v0) = w1·N(x; m1, v1)."""
    # log w0 - ½log v0 - (x-m0)²/2v0 = log w1 - ½log v1 - (x-m1)²/2v1  →  a x² + b x + c = 0
    a = 1 / (2 * v[1]) - 1 / (2 * v[0])
    b = m[0] / v[0] - m[1] / v[1]
    c = (m[1] ** 2 / (2 * v[1]) - m[0] ** 2 / (2 * v[0]) + np.log(w[0] / w[1]) + 0.5 * np.log(v[1] / v[0]))
    if abs(a) < 1e-12 * max(abs(b), 1e-300):
        return [] if b == 0 else [float(-c / b)]
    disc = b * b - 4 * a * c
    if disc < 0:
        return []
    r = np.sqrt(disc)
    return sorted(float(x) for x in ((-b - r) / (2 * a), (-b + r) / (2 * a)))
