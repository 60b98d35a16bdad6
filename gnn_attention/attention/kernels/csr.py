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
by source) is precomputed once per graph and head count and cached on the graph. Forward, backward
and the structure build are ``torch.library`` custom ops with fake (shape-only) implementations and
a registered autograd formula, so ``torch.compile(fullgraph=True)`` traces through the kernel.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from gnn_attention.attention.kernels.plan import cached, connect
from gnn_attention.graphs import TokenGraph
from gnn_attention.graphs.sorting import stable_argsort


@dataclass(frozen=True)
class Structure:
    """The graph as a block-diagonal (over heads) CSR matrix and its transpose.

    ``crow [H N_dst + 1]``, ``col [H E]``: A in CSR form (edges sorted by (head, target, source));
    ``row [H E]``: the target row of each entry; ``crow_t [H N_src + 1]``, ``col_t [H E]``, ``perm_t
    [H E]``: A^T in CSR form and, for each of its entries, the position of the same edge in A;
    ``order [E]`` / ``inv [E]`` (None when the graph is already sorted): the user edge at each CSR
    position / the CSR position of each user edge. The sizes follow from the shapes and H.
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

    @property
    def n_dst(self) -> int:
        return (self.crow.numel() - 1) // self.H

    @property
    def n_src(self) -> int:
        return (self.crow_t.numel() - 1) // self.H

    @property
    def E(self) -> int:
        return self.col.numel() // self.H

    @property
    def tensors(self) -> tuple:
        """The six CSR index tensors, in the order the custom ops take them."""
        return self.crow, self.col, self.row, self.crow_t, self.col_t, self.perm_t

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


def _index_dtype(n_dst: int, n_src: int, E: int, H: int) -> torch.dtype:
    """int32 CSR indices (half the structure's memory) whenever every index fits."""
    return torch.int32 if max(H * E, H * n_dst, H * n_src) < 2**31 - 1 else torch.int64


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
        order = stable_argsort(dst * max(n_src, 1) + src)
        src, dst = src[order], dst[order]
        inv = np.empty_like(order)
        inv[order] = np.arange(E)
    heads = np.arange(H).reshape(H, 1)
    crow1 = _ptr(np.bincount(dst, minlength=n_dst))
    crow = np.concatenate([(crow1[:-1].reshape(1, -1) + E * heads).ravel(), [H * E]])
    col = (src.reshape(1, -1) + n_src * heads).ravel()
    row = (dst.reshape(1, -1) + n_dst * heads).ravel()
    # A^T: edges sorted by source; stable, so targets stay ascending inside each source row.
    perm_t = (stable_argsort(src).reshape(1, -1) + E * heads).ravel()
    crow_t1 = _ptr(np.bincount(src, minlength=n_src))
    crow_t = np.concatenate([(crow_t1[:-1].reshape(1, -1) + E * heads).ravel(), [H * E]])
    col_t = row[perm_t]
    idx = _index_dtype(n_dst, n_src, E, H)

    def t(a, dtype=torch.int64):
        return None if a is None else torch.from_numpy(a).to(edge_index.device, dtype)
    return Structure(t(crow, idx), t(col, idx), t(row), t(crow_t, idx), t(col_t, idx), t(perm_t),
                     t(order), t(inv), H)


# The CSR kernel as torch.library custom ops: torch.compile sees three opaque operators with
# shape-only fake implementations, and never traces into numpy or sparse tensors.


@torch.library.custom_op("gnn_attention::csr_structure", mutates_args=())
def _structure_op(edge_index: Tensor, n_dst: int, n_src: int, H: int,
                  is_sorted: bool) -> list[Tensor]:
    st = build(edge_index, n_dst, n_src, H, is_sorted)
    empty = edge_index.new_zeros(0)
    return list(st.tensors) + \
        [empty if st.order is None else st.order, empty if st.inv is None else st.inv]


@_structure_op.register_fake
def _(edge_index, n_dst, n_src, H, is_sorted):
    E = edge_index.size(1)
    idx = _index_dtype(n_dst, n_src, E, H)
    new = lambda n, dtype=torch.int64: edge_index.new_empty(n, dtype=dtype)
    m = 0 if is_sorted else E
    return [new(H * n_dst + 1, idx), new(H * E, idx), new(H * E), new(H * n_src + 1, idx),
            new(H * E, idx), new(H * E), new(m), new(m)]


def structure(graph, edge_index: Tensor, n_dst: int, n_src: int, H: int) -> Structure:
    """``build`` memoised on a TokenGraph (its edges are already sorted by (target, source));
    for a raw ``edge_index`` under ``torch.compile``, the structure custom op."""
    if isinstance(graph, TokenGraph):
        return cached(graph, ("csr", H), lambda: build(edge_index, n_dst, n_src, H, True))
    if not torch.compiler.is_compiling():
        return build(edge_index, n_dst, n_src, H, is_sorted=False)
    *ts, order, inv = _structure_op(edge_index, n_dst, n_src, H, False)
    return Structure(*ts, order, inv, H)


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


@torch.library.custom_op("gnn_attention::csr_attention", mutates_args=())
def _forward_op(qh: Tensor, kh: Tensor, vh: Tensor, bias: Tensor | None, crow: Tensor,
                col: Tensor, row: Tensor, crow_t: Tensor, col_t: Tensor, perm_t: Tensor,
                H: int) -> tuple[Tensor, Tensor]:
    """``(qh, kh, vh, bias) -> (out [H N_dst, Dv], alpha [H E])``: the forward above."""
    st = Structure(crow, col, row, crow_t, col_t, perm_t, None, None, H)
    s = _sddmm(st, qh, kh)
    if bias is not None:
        s = s + bias
    alpha = _segment_softmax(s, st)
    return st.matrix(alpha) @ vh, alpha


@_forward_op.register_fake
def _(qh, kh, vh, bias, crow, col, row, crow_t, col_t, perm_t, H):
    return qh.new_empty(crow.numel() - 1, vh.size(1)), qh.new_empty(col.numel())


@torch.library.custom_op("gnn_attention::csr_attention_backward", mutates_args=())
def _backward_op(d_out: Tensor, d_alpha: Tensor, qh: Tensor, kh: Tensor, vh: Tensor,
                 alpha: Tensor, crow: Tensor, col: Tensor, row: Tensor, crow_t: Tensor,
                 col_t: Tensor, perm_t: Tensor, H: int) -> list[Tensor]:
    """``(dq, dk, dv, dbias)`` by the softmax rule in the module docstring."""
    st = Structure(crow, col, row, crow_t, col_t, perm_t, None, None, H)
    d_out = d_out.contiguous()
    dp = _sddmm(st, d_out, vh) + d_alpha
    delta = alpha.new_zeros(st.H * st.n_dst).index_add_(0, st.row, alpha * dp)
    ds = alpha * (dp - delta[st.row])
    dq = st.matrix(ds) @ kh
    dk = st.matrix(ds[st.perm_t], transpose=True) @ qh
    dv = st.matrix(alpha[st.perm_t], transpose=True) @ d_out
    return [dq, dk, dv, ds]


@_backward_op.register_fake
def _(d_out, d_alpha, qh, kh, vh, alpha, crow, col, row, crow_t, col_t, perm_t, H):
    return [torch.empty_like(qh), torch.empty_like(kh), torch.empty_like(vh),
            torch.empty_like(alpha)]


def _setup_context(ctx, inputs, output):
    qh, kh, vh, bias, *index, H = inputs
    ctx.save_for_backward(qh, kh, vh, output[1], *index)
    ctx.H, ctx.has_bias = H, bias is not None


def _backward(ctx, d_out, d_alpha):
    qh, kh, vh, alpha, *index = ctx.saved_tensors
    d_out = torch.zeros(qh.size(0), vh.size(1), dtype=qh.dtype, device=qh.device) \
        if d_out is None else d_out
    d_alpha = torch.zeros_like(alpha) if d_alpha is None else d_alpha
    dq, dk, dv, ds = _backward_op(d_out, d_alpha, qh, kh, vh, alpha, *index, ctx.H)
    return (dq, dk, dv, ds if ctx.has_bias else None) + (None,) * 7


_forward_op.register_autograd(_backward, setup_context=_setup_context)


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
    sorted_ = st.order is None or st.order.numel() == 0
    bias = None
    if edge_bias is not None:
        b = edge_bias.to(qp.dtype).expand(E, H)
        b = b if sorted_ else b.index_select(0, st.order)
        bias = b.t().reshape(-1)
    out, alpha = _forward_op(_heads_first(qp), _heads_first(k), _heads_first(v), bias,
                             *st.tensors, H)
    out = out.view(H, n_dst, -1).transpose(0, 1)
    alpha = alpha.view(H, E).t()
    if not sorted_:
        alpha = alpha.index_select(0, st.inv)
    return out, alpha


def estimate(n_dst: int, n_src: int, E: int, H: int, D: int, Dv: int, itemsize: int) -> int:
    """Bytes of the kernel's temporaries: edge scalars (scores, weights, gradients), the cached
    structure (int32/int64 indices) and head-major copies of the node tensors."""
    edge = H * E * (6 * itemsize + 3 * 8 + 2 * 4)
    nodes = H * (2 * n_dst * D + 2 * n_src * D + 2 * n_src * Dv + 2 * n_dst * Dv) * itemsize
    return edge + nodes
