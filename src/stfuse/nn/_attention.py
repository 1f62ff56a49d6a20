"""Attention and averaging over spatial neighbourhoods as torch-geometric message passing.

SENCA-st's transcriptomic self-attention and shared encoder, and SpaCRD's VRBCA, attend from each
spot over the spots of its graph neighbourhood. Both are written here once, as PyG
:class:`~torch_geometric.nn.conv.MessagePassing` over an ``edge_index`` (row 0 the source spot whose
key/value is read, row 1 the target spot that attends; self-loops included when a spot attends over
itself), so the same code runs on CPU and GPU, memory is linear in the number of edges, and any
graph works: a k-nearest-neighbour graph, squidpy's ``obsp["spatial_connectivities"]``, or multi-hop
windows. ``tokens`` arrays (``(m, t)`` rows of neighbour ids, ``-1`` padded) are converted with
:func:`tokens_to_edges`.
"""

from __future__ import annotations

import torch
from torch import nn
from torch_geometric.nn.conv import MessagePassing
from torch_geometric.utils import scatter, softmax

__all__ = ["NeighbourhoodCrossAttention", "graph_mean", "nbr_to_edges", "neighbourhood_tokens", "tokens_to_edges"]


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


def tokens_to_edges(tokens: torch.Tensor) -> torch.Tensor:
    """``edge_index`` ``(2, E)`` of a token matrix: an edge ``tokens[i, j] → i`` for every valid entry.

    Edges are ordered row by row, so the ``e``-th edge is the ``e``-th valid entry of ``tokens``
    read in row-major order.

    Examples
    --------
    >>> import torch
    >>> from stfuse.nn import tokens_to_edges
    >>> tokens_to_edges(torch.tensor([[0, 1], [1, -1]])).tolist()
    [[0, 1, 1], [0, 0, 1]]
    """
    tokens = torch.as_tensor(tokens, dtype=torch.long)
    valid = tokens >= 0
    dst = torch.arange(tokens.shape[0], device=tokens.device)[:, None].expand_as(tokens)
    return torch.stack([tokens[valid], dst[valid]])


def nbr_to_edges(neighbours: torch.Tensor, *, self_loops: bool = True) -> torch.Tensor:
    """``edge_index`` of a neighbour array (``(n, k)``, ``-1`` = none), each spot first linked to itself.

    Examples
    --------
    >>> import torch
    >>> from stfuse.nn import nbr_to_edges
    >>> nbr_to_edges(torch.tensor([[1], [-1]])).tolist()
    [[0, 1, 1], [0, 0, 1]]
    """
    neighbours = torch.as_tensor(neighbours, dtype=torch.long)
    return tokens_to_edges(neighbourhood_tokens(neighbours, include_self=self_loops))


def graph_mean(x: torch.Tensor, edge_index: torch.Tensor, num_nodes: int | None = None) -> torch.Tensor:
    """Mean of ``x`` over each target's sources (``x[j]`` for every edge ``j → i``); rows without edges get 0.

    Examples
    --------
    >>> import torch
    >>> from stfuse.nn import graph_mean
    >>> graph_mean(torch.tensor([[1.0], [3.0]]), torch.tensor([[0, 1, 1], [0, 0, 1]])).tolist()
    [[2.0], [3.0]]
    """
    n = x.shape[0] if num_nodes is None else int(num_nodes)
    return scatter(x.index_select(0, edge_index[0]), edge_index[1], dim=0, dim_size=n, reduce="mean")


