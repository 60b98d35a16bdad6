"""Edge features inside attention without ``[E, H, D]`` temporaries: the algebra that lets
TransformerConv-style edge embeddings run on the fast kernels.

Notation: N_dst target nodes, E edges j -> i, H heads, D per-head width, F edge-feature width,
a_ij the features of edge j -> i, W^h ``[D, F]`` the per-head edge projection, e^h_ij = W^h a_ij.

TransformerConv adds the projected edge features to the keys and to the values of every edge:

    s^h_ij   = q^h_i . (k^h_j + e^h_ij) * c  =  q^h_i . k^h_j * c  +  ((W^h)^T q^h_i) . a_ij * c
    out^h_i  = sum_j alpha^h_ij (v^h_j + e^h_ij) =  sum_j alpha^h_ij v^h_j  +  W^h (sum_j alpha^h_ij a_ij)

so the key part is a per-edge, per-head scalar bias (the kernels take ``edge_bias [E, H]``) and the
value part a ``[N_dst, H, F]`` scatter of the returned weights, mapped back by W^h once per node.
The widest per-edge temporary is ``[E, H, min(F, D)]``: when F > D the bias is computed from e
itself, which is then narrower than a.
"""
from __future__ import annotations

import torch
from torch import Tensor


def key_bias(q: Tensor, edge_attr: Tensor, weight: Tensor, dst: Tensor, scale: float) -> Tensor:
    r"""``bias[e, h] = scale * q^h_i . (W^h a_e)`` for every edge e = j -> i.

    **Shapes:** ``q [N_dst, H, D]``, ``edge_attr [E, F]``, ``weight [H, D, F]``, ``dst [E]``
    -> ``[E, H]``.
    """
    H, D, F = weight.shape
    if F <= D:  # project the queries into feature space: [N, H, F] per node, [E, H, F] per edge
        u = torch.einsum("nhd,hdf->nhf", q, weight)  # (W^h)^T q^h_i, per node
        return (u.index_select(0, dst) * edge_attr.unsqueeze(1)).sum(-1) * scale
    e = (edge_attr @ weight.reshape(H * D, F).t()).view(-1, H, D)  # [E, H, D], D < F
    return (q.index_select(0, dst) * e).sum(-1) * scale


def value_sum(alpha: Tensor, edge_attr: Tensor, weight: Tensor, dst: Tensor, n_dst: int) -> Tensor:
    r"""``out[i, h] = W^h sum_{j -> i} alpha^h_ij a_ij``: the edge part of the attention output.

    **Shapes:** ``alpha [E, H]``, ``edge_attr [E, F]``, ``weight [H, D, F]``, ``dst [E]``
    -> ``[N_dst, H, D]``.
    """
    H, D, F = weight.shape
    if F <= D:
        s = alpha.new_zeros(n_dst, H, F).index_add_(0, dst, alpha.unsqueeze(-1) *
                                                     edge_attr.unsqueeze(1))
        return torch.einsum("nhf,hdf->nhd", s, weight)
    e = (edge_attr @ weight.reshape(H * D, F).t()).view(-1, H, D)
    return alpha.new_zeros(n_dst, H, D).index_add_(0, dst, alpha.unsqueeze(-1) * e)


def embed(edge_attr: Tensor, weight: Tensor) -> Tensor:
    """The edge embeddings e_ij themselves, for the message-passing form (explain, hooks).

    **Shapes:** ``edge_attr [E, F]``, ``weight [H, D, F]`` -> ``[E, H, D]``.
    """
    H, D, F = weight.shape
    return (edge_attr @ weight.reshape(H * D, F).t()).view(-1, H, D)
