"""SENCA-st: shared encoder with neighbourhood cross-attention (Liyanaarachchi et al., arXiv 2511.08573).

Built from the paper's description (its code is not public). ``SENCAModule`` is the pure torch
module; :class:`SENCA` wraps it with ``fit`` / ``embed`` / ``save`` / ``load``. No AnnData or
SpatialData here: arrays in (expression, image features, neighbour indices, coordinates), arrays
out.

Scaling. Every operation of the module is local on the spot graph (propagation, self-attention
and cross-attention over graph neighbourhoods, windowed pooling), so the embedding of a spot depends
only on spots within a fixed number of hops. Training and inference run on mini-batches of spatial
tiles, each with the halo of spots its core needs, so memory grows linearly with the number of spots
and every embedding is computed exactly as on the whole section. A section that fits in one batch is
trained full-batch, as in the paper.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .. import _logging as log
from .._errors import InputError
from ..gr import grid_cells, grow_mask, hop_tokens, spacing
from ..nn import (
    NeighbourhoodCrossAttention,
    autocast_dtype,
    graph_mean,
    nbr_to_edges,
    nt_xent,
    seeded,
    to_device,
    tokens_to_edges,
    train,
)
from ._base import BaseModel

__all__ = ["SENCA", "SENCAModule"]


# ------------------------------------------------------------------------------------------------
# tiles, batches and pooling (graph helpers are in sf.gr)
# ------------------------------------------------------------------------------------------------
def _pca_basis(Xc: np.ndarray, k: int) -> np.ndarray:
    """Top-``k`` principal axes of centred ``Xc``, scaled so the scores have unit total variance.

    Signs are fixed (largest loading positive) so the basis is deterministic.
    """
    C = (Xc.T.astype(np.float64) @ Xc.astype(np.float64)) / max(len(Xc) - 1, 1)
    w, V = np.linalg.eigh(C)
    order = np.argsort(w)[::-1][:k]
    w, V = np.clip(w[order], 0, None), V[:, order]
    V *= np.sign(V[np.abs(V).argmax(0), np.arange(V.shape[1])])
    return (V / np.sqrt(max(w.sum(), 1e-12))).astype(np.float32)


@dataclass
class _Batch:
    """One mini-batch: the nodes computed (core + halo), in local indexing."""

    nodes: np.ndarray  # global ids of the nodes in the batch
    core: torch.Tensor  # local ids of the core spots (losses / outputs)
    x: torch.Tensor
    f: torch.Tensor | None
    nbr: torch.Tensor  # (m, k) local neighbour ids, -1 outside the batch
    pool: torch.Tensor  # (c,) pool id (0..P-1) of each core spot
    n_pools: int
    core_host: np.ndarray  # ``core`` and ``nbr`` on the host: graph structure is built there, no device sync
    nbr_host: np.ndarray
    cache: dict[str, Any] = field(default_factory=dict)  # edges etc. built once per batch (see SENCA._graph)


class _Tiling:
    """Spatial tiles of a section and the halos they need; builds the mini-batches."""

    def __init__(self, nbr: np.ndarray, coords: np.ndarray, *, tile_side: float, pool_side: float, halo: int,
                 batch_size: int) -> None:
        self.nbr = nbr
        self.n = nbr.shape[0]
        self.halo = halo
        self.batch_size = int(batch_size)
        step = spacing(coords, nbr, default=1.0)
        self.tile = grid_cells(coords, tile_side * step)
        self.pool = grid_cells(coords, pool_side * step)
        order = np.argsort(self.tile, kind="stable")
        counts = np.bincount(self.tile)
        self.members = np.split(order, np.cumsum(counts)[:-1])
        self.local = np.full(self.n, -1, np.int64)

    @property
    def n_tiles(self) -> int:
        return len(self.members)

    def groups(self, generator: torch.Generator | None) -> list[np.ndarray]:
        """Tiles grouped into batches of about ``batch_size`` core spots (shuffled with ``generator``)."""
        if self.n <= self.batch_size:
            return [np.arange(self.n_tiles)]
        if generator is None:
            perm = np.arange(self.n_tiles)
        else:
            perm = torch.randperm(self.n_tiles, generator=generator).numpy()
        out, cur, size = [], [], 0
        for t in perm:
            cur.append(t)
            size += len(self.members[t])
            if size >= self.batch_size:
                out.append(np.array(cur))
                cur, size = [], 0
        if cur:
            out.append(np.array(cur))
        return out

    def batch(self, tiles: np.ndarray, x: torch.Tensor, f: torch.Tensor | None) -> _Batch:
        """The batch of ``tiles``: ``x`` and ``f`` (already on the device) are gathered there."""
        core = np.sort(np.concatenate([self.members[t] for t in tiles]))
        if len(core) == self.n:
            nodes = np.arange(self.n)
        else:
            mask = np.zeros(self.n, bool)
            mask[core] = True
            nodes = np.flatnonzero(grow_mask(mask, self.nbr, self.halo))
        self.local[nodes] = np.arange(len(nodes))
        sub = self.nbr[nodes]
        lnbr = np.where(sub >= 0, self.local[np.where(sub >= 0, sub, 0)], -1)
        lcore = self.local[core]
        self.local[nodes] = -1
        _, pool = np.unique(self.pool[core], return_inverse=True)
        device = x.device
        lnbr, lcore = lnbr.astype(np.int64), lcore.astype(np.int64)
        if len(nodes) == self.n:
            bx, bf = x, f
        else:
            idx = to_device(nodes, device, torch.long)
            bx, bf = x.index_select(0, idx), None if f is None else f.index_select(0, idx)
        return _Batch(
            nodes=nodes, core=to_device(lcore, device), x=bx, f=bf, nbr=to_device(lnbr, device),
            pool=to_device(pool, device, torch.long), n_pools=int(pool.max()) + 1 if len(pool) else 0,
            core_host=lcore, nbr_host=lnbr,
        )

    def iterate(self, x: torch.Tensor, f: torch.Tensor | None, generator: torch.Generator | None) -> Iterator[_Batch]:
        """The batches of one pass; a section in one batch is built once and reused (no re-upload)."""
        groups = self.groups(generator)
        if len(groups) == 1:
            cached = getattr(self, "_whole", None)
            if cached is None or cached[0] is not x or cached[1] is not f:
                self._whole = (x, f, self.batch(groups[0], x, f))
            yield self._whole[2]
            return
        for tiles in groups:
            yield self.batch(tiles, x, f)


def _local_tokens(nbr: torch.Tensor, hops: int) -> torch.Tensor:
    return torch.as_tensor(hop_tokens(nbr.cpu().numpy(), hops), device=nbr.device)


def _grouped_nt_xent(a: torch.Tensor, b: torch.Tensor, temperature: float, size: int) -> torch.Tensor:
    """NT-Xent with negatives drawn within random groups of at most ``size`` pairs (mean over groups).

    One group (plain NT-Xent) when there are at most ``size`` pairs; otherwise the pairs are split at
    random (torch's seeded generator) into near-equal groups, so the cost per pair stays bounded.
    """
    n = a.shape[0]
    if n <= size:
        return nt_xent(a, b, temperature)
    parts = torch.randperm(n, device=a.device).tensor_split(-(-n // size))
    return torch.stack([nt_xent(a[i], b[i], temperature) * len(i) for i in parts]).sum() / n


def _pool_mean(x: torch.Tensor, ids: torch.Tensor, n: int) -> torch.Tensor:
    out = torch.zeros(n, x.shape[1], dtype=x.dtype, device=x.device).index_add_(0, ids, x)
    cnt = torch.zeros(n, dtype=x.dtype, device=x.device).index_add_(0, ids, torch.ones_like(ids, dtype=x.dtype))
    return out / cnt.clamp(min=1.0)[:, None]


# ------------------------------------------------------------------------------------------------
# the torch module
# ------------------------------------------------------------------------------------------------
class _TranscriptomicBranch(nn.Module):
    """Masking dropout → linear → propagation → transformer block → activation → linear (R)."""

    def __init__(self, n_genes: int, hidden: int, latent: int, *, mask_rate: float, heads: int,
                 propagation_hops: int, self_attention: str, dropout: float) -> None:
        super().__init__()
        self.mask_rate = float(mask_rate)
        self.propagation_hops = int(propagation_hops)
        self.self_attention = self_attention
        self.inp = nn.Linear(n_genes, hidden)
        self.attn = NeighbourhoodCrossAttention(hidden, hidden, hidden, heads=heads, out_dim=hidden)
        self.norm1 = nn.LayerNorm(hidden)
        self.ff = nn.Sequential(nn.Linear(hidden, 2 * hidden), nn.ELU(), nn.Dropout(dropout), nn.Linear(2 * hidden, hidden))
        self.norm2 = nn.LayerNorm(hidden)
        self.act = nn.ELU()
        self.out = nn.Linear(hidden, latent)

    def _global_attention(self, h: torch.Tensor) -> torch.Tensor:
        a = self.attn
        m, nh, dh = h.shape[0], a.heads, a.dim // a.heads
        q = a.q(h).view(m, nh, dh).transpose(0, 1)
        k = a.k(h).view(m, nh, dh).transpose(0, 1)
        v = a.v(h).view(m, nh, dh).transpose(0, 1)
        o = F.scaled_dot_product_attention(q[None], k[None], v[None])[0]
        return a.out(o.transpose(0, 1).reshape(m, nh * dh))

    def forward(self, x: torch.Tensor, edges: torch.Tensor, attn_edges: torch.Tensor | None) -> torch.Tensor:
        if self.training and self.mask_rate > 0:  # inverted: the expected input is the same as at inference
            x = F.dropout(x, self.mask_rate, training=True)
        h = self.inp(x)
        for _ in range(self.propagation_hops):
            h = graph_mean(h, edges)
        a = self._global_attention(h) if attn_edges is None else self.attn(h, h, edge_index=attn_edges)
        h = self.norm1(h + a)
        h = self.norm2(h + self.ff(h))
        return self.out(self.act(h))


class SENCAModule(nn.Module):
    """The SENCA-st network (pure torch): two branches, neighbourhood cross-attention shared encoder, decoder.

    Parameters
    ----------
    n_genes
        Width of the expression input.
    n_image_features
        Width of the image features; ``None`` for the gene-only model, where the image branch is
        replaced by a second, independently masked view of the expression through the same
        transcriptomic branch (SimCLR-style), so cross-attention and contrast work unchanged.
    hidden, latent
        Hidden width of the transcriptomic branch [256] and width of R, H and S [128].
    mask_rate
        Masking dropout on the expression input [0.2].
    heads
        Attention heads.
    propagation_hops
        Rounds of mean propagation over the spot graph (self + neighbours) after the first linear layer
        [2; the paper propagates once, but two rounds gave higher ARI on the HER2ST sections, see the
        note under ``reconstruct``].
    attention_hops
        Neighbourhood of the self-attention: every spot within this many hops. ``None``: attend over
        all spots of the batch (the paper's global self-attention; quadratic in the batch size).
    cross_attention
        Neighbourhood cross-attention shared encoder; ``False`` encodes ``R ⊕ H`` of each spot alone
        (ablation).
    combine
        ``"sum"`` (Eq. 2 of the paper) or ``"concat"`` (its text) of A¹ and A² before the shared encoder.
    reconstruct
        Decoder target: ``"data"`` (default) the module's inputs (expression ⊕ standardised image
        features, or their principal components, see ``target_pcs``); ``"input"`` the shared encoder's
        input ``R ⊕ H`` (the paper's E, read literally). A target that is itself learned can be matched
        by shrinking R and H, so with λ = 40 the reconstruction term then pulls the embeddings towards
        what the contrast keeps — the information *shared* by both modalities — and S loses what only
        one modality holds. Reconstructing the data keeps it. Measured with 10 epochs, ARI averaged
        over seeds 0–2 (``benchmarks/eval_senca.py``), literal reading → these defaults: the 7
        pathologist-labelled HER2ST sections, gene-only, mean 0.178 → 0.226; toy section, fused
        0.52 → 0.63 (seed 0 only before), now above ``image=False`` (0.59) instead of below it.
    dropout
        Dropout in the feed-forward layers.
    projection
        Apply the contrastive losses to a SimCLR projection head of R and H (as SimCLR does) rather
        than to R and H themselves.
    target_pcs
        With ``reconstruct="data"``: reconstruct this many principal components of each input
        (expression, image features; each scaled to unit total variance, so both modalities weigh the
        same) instead of the inputs themselves [20]; ``None`` the inputs.
    image_mask_rate
        Dropout on the standardised image features in training [0]; gives the image view its own
        augmentation (e.g. for ``contrast="shared"`` in :class:`SENCA`).
    target_hops
        With ``reconstruct="data"``: rounds of mean propagation over the spot graph (self +
        neighbours) applied to the decoder target, so S reconstructs each spot's neighbourhood mean of
        the data instead of the spot's own noisy values [1; 0: the spot's own data]. On the 7
        pathologist-labelled HER2ST sections (gene-only) the benchmark's mean ARI rose from 0.198 ± 0.009
        to 0.221 ± 0.034 (3 seeds), on the toy section fused from 0.918 to 0.930
        (``benchmarks/RESULTS.md``, SENCA sections of 2026-12-01 and 2026-12-03).

    Examples
    --------
    >>> import torch
    >>> from stfuse.models import SENCAModule
    >>> m = SENCAModule(30, 12, hidden=16, latent=8)
    >>> nbr = torch.tensor([[1, -1], [0, 2], [1, -1]])
    >>> out = m(torch.rand(3, 30), torch.rand(3, 12), nbr)
    >>> out["S"].shape
    torch.Size([3, 8])
    """

    def __init__(self, n_genes: int, n_image_features: int | None = None, *, hidden: int = 256, latent: int = 128,
                 mask_rate: float = 0.2, heads: int = 1, propagation_hops: int = 2, attention_hops: int | None = 1,
                 cross_attention: bool = True, combine: Literal["sum", "concat"] = "sum",
                 reconstruct: Literal["input", "data"] = "data", dropout: float = 0.0,
                 projection: bool = True, target_pcs: int | None = 20, image_mask_rate: float = 0.0,
                 target_hops: int = 1) -> None:
        super().__init__()
        if combine not in ("sum", "concat"):
            raise InputError(f"combine must be 'sum' or 'concat', got {combine!r}.")
        if reconstruct not in ("input", "data"):
            raise InputError(f"reconstruct must be 'input' or 'data', got {reconstruct!r}.")
        if int(target_hops) < 0:
            raise InputError(f"target_hops must be >= 0, got {target_hops}.")
        self.target_hops = int(target_hops) if reconstruct == "data" else 0
        self.image = n_image_features is not None
        self.image_mask_rate = float(image_mask_rate)
        self.cross_attention = bool(cross_attention)
        self.combine = combine
        self.reconstruct = reconstruct
        self.attention_hops = attention_hops
        self.rna = _TranscriptomicBranch(n_genes, hidden, latent, mask_rate=mask_rate, heads=heads,
                                         propagation_hops=propagation_hops,
                                         self_attention="global" if attention_hops is None else "neighbourhood",
                                         dropout=dropout)
        if self.image:
            self.register_buffer("img_mean", torch.zeros(n_image_features))
            self.register_buffer("img_std", torch.ones(n_image_features))
            self.img = nn.Linear(n_image_features, latent)
        if self.cross_attention:
            self.ca1 = NeighbourhoodCrossAttention(latent, latent, latent, heads=heads)  # Q = H, K/V = R
            self.ca2 = NeighbourhoodCrossAttention(latent, latent, latent, heads=heads)  # Q = R, K/V = H
        width = latent if (combine == "sum") else 2 * latent
        self.encoder = nn.Linear(width, latent)
        #: widths of the parts of E (one per modality); the MSE weighs each part equally
        self.target_pcs = target_pcs if reconstruct == "data" else None
        if self.target_pcs:
            p_x = min(int(target_pcs), n_genes)
            self.register_buffer("x_mean", torch.zeros(n_genes))
            self.register_buffer("x_basis", torch.zeros(n_genes, p_x))
            parts = [p_x]
            if n_image_features:
                p_f = min(int(target_pcs), n_image_features)
                self.register_buffer("f_basis", torch.zeros(n_image_features, p_f))
                parts.append(p_f)
        else:
            parts = [n_genes] + ([n_image_features] if n_image_features else [])
        self.e_parts = [latent, latent] if reconstruct == "input" else parts
        e_dim = sum(self.e_parts)
        self.decoder = nn.Sequential(nn.Linear(latent, hidden), nn.ELU(), nn.Linear(hidden, e_dim))
        # SimCLR projection head: the contrast acts on proj(R), proj(H), so R and H keep what it discards
        self.proj = (nn.Sequential(nn.Linear(latent, latent), nn.ReLU(), nn.Linear(latent, latent))
                     if projection else nn.Identity())

    def image_input(self, f: torch.Tensor) -> torch.Tensor:
        return (f - self.img_mean) / self.img_std

    def data_target(self, x: torch.Tensor, fin: torch.Tensor | None) -> torch.Tensor:
        """Decoder target for ``reconstruct="data"``: the inputs, or their principal components."""
        if self.target_pcs:
            x = (x - self.x_mean) @ self.x_basis
            if fin is not None:
                fin = fin @ self.f_basis
        return x if fin is None else torch.cat([x, fin], 1)

    def graph(self, nbr: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The propagation edges and the self-attention edges (``None``: global) of a neighbour array.

        Build them on the CPU and move them to the device to keep the index work off the GPU stream.
        """
        edges = nbr_to_edges(nbr)
        attn_edges = None if self.attention_hops is None else (
            edges if self.attention_hops == 1 else tokens_to_edges(_local_tokens(nbr, self.attention_hops)))
        return edges, attn_edges

    def forward(self, x: torch.Tensor, f: torch.Tensor | None, nbr: torch.Tensor, *,
                graph: tuple[torch.Tensor, torch.Tensor | None] | None = None) -> dict[str, torch.Tensor]:
        """Embeddings of every node of a (sub)graph: ``R``, ``H``, ``S``, decoder output ``D`` and target ``E``.

        ``graph``: the output of :meth:`graph` for ``nbr``, when already built.
        """
        edges, attn_edges = self.graph(nbr) if graph is None else graph
        R = self.rna(x, edges, attn_edges)
        if self.image:
            if f is None:
                raise InputError("This SENCA model was built with an image branch; pass image features.")
            fin = self.image_input(f)
            H = self.img(F.dropout(fin, self.image_mask_rate, training=self.training) if self.image_mask_rate else fin)
        else:
            fin = None
            # a second, independently masked view; identical to R without masking
            H = self.rna(x, edges, attn_edges) if (self.training and self.rna.mask_rate > 0) else R
        if self.cross_attention:
            A1 = self.ca1(H, R, edge_index=edges)
            A2 = self.ca2(R, H, edge_index=edges)
        else:
            A1, A2 = R, H
        S = self.encoder(A1 + A2 if self.combine == "sum" else torch.cat([A1, A2], 1))
        D = self.decoder(S)
        if self.reconstruct == "input":
            E = torch.cat([R, H], 1)
        else:
            E = self.data_target(x, fin)
            for _ in range(self.target_hops):
                E = graph_mean(E, edges)
        return {"R": R, "H": H, "S": S, "D": D, "E": E}


# ------------------------------------------------------------------------------------------------
# the savable model
# ------------------------------------------------------------------------------------------------
class SENCA(BaseModel):
    """SENCA-st region identification model (arrays in, arrays out).

    Transcriptomic branch: input masking → linear → mean propagation over the spot graph →
    transformer block (self-attention over graph neighbourhoods, LayerNorm, feed-forward, residual)
    → activation → R. Image branch: standardised image features → FC → H. Shared encoder:
    neighbourhood cross-attention A¹ (queries H, keys/values R) and A² (queries R, keys/values H)
    over each spot and its graph neighbours, combined into S; a decoder reconstructs the data (principal
    components of expression and, with ``recon_image_weight > 0``, of image features) from S (MSE).
    Hierarchical contrast: NT-Xent between R and H averaged over each spot's local window
    (``window_hops``) plus NT-Xent between R and H averaged over coarser square pools
    (``pool_side`` spot spacings); loss = NT-Xent_pooled + NT-Xent_windowed + λ·MSE.

    What the contrast acts on (``contrast``): ``"branches"`` (default, the paper) contrasts R with H
    through a projection head, so, as the paper says, it "does not directly affect" the shared
    embedding: no gradient of it reaches the cross-attention, the shared encoder or S, which are
    trained by the reconstruction alone. ``"shared"`` contrasts two views of S (independent input
    masks, ``image_mask_rate`` on the image features), so the contrast trains the whole network;
    ``"none"`` keeps the reconstruction only. The ablation (``python -m benchmarks.eval_senca
    --ablation``, ``benchmarks/RESULTS.md``) measures each.

    Choices where the paper is silent or ambiguous (all parameters):

    - *Self-attention* runs over each spot's ``attention_hops``-hop graph neighbourhood (memory linear
      in spots); ``attention_hops=None`` attends over all spots of the batch, which is the paper's
      global self-attention when the whole section is one batch (sections ≤ ``batch_size`` spots).
    - *Windows*: the windowed term averages R and H over each spot and its ``window_hops``-hop
      neighbours (a sliding window); the pooled term averages over non-overlapping square pools of
      ``pool_side`` × ``pool_side`` spot spacings. Negatives are the other pools of the batch and the
      other windows of a random group of at most ``contrast_size`` windows (all windows of the batch
      when it is that small, as on sections of a few hundred spots), which bounds the cost per spot.
    - *Reconstruction target*: the data (principal components of each modality), not the learned
      ``R ⊕ H``, and two rounds of propagation; ``reconstruct="input", target_pcs=None,
      propagation_hops=1`` is the paper read literally (see :class:`SENCAModule` for why and the ARI).
    - *Gene-only* (no image features): H is a second, independently masked view of the expression
      through the same transcriptomic branch.
    - *Mini-batches* are groups of random square tiles (``tile_side`` spacings) with the halo of
      spots their embeddings depend on, so every embedding is exact; a section of at most
      ``batch_size`` spots is one full batch.

    Parameters
    ----------
    n_genes
        Number of input genes.
    n_image_features
        Width of the image features, ``None`` for the gene-only model.
    hidden, latent, mask_rate, heads, propagation_hops, attention_hops, cross_attention, combine, reconstruct, dropout, projection, target_pcs, image_mask_rate, target_hops
        See :class:`SENCAModule`. The expression masking is inverted dropout (kept entries scaled by
        ``1 / (1 - mask_rate)``), so the expected input in training equals the input at inference.
    contrast
        ``"branches"`` (R vs H, the paper), ``"shared"`` (two masked views of S) or ``"none"``.
    hierarchical
        Windowed + pooled NT-Xent; ``False``: a plain spot-level NT-Xent between the two contrasted
        embeddings (ablation).
    window_hops
        Radius (graph hops) of the local window of the windowed term.
    pool_side
        Side of the coarse pools of the pooled term, in spot spacings.
    lam
        Weight λ of the reconstruction MSE [40].
    recon_image_weight
        Weight of the image part of the decoder target against the expression part (weight 1) in the
        MSE [1: both modalities weigh the same]. ``0``: S reconstructs the expression neighbourhood only
        and the image reaches S as context, through H and the cross-attention; then S keeps expression
        structure better (B4, C2–C6 against the authors' expression clusters, mean ARI over seeds 0–4:
        fused 0.234 at 0, 0.192 at 1, gene-only 0.224), but nothing makes it keep what only the image
        shows (toy section, whose regions C and D differ only in the image: 0.850 at 0, one seed at 0.63,
        against 0.930 at 1). ``benchmarks/RESULTS.md``: the SENCA ablation of 2026-12-07 (seeds 0–2) and
        the runs of 2026-12-08 for seeds 3–4. Ignored by the gene-only model and by ``reconstruct="input"``.
    temperature
        NT-Xent temperature.
    contrast_size
        Most windows (spots) sharing one NT-Xent softmax; larger batches are split into random groups.
    batch_size
        Core spots per mini-batch (a section of at most this many spots is trained full-batch).
    tile_side
        Side of the spatial tiles that make up a batch, in spot spacings.
    genes
        Names of the input genes (checked by :meth:`check_genes` on new data).
    device, random_state
        Torch device and seed of the initialisation and of training.

    Examples
    --------
    >>> import numpy as np
    >>> import stfuse as sf
    >>> rng = np.random.default_rng(0)
    >>> xy = np.stack(np.meshgrid(np.arange(12.0), np.arange(12.0)), -1).reshape(-1, 2)
    >>> nbr, _ = sf.gr.knn(xy, 4)
    >>> X = rng.poisson(2.0, (144, 30)).astype("float32")
    >>> model = sf.models.SENCA(30, None, hidden=16, latent=8, device="cpu")
    >>> hist = model.fit(X, None, nbr, xy, steps=2)
    >>> model.embed(X, None, nbr, xy).shape
    (144, 8)
    """

    def __init__(self, n_genes: int, n_image_features: int | None = None, *, hidden: int = 256, latent: int = 128,
                 mask_rate: float = 0.2, heads: int = 1, propagation_hops: int = 2, attention_hops: int | None = 1,
                 cross_attention: bool = True, combine: Literal["sum", "concat"] = "sum",
                 reconstruct: Literal["input", "data"] = "data", dropout: float = 0.0, projection: bool = True,
                 target_pcs: int | None = 20, image_mask_rate: float = 0.0, target_hops: int = 1,
                 contrast: Literal["branches", "shared", "none"] = "branches", hierarchical: bool = True,
                 window_hops: int = 1, pool_side: float = 4.0, lam: float = 40.0, recon_image_weight: float = 1.0,
                 temperature: float = 0.5,
                 contrast_size: int = 1024, batch_size: int = 4096, tile_side: float = 16.0, genes: Sequence[str] | None = None,
                 device: str = "auto", random_state: int = 0) -> None:
        for name, v in (("n_genes", n_genes), ("hidden", hidden), ("latent", latent), ("heads", heads),
                        ("batch_size", batch_size), ("contrast_size", contrast_size)):
            if int(v) < 1:
                raise InputError(f"{name} must be a positive integer, got {v}.")
        for name, v in (("mask_rate", mask_rate), ("image_mask_rate", image_mask_rate)):
            if not 0 <= v < 1:
                raise InputError(f"{name} must be in [0, 1), got {v}.")
        if contrast not in ("branches", "shared", "none"):
            raise InputError(f"contrast must be 'branches', 'shared' or 'none', got {contrast!r}.")
        if attention_hops is not None and int(attention_hops) < 1:
            raise InputError(f"attention_hops must be >= 1 or None (global), got {attention_hops}.")
        if not (np.isfinite(recon_image_weight) and recon_image_weight >= 0):
            raise InputError(f"recon_image_weight must be a finite number >= 0, got {recon_image_weight}.")
        if pool_side <= 0 or tile_side <= 0:
            raise InputError(f"pool_side and tile_side must be positive, got {pool_side} and {tile_side}.")
        super().__init__(
            genes=genes, device=device, random_state=random_state, n_genes=int(n_genes),
            n_image_features=None if n_image_features is None else int(n_image_features), hidden=int(hidden),
            latent=int(latent), mask_rate=float(mask_rate), heads=int(heads), propagation_hops=int(propagation_hops),
            attention_hops=None if attention_hops is None else int(attention_hops),
            cross_attention=bool(cross_attention), combine=combine, reconstruct=reconstruct, dropout=float(dropout),
            projection=bool(projection), target_pcs=None if target_pcs is None else int(target_pcs),
            image_mask_rate=float(image_mask_rate), target_hops=int(target_hops), contrast=contrast, hierarchical=bool(hierarchical), window_hops=int(window_hops), pool_side=float(pool_side),
            lam=float(lam), recon_image_weight=float(recon_image_weight), temperature=float(temperature), contrast_size=int(contrast_size), batch_size=int(batch_size), tile_side=float(tile_side),
        )

    _MODULE_KEYS = ("hidden", "latent", "mask_rate", "heads", "propagation_hops", "attention_hops", "cross_attention",
                    "combine", "reconstruct", "dropout", "projection", "target_pcs", "image_mask_rate", "target_hops")

    def _build(self) -> SENCAModule:
        p = self.params
        return SENCAModule(p["n_genes"], p["n_image_features"], **{k: p[k] for k in self._MODULE_KEYS})

    # --- helpers -------------------------------------------------------------------------------
    @property
    def halo(self) -> int:
        """Graph hops of input a spot's S and windowed R/H depend on (the batch halo)."""
        p = self.params
        attn = p["attention_hops"] or 0
        return max(p["propagation_hops"] + attn + max(1, p["window_hops"]), self.module.target_hops)

    def _check(self, X: Any, image: Any, neighbours: Any, coords: Any):
        X = np.ascontiguousarray(np.asarray(X, dtype=np.float32))
        if X.ndim != 2 or X.shape[1] != self.params["n_genes"]:
            raise InputError(f"Expression must be (n_spots, {self.params['n_genes']}); got shape {X.shape}.")
        n = X.shape[0]
        if n < 2:
            raise InputError(f"SENCA needs at least 2 spots, got {n}.")
        if not np.isfinite(X).all():
            raise InputError("The expression matrix contains NaN or infinite values.")
        d = self.params["n_image_features"]
        if d is None:
            if image is not None:
                raise InputError("This SENCA model is gene-only (n_image_features=None); pass image=None.")
            f = None
        else:
            if image is None:
                raise InputError(f"This SENCA model has an image branch; pass (n_spots, {d}) image features.")
            f = np.ascontiguousarray(np.asarray(image, dtype=np.float32))
            if f.shape != (n, d):
                raise InputError(f"Image features must be ({n}, {d}); got shape {f.shape}.")
            if not np.isfinite(f).all():
                raise InputError("The image features contain NaN or infinite values.")
        nbr = np.asarray(neighbours, dtype=np.int64)
        if nbr.ndim != 2 or nbr.shape[0] != n:
            raise InputError(f"neighbours must be an (n_spots, k) index array for {n} spots; got shape {nbr.shape}.")
        if nbr.size and (nbr.max() >= n or nbr.min() < -1):
            raise InputError("neighbours holds indices outside [0, n_spots) (use -1 for 'no neighbour').")
        xy = np.asarray(coords, dtype=np.float64)
        if xy.shape != (n, 2) or not np.isfinite(xy).all():
            raise InputError(f"coords must be a finite ({n}, 2) array of spot centres; got shape {xy.shape}.")
        return X, f, nbr, xy

    def _tiling(self, nbr: np.ndarray, xy: np.ndarray) -> _Tiling:
        p = self.params
        return _Tiling(nbr, xy, tile_side=p["tile_side"], pool_side=p["pool_side"], halo=self.halo,
                       batch_size=p["batch_size"])

    @staticmethod
    def _batch_graph(module: SENCAModule, b: _Batch) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The module's edges for batch ``b``, built on the host once per batch and moved to its device."""
        if "graph" not in b.cache:
            edges, attn = module.graph(torch.from_numpy(b.nbr_host))
            dev = b.nbr.device
            e = to_device(edges, dev)
            b.cache["graph"] = (e, None if attn is None else e if attn is edges else to_device(attn, dev))
        return b.cache["graph"]

    def _windows(self, b: _Batch) -> tuple[int, torch.Tensor]:
        """Number of windows (one per core spot) and the window -> spot edges of batch ``b`` (built on the host)."""
        if "windows" not in b.cache:
            hops, core, nbr = self.params["window_hops"], b.core_host, b.nbr_host
            win = hop_tokens(nbr, hops)[core] if hops > 1 else np.concatenate([core[:, None], nbr[core]], 1)
            b.cache["windows"] = (len(win), to_device(tokens_to_edges(torch.from_numpy(win)), b.nbr.device))
        return b.cache["windows"]

    def _losses(self, module: SENCAModule, b: _Batch) -> dict[str, torch.Tensor]:
        p = self.params
        core, mode = b.core, p["contrast"]
        graph = self._batch_graph(module, b)
        outs = [module(b.x, b.f, b.nbr, graph=graph)]
        if mode == "shared":  # a second view: independent input masks
            outs.append(module(b.x, b.f, b.nbr, graph=graph))
        # weighted mean of the per-part MSEs: (expression, image) 1 and recon_image_weight; (R, H) 1 and 1
        n_parts = len(module.e_parts)
        w = [1.0] + [p["recon_image_weight"] if module.reconstruct == "data" else 1.0] * (n_parts - 1)
        mse = torch.stack([
            wi * F.mse_loss(d, e) for o in outs
            for wi, d, e in zip(w, o["D"][core].split(module.e_parts, 1), o["E"][core].split(module.e_parts, 1))
        ]).sum() / (len(outs) * sum(w))
        terms: dict[str, torch.Tensor] = {}
        loss = p["lam"] * mse
        if mode != "none":
            a, c = (outs[0]["R"], outs[0]["H"]) if mode == "branches" else (outs[0]["S"], outs[1]["S"])
            g, t = module.proj, p["temperature"]
            if p["hierarchical"]:
                n_win, wedges = self._windows(b)  # window j -> its spots; the mean over a window is a graph mean
                windowed = _grouped_nt_xent(g(graph_mean(a, wedges, n_win)), g(graph_mean(c, wedges, n_win)), t,
                                            p["contrast_size"])
                pooled = nt_xent(g(_pool_mean(a[core], b.pool, b.n_pools)), g(_pool_mean(c[core], b.pool, b.n_pools)), t)
                terms.update(nt_xent_windowed=windowed, nt_xent_pooled=pooled)
                loss = loss + windowed + pooled
            else:
                plain = _grouped_nt_xent(g(a[core]), g(c[core]), t, p["contrast_size"])
                terms["nt_xent"] = plain
                loss = loss + plain
        return {"loss": loss, **terms, "mse": mse}

    # --- API -----------------------------------------------------------------------------------
    def fit(self, X: Any, image: Any, neighbours: Any, coords: Any, *, steps: int = 200, lr: float = 5e-4,
            weight_decay: float = 0.0, patience: int | None = None, amp: bool | None = None) -> dict[str, list[float]]:
        """Train on one section for ``steps`` optimiser steps.

        Parameters
        ----------
        X
            ``(n_spots, n_genes)`` prepared expression (normalised, log1p).
        image
            ``(n_spots, n_image_features)`` image features, or ``None`` for the gene-only model.
        neighbours
            ``(n_spots, k)`` neighbour indices (``-1`` = none), e.g. from :func:`stfuse.gr.knn`.
        coords
            ``(n_spots, 2)`` spot centres (any unit; tiles and pools are in spot spacings).
        steps
            Adam steps, one mini-batch each (a section of at most ``batch_size`` spots is one batch,
            so a step is a full-batch epoch there; the paper's 40 epochs are ``steps=40``).
        lr, weight_decay
            Adam settings.
        patience
            Stop early when the loss, averaged over each pass through the section, has not improved
            for this many passes (the best weights are kept); ``None`` trains all ``steps``.
        amp
            Mixed precision on CUDA (see :func:`stfuse.nn.train`); ``None``: on for CUDA, off on CPU. The
            dtype used is kept in ``info["autocast"]``.

        Returns
        -------
        History per pass through the section: ``loss``, ``nt_xent_windowed``, ``nt_xent_pooled`` (or
        ``nt_xent``), ``mse`` and ``steps`` (optimiser steps so far).

        Examples
        --------
        >>> hist = model.fit(X, None, nbr, xy, steps=100)  # doctest: +SKIP
        """
        if int(steps) < 1:
            raise InputError(f"steps must be at least 1, got {steps}.")
        X, f, nbr, xy = self._check(X, image, neighbours, coords)
        if f is not None:
            mu, sd = f.mean(0), f.std(0)
            sd[sd < 1e-6] = 1.0
            self.module.img_mean.copy_(torch.as_tensor(mu))
            self.module.img_std.copy_(torch.as_tensor(sd))
        if self.module.target_pcs:
            mu_x = X.mean(0)
            self.module.x_mean.copy_(torch.as_tensor(mu_x))
            self.module.x_basis.copy_(torch.as_tensor(_pca_basis(X - mu_x, self.module.x_basis.shape[1])))
            if f is not None:
                fz = (f - self.module.img_mean.cpu().numpy()) / self.module.img_std.cpu().numpy()
                self.module.f_basis.copy_(torch.as_tensor(_pca_basis(fz, self.module.f_basis.shape[1])))
        tiling = self._tiling(nbr, xy)
        log.info(f"SENCA: {X.shape[0]} spots, {tiling.n_tiles} tiles, batches of ~{self.params['batch_size']} spots, "
                 f"halo {self.halo} hops")
        per_pass = len(tiling.groups(None))
        Xd = to_device(X, self.device)  # on the device once per fit; batches gather their rows there
        fd = None if f is None else to_device(f, self.device)
        history = train(
            self.module, self._losses, lambda g: tiling.iterate(Xd, fd, g), epochs=-(-int(steps) // per_pass),
            max_steps=int(steps), lr=float(lr), device=self.device, seed=self.random_state,
            weight_decay=float(weight_decay), patience=patience, amp=amp, desc="SENCA",
        )
        self.is_trained = True
        cast = autocast_dtype(self.device) if amp is None or amp else None
        self.info["autocast"] = None if cast is None else str(cast).removeprefix("torch.")
        self.info["history"] = history
        self.info["n_train_spots"] = int(X.shape[0])
        return history

    @torch.no_grad()
    def embed(self, X: Any, image: Any, neighbours: Any, coords: Any, *,
              which: Literal["S", "R", "H"] = "S") -> np.ndarray:
        """Embeddings of every spot: the shared embedding ``S`` (default), or ``R`` / ``H``.

        Parameters
        ----------
        X, image, neighbours, coords
            As in :meth:`fit` (the same section or a new one measured on the same genes).
        which
            ``"S"`` shared, ``"R"`` transcriptomic, ``"H"`` image embedding.

        Returns
        -------
        ``(n_spots, latent)`` float32 array.

        Examples
        --------
        >>> S = model.embed(X, None, nbr, xy)  # doctest: +SKIP
        """
        if which not in ("S", "R", "H"):
            raise InputError(f"which must be 'S', 'R' or 'H', got {which!r}.")
        X, f, nbr, xy = self._check(X, image, neighbours, coords)
        tiling = self._tiling(nbr, xy)
        self.module.eval()
        out = np.empty((X.shape[0], self.params["latent"]), np.float32)
        Xd = to_device(X, self.device)
        fd = None if f is None else to_device(f, self.device)
        with seeded(self.random_state, self.device):
            for b in tiling.iterate(Xd, fd, None):
                res = self.module(b.x, b.f, b.nbr, graph=self._batch_graph(self.module, b))[which][b.core]
                out[b.nodes[b.core_host]] = res.float().cpu().numpy()
        return out