class NeighbourhoodCrossAttention(MessagePassing):
    """Multi-head (cross-)attention of each spot's query over the keys/values of its graph neighbours.

    For target spot ``i`` with incoming edges from ``N(i)``, the output is
    ``softmax_j(q_i · k_j / √d) v_j`` summed over ``j ∈ N(i)``, with ``q`` from one modality and ``k``,
    ``v`` from the other — the centre row of SENCA-st's ``A = softmax((H W^q)(R W^k)ᵀ/√E) R W^v`` over
    the neighbourhood (rows of the full token-by-token attention are independent, so only the centre
    row is computed). A PyG message-passing layer (``TransformerConv``-style, without its skip and
    edge features); memory ``O(E)``.

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
    >>> from stfuse.nn import NeighbourhoodCrossAttention, nbr_to_edges
    >>> att = NeighbourhoodCrossAttention(4, 6, 8, heads=2)
    >>> edges = nbr_to_edges(torch.tensor([[1], [0], [1]]))
    >>> att(torch.randn(3, 4), torch.randn(3, 6), edge_index=edges).shape
    torch.Size([3, 8])
    """

    def __init__(self, dim_q: int, dim_kv: int, dim: int, *, heads: int = 1, dropout: float = 0.0,
                 out_dim: int | None = None) -> None:
        super().__init__(aggr="sum", node_dim=0)
        if dim % heads:
            raise ValueError(f"dim={dim} must be divisible by heads={heads}.")
        self.heads, self.dim = heads, dim
        self.q = nn.Linear(dim_q, dim, bias=False)
        self.k = nn.Linear(dim_kv, dim, bias=False)
        self.v = nn.Linear(dim_kv, dim, bias=False)
        self.out = nn.Linear(dim, out_dim or dim) if (heads > 1 or out_dim) else nn.Identity()
        self.drop = nn.Dropout(dropout)
        self.last_attention: torch.Tensor | None = None

    def forward(self, query: torch.Tensor, keyvalue: torch.Tensor, tokens: torch.Tensor | None = None,
                centres: torch.Tensor | None = None, *, edge_index: torch.Tensor | None = None) -> torch.Tensor:
        """Attend from every target over its sources.

        Parameters
        ----------
        query, keyvalue
            ``(m, dim_q)`` features of the targets and ``(n, dim_kv)`` features of the sources (with
            ``tokens``: ``(n, dim_q)``, the query rows being ``query[centres]``).
        tokens
            ``(m, t)`` source ids per target (``-1`` = padding), the older neighbourhood form; the
            attention weights are then kept in ``last_attention`` as ``(m, heads, t)``.
        centres
            With ``tokens``: the rows of ``query`` that attend (default ``tokens[:, 0]``).
        edge_index
            ``(2, E)`` edges ``source → target`` (sources index ``keyvalue``, targets ``query``);
            exclusive with ``tokens``. The weights are kept per edge in ``last_attention`` ``(E, heads)``.

        Returns
        -------
        ``(m, out_dim)`` attended features.
        """
        if (tokens is None) == (edge_index is None):
            raise ValueError("pass exactly one of tokens and edge_index")
        if tokens is not None:
            if centres is None:
                centres = tokens[:, 0]
            query = query.index_select(0, centres)
            edge_index = tokens_to_edges(tokens)
        m, n = query.shape[0], keyvalue.shape[0]
        h, dh = self.heads, self.dim // self.heads
        q = self.q(query).view(m, h, dh)
        k = self.k(keyvalue).view(n, h, dh)
        v = self.v(keyvalue).view(n, h, dh)
        out = self.propagate(edge_index, q=q, k=k, v=v, size=(n, m))
        alpha = self._alpha
        self._alpha = None
        if tokens is not None:
            dense = alpha.new_zeros(tokens.shape[0], tokens.shape[1], h)
            dense[tokens >= 0] = alpha
            alpha = dense.transpose(1, 2)
        self.last_attention = alpha
        return self.out(out.reshape(m, h * dh))

    def message(self, q_i: torch.Tensor, k_j: torch.Tensor, v_j: torch.Tensor, index: torch.Tensor,
                ptr: torch.Tensor | None, size_i: int | None) -> torch.Tensor:
        scores = (q_i * k_j).sum(-1) / (self.dim // self.heads) ** 0.5  # (E, heads)
        alpha = softmax(scores, index, ptr, size_i)
        self._alpha = alpha.detach()
        return v_j * self.drop(alpha).unsqueeze(-1)
