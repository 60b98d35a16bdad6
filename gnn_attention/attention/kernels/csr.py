"""Fused CSR kernel: attention on any graph without per-edge D-wide tensors.

Notation: N_dst targets, N_src sources, E edges, H heads, D query/key width, Dv value width.
The H heads are laid out block-diagonally: row ``h * N_dst + i`` of the ``[H N_dst, H N_src]``
sparse matrix A holds the incoming edges of target i for head h, so one sparse call serves all heads.

Forward (per head; A has the graph's sparsity, its values are per-edge scalars):

    s     = SDDMM(A, Q, K^T)        s_ij = q_i . k_j on the edges only   (sampled_addmm)
    s    += bias
    alpha = segment softmax of s over each row (target), max subtracted
    out   = A(alpha) @ V                                                  (sparse @ dense)

Backward (the softmax rule with delta_i = sum_j alpha_ij dalpha_ij):

    dV      = A(alpha)^T @ dOut
    dalpha  = SDDMM(A, dOut, V^T) + (gradient reaching alpha directly)
    ds      = alpha * (dalpha - delta_i)
    dQ = A(ds) @ K,   dK = A(ds)^T @ Q,   dbias = ds

Only ``[H E]`` scalars and ``[H N, D]`` node tensors are ever allocated (never ``[E, H, D]``), and
the sparse products run in PyTorch's CPU/GPU sparse kernels. The transposed structure (edges sorted
by source) is precomputed once per graph and head count and cached on the graph.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from gnn_attention.attention.kernels.plan import cached, connect
from gnn_attention.graphs import TokenGraph


@dataclass(frozen=True)
class Structure:
    """The graph as a block-diagonal (over heads) CSR matrix and its transpose.

    ``crow [H N_dst + 1]``, ``col [H E]``: A in CSR form (edges sorted by (head, target, source));
    ``row [H E]``: the target row of each entry; ``crow_t [H N_src + 1]``, ``col_t [H E]``, ``perm_t
    [H E]``: A^T in CSR form and, for each of its entries, the position of the same edge in A;
    ``order [E]`` / ``inv [E]`` (None when the graph is already sorted): the user edge at each CSR
    position / the CSR position of each user edge.
    """

    crow: Tensor
    col: Tensor
    row: Tensor
    crow_t: Tensor
    col_t: Tensor
    perm_t: Tensor
    order: Tensor | None
    inv: Tensor | None
    H: int
    n_dst: int
    n_src: int
    E: int

    def matrix(self, values: Tensor, transpose: bool = False) -> Tensor:
        """A (or A^T) with the given ``[H E]`` values (in A's, resp. A^T's, entry order)."""
        H = self.H
        with warnings.catch_warnings():  # "sparse CSR support is in beta": known, checked by tests
            warnings.simplefilter("ignore")
            if transpose:
                return torch.sparse_csr_tensor(self.crow_t, self.col_t, values,
                                               (H * self.n_src, H * self.n_dst),
                                               check_invariants=False)
            return torch.sparse_csr_tensor(self.crow, self.col, values,
                                           (H * self.n_dst, H * self.n_src), check_invariants=False)


def _ptr(counts: np.ndarray) -> np.ndarray:
    return np.concatenate([[0], np.cumsum(counts)])


def build(edge_index: Tensor, n_dst: int, n_src: int, H: int, is_sorted: bool) -> Structure:
    """The block-diagonal CSR structure of ``edge_index`` for H heads (O(E H) integers).

    Built once per graph on the host with numpy, then moved to the edges' device: numpy's
    single-threaded sort and counts took ~1/100 of the time of torch's parallel ones for E ~ 1e5
    on 2 shared cores (``gnn-attention bench``, P8 preprocessing).
    """
    ei = edge_index.detach().cpu().numpy()
    src, dst = ei[0], ei[1]
    E = src.size
    order = inv = None
    if not is_sorted:  # CSR needs edges grouped by target; the user's order is restored on output
        order = np.argsort(dst * max(n_src, 1) + src, kind="stable")
        src, dst = src[order], dst[order]
        inv = np.empty_like(order)
        inv[order] = np.arange(E)
    heads = np.arange(H).reshape(H, 1)
    crow1 = _ptr(np.bincount(dst, minlength=n_dst))
    crow = np.concatenate([(crow1[:-1].reshape(1, -1) + E * heads).ravel(), [H * E]])
    col = (src.reshape(1, -1) + n_src * heads).ravel()
    row = (dst.reshape(1, -1) + n_dst * heads).ravel()
    # A^T: edges sorted by source; stable, so targets stay ascending inside each source row.
    perm_t = (np.argsort(src, kind="stable").reshape(1, -1) + E * heads).ravel()
    crow_t1 = _ptr(np.bincount(src, minlength=n_src))
    crow_t = np.concatenate([(crow_t1[:-1].reshape(1, -1) + E * heads).ravel(), [H * E]])
    col_t = row[perm_t]
    small = max(H * E, H * n_dst, H * n_src) < 2**31 - 1
    idx = np.int32 if small else np.int64  # int32 CSR indices halve the structure's memory

    def t(a, dtype=np.int64):
        return None if a is None else torch.from_numpy(a.astype(dtype)).to(edge_index.device)
    return Structure(t(crow, idx), t(col, idx), t(row), t(crow_t, idx), t(col_t, idx), t(perm_t),
                     t(order), t(inv), H, n_dst, n_src, E)


def structure(graph, edge_index: Tensor, n_dst: int, n_src: int, H: int) -> Structure:
    """``build`` memoised on a TokenGraph (its edges are already sorted by (target, source))."""
    is_graph = isinstance(graph, TokenGraph)
    return cached(graph, ("csr", H),
                  lambda: build(edge_index, n_dst, n_src, H, is_sorted=is_graph))


def _sddmm(st: Structure, a: Tensor, b: Tensor) -> Tensor:
    """``[H E]`` values ``a_i . b_j`` on the edges (a: ``[H N_dst, D]``, b: ``[H N_src, D]``)."""
    pattern = st.matrix(a.new_zeros(st.H * st.E))
    return torch.sparse.sampled_addmm(pattern, a, b.t(), beta=0.0).values()


def _segment_softmax(s: Tensor, st: Structure) -> Tensor:
    """Softmax of ``s [H E]`` within each row; rows with no finite score get weight 0."""
    rows = st.H * st.n_dst
    m = s.new_full((rows,), float("-inf")).scatter_reduce(0, st.row, s, "amax", include_self=True)
    m = m.masked_fill(m == float("-inf"), 0.0)
    e = (s - m[st.row]).exp()
    z = s.new_zeros(rows).index_add_(0, st.row, e)
    z = torch.where(z > 0, z, torch.ones_like(z))  # only where every numerator is exactly 0
    return e / z[st.row]


class CSRAttention(torch.autograd.Function):
    """``(qh, kh, vh, bias) -> (out [H N_dst, Dv], alpha [H E])`` with the backward above."""

    @staticmethod
    def forward(ctx, qh, kh, vh, bias, st: Structure):
        s = _sddmm(st, qh, kh)
        if bias is not None:
            s = s + bias
        alpha = _segment_softmax(s, st)
        out = st.matrix(alpha) @ vh
        ctx.save_for_backward(qh, kh, vh, alpha)
        ctx.st = st
        return out, alpha

    @staticmethod
    def backward(ctx, d_out, d_alpha):
        qh, kh, vh, alpha = ctx.saved_tensors
        st = ctx.st
        d_out = d_out.contiguous()
        dp = _sddmm(st, d_out, vh) + d_alpha
        delta = alpha.new_zeros(st.H * st.n_dst).index_add_(0, st.row, alpha * dp)
        ds = alpha * (dp - delta[st.row])
        need = ctx.needs_input_grad
        dq = st.matrix(ds) @ kh if need[0] else None
        dk = st.matrix(ds[st.perm_t], transpose=True) @ qh if need[1] else None
        dv = st.matrix(alpha[st.perm_t], transpose=True) @ d_out if need[2] else None
        return dq, dk, dv, (ds if need[3] else None), None


def _heads_first(x: Tensor) -> Tensor:
    """``[N, H, D] -> [H N, D]`` (contiguous: the sparse kernels need dense row-major operands)."""
    return x.transpose(0, 1).reshape(-1, x.size(-1))


def attention(qp: Tensor, k: Tensor, v: Tensor, graph, edge_index: Tensor,
              edge_bias: Tensor | None):
    """Attention of prepared queries ``qp`` (``score(q, k) = qp . k``) over the graph's edges.

    Inputs are in the compute dtype (float32 or float64). Returns ``out [N_dst, H, Dv]`` and
    ``alpha [E, H]`` in the order of ``edge_index``.

    **Shapes:** qp ``[N_dst, H, D]``, k ``[N_src, H, D]``, v ``[N_src, H, Dv]``, edge_index
    ``[2, E]``, edge_bias ``[E, H]`` or ``[E, 1]``.
    """
    n_dst, H, n_src, E = qp.size(0), qp.size(1), k.size(0), edge_index.size(1)
    if E == 0:  # no edge at all: every target outputs zero (sparse kernels dislike nnz = 0)
        out = qp.new_zeros(n_dst, H, v.size(-1)) + connect(qp, k, v, edge_bias)
        return out, qp.new_zeros(0, H)
    st = structure(graph, edge_index, n_dst, n_src, H)
    bias = None
    if edge_bias is not None:
        b = edge_bias.to(qp.dtype).expand(E, H)
        b = b if st.order is None else b.index_select(0, st.order)
        bias = b.t().reshape(-1)
    out, alpha = CSRAttention.apply(_heads_first(qp), _heads_first(k), _heads_first(v), bias, st)
    out = out.view(H, n_dst, -1).transpose(0, 1)
    alpha = alpha.view(H, E).t()
    if st.inv is not None:
        alpha = alpha.index_select(0, st.inv)
    return out, alpha


def estimate(n_dst: int, n_src: int, E: int, H: int, D: int, Dv: int, itemsize: int) -> int:
    """Bytes of the kernel's temporaries: edge scalars (scores, weights, gradients), the cached
    structure (int32/int64 indices) and head-major copies of the node tensors."""
    edge = H * E * (6 * itemsize + 3 * 8 + 2 * 4)
    nodes = H * (2 * n_dst * D + 2 * n_src * D + 2 * n_src * Dv + 2 * n_dst * Dv) * itemsize
    return edge + nodes
