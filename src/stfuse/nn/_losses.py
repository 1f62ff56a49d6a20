"""Contrastive losses shared by SENCA-st (NT-Xent) and SpaCRD (CLIP-style InfoNCE)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["info_nce", "nt_xent"]


def nt_xent(a: torch.Tensor, b: torch.Tensor, temperature: float = 0.5) -> torch.Tensor:
    """NT-Xent (SimCLR) between paired views ``a[i]`` ↔ ``b[i]``.

    Each of the ``2N`` embeddings has one positive (its pair) and ``2N - 2`` negatives (all other
    embeddings of both views); cosine similarity divided by ``temperature``.

    Parameters
    ----------
    a, b
        ``(N, d)`` embeddings of the two views.
    temperature
        Softmax temperature.

    Returns
    -------
    Scalar loss.

    Examples
    --------
    >>> import torch
    >>> from stfuse.nn import nt_xent
    >>> x = torch.randn(8, 4)
    >>> bool(nt_xent(x, x) < nt_xent(x, torch.randn(8, 4)))
    True
    """
    n = a.shape[0]
    if n < 2:
        return a.sum() * 0.0
    z = F.normalize(torch.cat([a, b], dim=0), dim=1)
    sim = z @ z.T / temperature
    sim = sim.masked_fill(torch.eye(2 * n, dtype=torch.bool, device=z.device), float("-inf"))
    target = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)]).to(z.device)
    return F.cross_entropy(sim, target)


def info_nce(a: torch.Tensor, b: torch.Tensor, temperature: float = 0.07, alpha: float = 0.5) -> torch.Tensor:
    """CLIP-style symmetric InfoNCE: ``alpha`` · CE(a→b) + (1 − ``alpha``) · CE(b→a).

    Parameters
    ----------
    a, b
        ``(N, d)`` embeddings; ``a[i]`` and ``b[i]`` are the positive pair.
    temperature
        Softmax temperature (CLIP/SpaCRD: 0.07).
    alpha
        Weight of the a→b direction.

    Returns
    -------
    Scalar loss.

    Examples
    --------
    >>> import torch
    >>> from stfuse.nn import info_nce
    >>> genes, image = torch.randn(8, 4), torch.randn(8, 4)
    >>> bool(info_nce(genes, genes + 0.01 * image) < info_nce(genes, image))  # aligned pairs: lower loss
    True
    """
    logits = F.normalize(a, dim=1) @ F.normalize(b, dim=1).T / temperature
    target = torch.arange(a.shape[0], device=a.device)
    return alpha * F.cross_entropy(logits, target) + (1 - alpha) * F.cross_entropy(logits.T, target)
