"""Edge features inside attention without ``[E, H, D]`` temporaries: the algebra that lets
TransformerConv-style edge embeddings run on the fast kernels.

Notation: N_dst target nodes, E edges j -> i, H heads, D per-head width, F edge-feature width,
a_e the features of edge e = (j -> i), W^h ``[D, F]`` the per-head edge projection, e^h = W^h a_e.

TransformerConv adds the projected edge features to the keys and to the values of every edge:

    s^h_ij   = q^h_i . (k^h_j + e^h_ij) * c  =  q^h_i . k^h_j * c  +  u^h_i . a_ij * c,  u^h_i = (W^h)^T q^h_i
    out^h_i  = sum_j alpha^h_ij (v^h_j + e^h_ij) =  sum_j alpha^h_ij v^h_j  +  W^h S^h_i,
    S^h_i    = sum_{j -> i} alpha^h_ij a_ij

so the key part is a per-edge, per-head scalar bias (the kernels take ``edge_bias [E, H]``) and the
value part a per-node sum. Both are one sparse product with the matrix M ``[H N_dst, E]`` whose row
``h N_dst + i`` holds the incoming edges of target i (column = edge, value = a per-edge scalar):

    bias = SDDMM(M, U, A^T)       (sampled: u^h_i . a_e on M's entries)     U: [H N_dst, F]
    S    = M(alpha) @ A           (sparse @ dense)                          A: [E, F]

with their backwards the other product (dU = M(d bias) @ A, d alpha = SDDMM(M, dS, A^T)). Per-edge
memory is ``[H E]`` scalars; a gradient for ``a`` itself (rare: edge features are usually inputs)
is gathered per edge. On 2 CPU cores, E = 50k, H = 4, F = 16, the SDDMM took 0.9 ms against 11 ms
for the gather-multiply-sum and the sparse product 1.7 ms against 7.6 ms for the scatter
(``experiments/bench_transformer_conv.py`` figures are end to end, see docs/pyg.md).
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch
from torch import Tensor

from gnn_attention.attention.kernels.plan import cached


@dataclass(frozen=True)
class EdgeMatrix:
    """M's structure: ``crow [H N_dst + 1]``, ``col [H E]`` (edge ids, ascending in each row),
    ``dst [E]`` (target of each edge, caller's order), ``order [E]`` (the edge at each of M's
    per-head positions) or None when the edges are already sorted by target."""

    crow: Tensor
    col: Tensor
    dst: Tensor
    order: Optional[Tensor]
    H: int
    n_dst: int
    E: int

    def matrix(self, values: Tensor) -> Tensor:
        with warnings.catch_warnings():  # "sparse CSR support is in beta": checked by tests
            warnings.simplefilter("ignore")
            return torch.sparse_csr_tensor(self.crow, self.col, values, (self.H * self.n_dst, self.E),
                                           check_invariants=False)

    def to_matrix_order(self, x: Tensor) -> Tensor:
        """``[E, H]`` per-edge values (caller's order) -> ``[H E]`` in M's entry order."""
        x = x if self.order is None else x.index_select(0, self.order)
        return x.t().reshape(-1)

    def from_matrix_order(self, vals: Tensor) -> Tensor:
        """``[H E]`` in M's entry order -> ``[E, H]`` in the caller's order."""
        x = vals.view(self.H, self.E).t()
        if self.order is None:
            return x
        return torch.empty_like(x).index_copy_(0, self.order, x)


def build(dst: Tensor, n_dst: int, H: int) -> EdgeMatrix:
    """M for the targets ``dst [E]`` (host-side numpy sort, as the CSR kernel's structure)."""
    d = dst.detach().cpu().numpy()
    E = d.size
    order = None
    if E > 1 and bool((d[1:] < d[:-1]).any()):
        order = np.argsort(d, kind="stable")  # stable: edge ids ascend within each row
    counts = np.bincount(d, minlength=n_dst)
    crow1 = np.concatenate([[0], np.cumsum(counts)])
    heads = np.arange(H).reshape(H, 1)
    crow = np.concatenate([(crow1[:-1].reshape(1, -1) + E * heads).ravel(), [H * E]])
    col = np.tile(np.arange(E) if order is None else order, H)
    idx = np.int32 if max(H * E, H * n_dst) < 2**31 - 1 else np.int64
    dev = dst.device
    return EdgeMatrix(torch.from_numpy(crow.astype(idx)).to(dev),
                      torch.from_numpy(col.astype(idx)).to(dev), dst,
                      None if order is None else torch.from_numpy(order).to(dev), H, n_dst, E)


def edge_matrix(graph, dst: Tensor, n_dst: int, H: int) -> EdgeMatrix:
    """:func:`build`, memoised on a TokenGraph (every layer sharing the graph reuses it)."""
    return cached(graph, ("edge_features", H), lambda: build(dst, n_dst, H))


def _sddmm(m: EdgeMatrix, x: Tensor, a: Tensor) -> Tensor:
    """``[H E]``: ``x[h N + i] . a[e]`` on M's entries (x: ``[H N_dst, F]``, a: ``[E, F]``)."""
    return torch.sparse.sampled_addmm(m.matrix(x.new_zeros(m.H * m.E)), x, a.t(),
                                      beta=0.0).values()


def _gather_grad_a(m: EdgeMatrix, w_vals: Tensor, x: Tensor) -> Tensor:
    """``[E, F]``: ``sum_h w[h, e] x[h N + dst_e]``, the gradient for the edge features."""
    w = m.from_matrix_order(w_vals)  # [E, H]
    rows = m.dst.unsqueeze(1) + m.n_dst * torch.arange(m.H, device=x.device)  # [E, H]
    return (w.unsqueeze(-1) * x[rows]).sum(1)


class KeyBias(torch.autograd.Function):
    """``(u [H N_dst, F], a [E, F]) -> [H E]`` = SDDMM(M, u, a^T)."""

    @staticmethod
    def forward(ctx, u, a, m: EdgeMatrix):
        ctx.save_for_backward(u, a)
        ctx.m = m
        return _sddmm(m, u, a)

    @staticmethod
    def backward(ctx, g):
        u, a = ctx.saved_tensors
        m = ctx.m
        du = m.matrix(g) @ a if ctx.needs_input_grad[0] else None
        da = _gather_grad_a(m, g, u) if ctx.needs_input_grad[1] else None
        return du, da, None


class ValueSum(torch.autograd.Function):
    """``(alpha [H E] in M's order, a [E, F]) -> S [H N_dst, F]`` = M(alpha) @ a."""

    @staticmethod
    def forward(ctx, vals, a, m: EdgeMatrix):
        ctx.save_for_backward(vals, a)
        ctx.m = m
        return m.matrix(vals) @ a

    @staticmethod
    def backward(ctx, g):
        vals, a = ctx.saved_tensors
        m = ctx.m
        g = g.contiguous()
        dvals = _sddmm(m, g, a) if ctx.needs_input_grad[0] else None
        da = _gather_grad_a(m, vals, g) if ctx.needs_input_grad[1] else None
        return dvals, da, None


def key_bias(q: Tensor, edge_attr: Tensor, weight: Tensor, m: EdgeMatrix, scale: float) -> Tensor:
    r"""``bias[e, h] = scale * q^h_i . (W^h a_e)`` for every edge e = j -> i (caller's order).

    **Shapes:** ``q [N_dst, H, D]``, ``edge_attr [E, F]``, ``weight [H, D, F]`` -> ``[E, H]``.
    """
    H, _, F = weight.shape
    u = torch.einsum("nhd,hdf->hnf", q, weight).reshape(H * q.size(0), F)  # (W^h)^T q^h_i
    return m.from_matrix_order(KeyBias.apply(u, edge_attr.contiguous(), m)) * scale


def value_sum(alpha: Tensor, edge_attr: Tensor, weight: Tensor, m: EdgeMatrix) -> Tensor:
    r"""``out[i, h] = W^h sum_{j -> i} alpha^h_ij a_ij``: the edge part of the attention output.

    **Shapes:** ``alpha [E, H]``, ``edge_attr [E, F]``, ``weight [H, D, F]`` -> ``[N_dst, H, D]``.
    """
    H, _, F = weight.shape
    s = ValueSum.apply(m.to_matrix_order(alpha), edge_attr.contiguous(), m)  # [H N_dst, F]
    return torch.einsum("hnf,hdf->nhd", s.view(H, m.n_dst, F), weight)


def embed(edge_attr: Tensor, weight: Tensor) -> Tensor:
    """The edge embeddings e_ij themselves, for the message-passing form (explain, hooks).

    **Shapes:** ``edge_attr [E, F]``, ``weight [H, D, F]`` -> ``[E, H, D]``.
    """
    H, D, F = weight.shape
    return (edge_attr @ weight.reshape(H * D, F).t()).view(-1, H, D)
