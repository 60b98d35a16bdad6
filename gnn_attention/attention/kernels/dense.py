"""Dense kernel: graphs made of complete or causal blocks run as 4-D SDPA.

Notation: B sequences, T_b / S_b target / source lengths, T = max T_b, S = max S_b, H heads,
D query/key width, Dv value width, E edges, Hb = 1 or H (heads of the edge bias).

A disjoint union of B complete (or causal) bipartite blocks is exactly
``F.scaled_dot_product_attention`` on ``[B, H, T, S]`` tensors:

* equal lengths: the packed ``[B T, H, D]`` node tensor *is* ``[B, T, H, D]``; a transpose (a view,
  no copy) gives SDPA's layout. Full and cross graphs need no mask; causal graphs whose alignment
  matches SDPA's (top-left, or bottom-right with T = S) use ``is_causal=True``; others a [T, S] mask.
* unequal lengths: nodes are gathered into a padded ``[B, T, H, D]`` and the graph's own
  edges become the boolean mask (True = allowed, SDPA's convention). Padded keys are never allowed;
  padded query rows are computed and dropped. One padded call was faster here than one SDPA call per
  distinct length (``gnn-attention bench``, pattern P6).
* any other graph (pinned ``backend="dense"``): the same padded layout with the edge mask.

``edge_bias [E, Hb]`` becomes an additive float mask ``[B, Hb, T, S]`` (-inf off the graph), so
SDPA sees ``q.k * scale + bias_ij`` exactly where the graph has an edge. Fully masked rows come out
of SDPA as zeros (its safe softmax), matching the library's rule.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from gnn_attention.attention.kernels.plan import DENSE_PATTERNS, cached, connect, lengths
from gnn_attention.graphs import TokenGraph
from gnn_attention.graphs.positions import sequence_and_position


@dataclass(frozen=True)
class Layout:
    """How the graph's nodes and edges sit in ``[B, T, S]`` (cached per graph).

    ``dst_gather [B T]`` / ``src_gather [B S]``: node read into each padded slot (padding reads node
    0: its keys are masked and its query rows dropped), ``dst_slot [N_dst]``: slot ``b T + t`` of
    each target; all None when lengths are equal (the packed tensor already is that layout);
    ``mask``: bool ``[B or 1, 1, T or 1, S]`` (True = allowed) or None.
    """

    B: int
    T: int
    S: int
    is_causal: bool
    mask: Tensor | None
    dst_gather: Tensor | None
    src_gather: Tensor | None
    dst_slot: Tensor | None


def _edge_pos(graph, edge_index: Tensor | None, B: int, T: int, S: int) -> Tensor:
    """Flat position ``(b T + t) S + s`` of every edge in ``[B, T, S]`` (``edge_index``: the edges
    of a raw tensor; a TokenGraph is asked for its own)."""
    if not isinstance(graph, TokenGraph):
        return edge_index[1] * S + edge_index[0]
    src, dst = graph.edge_index
    b, t = sequence_and_position(graph.dst_ptr, dst)
    return (b * T + t) * S + (src - graph.src_ptr[b])


def _sdpa_causal(graph, T: int, S: int) -> bool:
    """True when the graph's causal blocks are SDPA's ``is_causal`` triangle (top-left s <= t)."""
    align = graph.pattern.params[0] if graph.pattern.params else "top_left"
    return align == "top_left" or T == S


def _build(graph, edge_index: Tensor | None, n_dst: int, n_src: int) -> Layout:
    if not isinstance(graph, TokenGraph):  # a raw edge_index: one sequence, mask = the edges
        B, T, S, uniform, name, dev = 1, n_dst, n_src, True, "custom", edge_index.device
    else:
        n = lengths(graph)
        B, T, S, uniform, name = n.B, n.T_max, n.S_max, n.uniform, graph.pattern.name
        dev = graph.device
    is_causal, mask = False, None
    if name in DENSE_PATTERNS and uniform:
        if name in ("causal", "cross_causal"):
            if _sdpa_causal(graph, T, S):
                is_causal = True  # SDPA's is_causal is the top-left triangle s <= t
            else:
                mask = torch.ones(T, S, dtype=torch.bool, device=dev).tril(S - T).view(1, 1, T, S)
    elif name in ("full", "cross"):  # complete blocks: a key-padding mask, queries broadcast
        s_len = graph.src_lengths.to(dev)
        mask = (torch.arange(S, device=dev).view(1, S) < s_len.view(B, 1)).view(B, 1, 1, S)
    else:  # the only layout that reads the edges one by one
        flat = torch.zeros(B * T * S, dtype=torch.bool, device=dev)
        flat[_edge_pos(graph, edge_index, B, T, S)] = True  # edges form a set (validated)
        mask = flat.view(B, 1, T, S)
    if uniform:
        return Layout(B, T, S, is_causal, mask, None, None, None)
    dst_b, dst_t = sequence_and_position(graph.dst_ptr, torch.arange(n_dst, device=dev))
    return Layout(B, T, S, is_causal, mask, _gather_index(graph.dst_ptr, T),
                  _gather_index(graph.src_ptr, S), dst_b * T + dst_t)


def _gather_index(ptr: Tensor, width: int) -> Tensor:
    """``[B width]``: the node in slot (b, t) of a padded layout, 0 for padding slots."""
    t = torch.arange(width, device=ptr.device).view(1, -1)
    node = ptr[:-1].view(-1, 1) + t
    return torch.where(t < ptr.diff().view(-1, 1), node, 0).flatten()


def layout(graph, edge_index: Tensor | None, n_dst: int, n_src: int) -> Layout:
    return cached(graph, "dense", lambda: _build(graph, edge_index, n_dst, n_src))


def prepare(graph, n_dst: int, n_src: int, dtype: torch.dtype, with_bias: bool) -> None:
    """Build (and cache) everything :func:`attention` reads for this graph, dtype and bias, so a
    compiled call finds it on the graph instead of building it inside the traced graph."""
    lay = layout(graph, None, n_dst, n_src)
    if lay.mask is not None:
        _additive(graph, lay.mask, dtype)
    if with_bias and not _row_major(graph, lay, graph.num_edges):  # else: no edge is read
        cached(graph, "dense_edge_pos", lambda: _edge_pos(graph, None, lay.B, lay.T, lay.S))


def _to_bhtd(x: Tensor, B: int, T: int, gather: Tensor | None) -> Tensor:
    """``[N, H, D] -> [B, H, T, D]``: a view for equal lengths, one padded gather otherwise."""
    if gather is not None:
        x = x.index_select(0, gather)
    return x.view(B, T, x.size(1), x.size(2)).transpose(1, 2)


def _additive(graph, mask: Tensor, dtype: torch.dtype) -> Tensor:
    """The boolean mask as 0 / -inf in ``dtype``, cached: SDPA would convert it at every call."""
    return cached(graph, ("dense_mask", dtype),
                  lambda: torch.zeros(mask.shape, dtype=dtype, device=mask.device)
                  .masked_fill(~mask, float("-inf")))


def attention(q: Tensor, k: Tensor, v: Tensor, graph, edge_index: Tensor | None,
              edge_bias: Tensor | None, scale: float, dropout_p: float = 0.0) -> Tensor:
    """``out [N_dst, H, Dv]`` = SDPA over the graph's blocks, with ``score(q, k) = scale q.k``;
    ``dropout_p`` drops each weight alpha_ij with probability p and scales the rest by 1/(1-p)
    (SDPA's own dropout, applied to padded slots too, whose weights are already zero).

    **Shapes:** q ``[N_dst, H, D]``, k ``[N_src, H, D]``, v ``[N_src, H, Dv]``, edge_bias
    ``[E, H]`` or ``[E, 1]``.
    """
    n_dst, H, Dv = q.size(0), q.size(1), v.size(-1)
    lay = layout(graph, edge_index, n_dst, k.size(0))
    B, T, S = lay.B, lay.T, lay.S
    if B * T == 0 or S == 0:  # nothing to attend to: every output row is zero
        return q.new_zeros(n_dst, H, Dv) + connect(q, k, v)
    mask, is_causal = lay.mask, lay.is_causal
    if mask is not None:
        mask = _additive(graph, mask, q.dtype)
    if edge_bias is not None and _row_major(graph, lay, edge_bias.size(0)):
        # complete blocks of equal lengths: edge e (sorted by (b, t, s)) is slot e of [B, T, S]
        mask = edge_bias.view(B, T, S, edge_bias.size(1)).permute(0, 3, 1, 2)
    elif edge_bias is not None:  # -inf everywhere, the bias on the edges
        Hb = edge_bias.size(1)
        pos = cached(graph, "dense_edge_pos", lambda: _edge_pos(graph, edge_index, B, T, S))
        fm = q.new_full((B * T * S, Hb), float("-inf")).index_put((pos,), edge_bias)
        mask, is_causal = fm.view(B, T, S, Hb).permute(0, 3, 1, 2), False
    q4 = _to_bhtd(q, B, T, lay.dst_gather)
    k4, v4 = _to_bhtd(k, B, S, lay.src_gather), _to_bhtd(v, B, S, lay.src_gather)
    out = F.scaled_dot_product_attention(q4, k4, v4, attn_mask=mask, dropout_p=dropout_p,
                                         is_causal=is_causal, scale=scale)
    out = out.transpose(1, 2).reshape(B * T, H, Dv)  # a view: SDPA allocates [B, T, H, Dv]
    return out if lay.dst_slot is None else out.index_select(0, lay.dst_slot)


def _row_major(graph, lay: Layout, num_bias: int) -> bool:
    """True when the edges are every (b, t, s) slot in order: a full or cross graph of equal
    lengths (no padding, no mask), so a per-edge bias already is the ``[B, T, S, Hb]`` mask."""
    return (isinstance(graph, TokenGraph) and graph.pattern.name in ("full", "cross")
            and lay.mask is None and lay.dst_gather is None and num_bias == lay.B * lay.T * lay.S)


def estimate(graph, n_dst: int, n_src: int, H: int, D: int, Dv: int, itemsize: int,
             bias_heads: int, dropout: bool = False) -> int:
    """Bytes: padded copies, the mask (bool, or float with a bias) and, in float64 or with dropout
    where SDPA runs its math path, the ``[B, H, T, S]`` scores, weights and dropout mask."""
    if isinstance(graph, TokenGraph):
        n = lengths(graph)
        B, T, S = n.B, n.T_max, n.S_max
    else:
        B, T, S = 1, n_dst, n_src
    total = B * H * (2 * T * D + S * D + S * Dv + 2 * T * Dv) * itemsize + B * T * S
    if bias_heads:
        total += 3 * B * bias_heads * T * S * itemsize
    if itemsize >= 8 or dropout:
        total += 3 * B * H * T * S * itemsize
    return total
