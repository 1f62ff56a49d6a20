"""Cross-attention over spatial neighbourhoods (SENCA-st's shared encoder, SpaCRD's VRBCA)."""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["NeighbourhoodCrossAttention", "neighbourhood_tokens"]


def neighbourhood_tokens(indices: torch.Tensor, *, include_self: bool = True) -> torch.Tensor:
    """Token index matrix ``(n, 1 + k)``: each spot itself first, then its neighbours (``-1`` = none).

    Examples
    --------
    >>> import torch
    >>> from stfuse.nn import neighbourhood_tokens
    >>> neighbourhood_tokens(torch.tensor([[1, -1], [0, 2], [1, -1]])).tolist()
    [[0, 1, -1], [1, 0, 2], [2, 1, -1]]
    """
    indices = torch.as_tensor(indices, dtype=torch.long)
    if not include_self:
        return indices
    own = torch.arange(indices.shape[0], device=indices.device)[:, None]
    return torch.cat([own, indices], dim=1)


class NeighbourhoodCrossAttention(nn.Module):
    """Multi-head cross-attention of each spot's query over keys/values of its neighbourhood.

    For spot ``i`` with tokens ``T_i`` (itself + neighbours), the output is
    ``softmax(q_i K_{T_i}ᵀ / √d) V_{T_i}`` with ``q`` from one modality and ``K``, ``V`` from the
    other — the centre row of SENCA-st's ``A = softmax((H W^q)(R W^k)ᵀ/√E) R W^v`` (rows of the
    full token-by-token attention are independent, so only the centre row is computed). Memory is
    ``O(n · k)``, linear in the number of spots.

    Parameters
    ----------
    dim_q, dim_kv
        Input widths of the query and key/value modalities.
    dim
        Attention width (split across ``heads``).
    heads
        Number of heads.
    dropout
        Dropout on the attention weights.
    out_dim
        Output width (default ``dim``).

    Examples
    --------
    >>> import torch
    >>> from stfuse.nn import NeighbourhoodCrossAttention, neighbourhood_tokens
    >>> att = NeighbourhoodCrossAttention(4, 6, 8, heads=2)
    >>> tokens = neighbourhood_tokens(torch.tensor([[1], [0], [1]]))
    >>> att(torch.randn(3, 4), torch.randn(3, 6), tokens).shape
    torch.Size([3, 8])
    """

    def __init__(self, dim_q: int, dim_kv: int, dim: int, *, heads: int = 1, dropout: float = 0.0,
                 out_dim: int | None = None) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim={dim} must be divisible by heads={heads}.")
        self.heads, self.dim = heads, dim
        self.q = nn.Linear(dim_q, dim, bias=False)
        self.k = nn.Linear(dim_kv, dim, bias=False)
        self.v = nn.Linear(dim_kv, dim, bias=False)
        self.out = nn.Linear(dim, out_dim or dim) if (heads > 1 or out_dim) else nn.Identity()
        self.drop = nn.Dropout(dropout)
        self.last_attention: torch.Tensor | None = None

    def forward(self, query: torch.Tensor, keyvalue: torch.Tensor, tokens: torch.Tensor,
                centres: torch.Tensor | None = None) -> torch.Tensor:
        """Attend from ``query[centres]`` over ``keyvalue[tokens]``.

        Parameters
        ----------
        query, keyvalue
            ``(n, dim_q)`` and ``(n, dim_kv)`` features of all spots (or of a mini-batch subgraph).
        tokens
            ``(m, t)`` token indices into the rows of ``keyvalue`` (``-1`` = padding).
        centres
            ``(m,)`` rows of ``query`` that attend (default: ``tokens[:, 0]``).

        Returns
        -------
        ``(m, out_dim)`` attended features; the weights of the last call are in ``last_attention``.
        """
        if centres is None:
            centres = tokens[:, 0]
        m, t = tokens.shape
        h, dh = self.heads, self.dim // self.heads
        valid = tokens >= 0
        safe = tokens.clamp(min=0)
        q = self.q(query[centres]).view(m, h, 1, dh)
        # project each distinct key/value row once, then gather (a row is a token of up to 1 + k spots)
        used, inverse = torch.unique(safe.reshape(-1), return_inverse=True)
        kv = keyvalue[used]
        k = self.k(kv)[inverse].view(m, t, h, dh).transpose(1, 2)
        v = self.v(kv)[inverse].view(m, t, h, dh).transpose(1, 2)
        scores = (q @ k.transpose(-1, -2)).squeeze(2) / dh**0.5  # (m, h, t)
        scores = scores.masked_fill(~valid[:, None, :], float("-inf"))
        att = torch.softmax(scores, dim=-1)
        self.last_attention = att.detach()
        out = (self.drop(att).unsqueeze(2) @ v).squeeze(2).reshape(m, h * dh)
        return self.out(out)
