"""Per-type keys and values: attention over a union of edge sets where what a node sends depends on
the type of the edge it sends it along (typed / relational attention, in its additive form).

Notation: N_dst target nodes, N_src source nodes, E edges j -> i, K edge types, H heads, D
per-head width, ``m [E, K]`` the type membership of each edge (0/1; an edge may be in several
sets, see :func:`~.edge_sets.typed_union`), c the score scale (1/sqrt(D)).

Each type t has a learned key offset a^h_t and value offset b^h_t ``[D]`` per head; an edge's key
and value are the source's plus the offsets of its types:

    k^h_ij = k^h_j + sum_t m_ijt a^h_t           v^h_ij = v^h_j + sum_t m_ijt b^h_t
    s^h_ij = c q^h_i . k^h_j  +  c sum_t m_ijt (q^h_i . a^h_t)  (+ edge_bias)
    out^h_i = sum_j alpha^h_ij v^h_j  +  sum_t (sum_j alpha^h_ij m_ijt) b^h_t

Why this form: the key part is a per-edge, per-head scalar (an ``edge_bias``) and the value part a
per-node ``[K]`` sum times ``[K, D]``, so the kernels run unchanged and nothing of size
``[E, H, D]`` exists. It is TransformerConv's edge-feature rule (``k_j + W a_ij``) with the
membership as the edge feature, except that keys and values get separate offsets; both products
are the sparse ones of :mod:`gnn_attention.attention.edge_features`. A per-type *matrix*
(``k^h_ij = W^{t(ij)} x_j``, RGAT / HGT) is not this: it would need K projections of every node and
a gather per edge of the type's keys; the offsets are the type-dependent part such a projection
adds to a shared one when x_j carries a type indicator.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from gnn_attention.attention import edge_features
from gnn_attention.attention.functional import graph_attention
from gnn_attention.graphs import TokenGraph


def typed_attention(q: Tensor, k: Tensor, v: Tensor, graph: TokenGraph | Tensor, edge_type: Tensor,
                    key_offset: Tensor, value_offset: Tensor, *, edge_bias: Tensor | None = None,
                    dropout_p: float = 0.0, return_attention_weights: bool = False):
    r"""Scaled dot-product attention over ``graph`` with per-type key/value offsets (module
    docstring); ``alpha`` (returned, after dropout) is in the order of ``graph.edge_index``.

    **Shapes:** ``q [N_dst, H, D]``, ``k, v [N_src, H, D]``, ``edge_type [E, K]`` (bool or float),
    ``key_offset, value_offset [K, H, D]``, ``edge_bias [E, H]`` -> ``out [N_dst, H, D]`` or
    ``(out, alpha [E, H])``.
    """
    H, D = q.shape[1], q.shape[2]
    E = graph.num_edges if isinstance(graph, TokenGraph) else graph.size(1)
    K = key_offset.size(0)
    for name, t in (("key_offset", key_offset), ("value_offset", value_offset)):
        if t.shape != (K, H, D):
            raise ValueError(f"{name} must have shape [K, H, D] = [{K}, {H}, {D}], got "
                             f"{list(t.shape)}")
    if edge_type.dim() != 2 or edge_type.shape != (E, K):
        raise ValueError(f"edge_type must have shape [E, K] = [{E}, {K}], got "
                         f"{list(edge_type.shape)}")
    if E == 0:  # no edge: every output row is zero (the sparse products dislike nnz = 0)
        res = graph_attention(q, k, v, graph, dropout_p=dropout_p, return_attention_weights=True)
        return res if return_attention_weights else res[0]
    ei = graph.edge_index if isinstance(graph, TokenGraph) else graph
    m = edge_features.edge_matrix(graph, ei[1], q.size(0), H)
    a = edge_type.to(q.dtype)
    # offsets as edge_features' per-head projection W^h [D, K]: column t is a^h_t (resp. b^h_t)
    kb = edge_features.key_bias(q, a, key_offset.permute(1, 2, 0), m, 1.0 / math.sqrt(D))
    bias = kb if edge_bias is None else kb + edge_bias.to(kb.dtype)
    out, alpha = graph_attention(q, k, v, graph, edge_bias=bias, dropout_p=dropout_p,
                                 return_attention_weights=True)
    # alpha already carries the dropout mask, so the offsets see the weights the values saw
    out = out + edge_features.value_sum(alpha.to(q.dtype), a, value_offset.permute(1, 2, 0),
                                        m).to(out.dtype)
    return (out, alpha) if return_attention_weights else out


class TypedKeyValue(nn.Module):
    r"""The per-type offsets ``key [K, H, D]`` (a^h_t) and ``value [K, H, D]`` (b^h_t) of
    :func:`typed_attention`, initialised to zero (the layer starts as untyped attention).

    **Shapes:** ``q [N_dst, H, D]``, ``k, v [N_src, H, D]``, ``edge_type [E, K]`` ->
    ``[N_dst, H, D]``.
    """

    def __init__(self, num_types: int, num_heads: int, head_dim: int):
        super().__init__()
        if num_types < 1 or num_heads < 1 or head_dim < 1:
            raise ValueError(f"num_types, num_heads and head_dim must be >= 1, got {num_types}, "
                             f"{num_heads}, {head_dim}")
        self.key = nn.Parameter(torch.empty(num_types, num_heads, head_dim))
        self.value = nn.Parameter(torch.empty(num_types, num_heads, head_dim))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.zeros_(self.key)
        nn.init.zeros_(self.value)

    def forward(self, q: Tensor, k: Tensor, v: Tensor, graph: TokenGraph | Tensor,
                edge_type: Tensor, edge_bias: Tensor | None = None, dropout_p: float = 0.0):
        return typed_attention(q, k, v, graph, edge_type, self.key, self.value,
                               edge_bias=edge_bias, dropout_p=dropout_p)

    def __repr__(self) -> str:
        K, H, D = self.key.shape
        return f"TypedKeyValue(types={K}, heads={H}, head_dim={D})"
