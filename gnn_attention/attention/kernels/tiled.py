"""Tiled kernel: sliding windows (plain, causal, dilated) as SDPA on band tiles.

Notation: B sequences of equal length T, H heads, D / Dv widths, w window (distance in tokens),
d dilation, a / b how many neighbours a query sees before / after itself (a = w // d; b = a, or 0
when causal), n = ceil(T / d) tokens per residue class, K tile height (queries per tile),
L = K + a + b tile width (keys per tile), G = B d subsequences, M = ceil(n / K) tiles per subsequence.

A dilated window only links tokens whose positions agree modulo d, so each sequence splits into d
residue classes (t = r + d u) and, inside one class, the graph is a plain band |u - u'| <= a (u' <= u
when causal). The band is cut into tiles of K consecutive queries; the keys a tile can reach are the
L = K + a + b positions around it. Every tile is one batch entry of a 4-D SDPA call

    q: [G M, H, K, D],   k, v: [G M, H, L, D],   mask: [G M, 1, K, L] (True = allowed)

so the work is G M K L ~ B T (2w/d + K) dot products instead of B T^2 for the dense mask. Queries
and keys are gathered into their tiles with one precomputed index each (out-of-range keys read
node 0 and are masked; keys near a tile border are copied into both tiles, (L / K) x the keys,
which keeps the backward a single index_add: an overlapping strided view would go through
autograd's generic as_strided backward, which was much slower here),
and outputs come back with one row gather. ``edge_bias`` becomes a float mask over
the tiles (-inf outside the graph).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from gnn_attention.attention.kernels.plan import cached, connect, lengths, window_params
from gnn_attention.graphs import TokenGraph

TILE = 64  # queries per tile (K): at T = 4096, w = 64, K = 32 was slower and K = 128 no faster


@dataclass(frozen=True)
class Tiles:
    """Gather indices and the mask of the tile layout (cached per graph).

    Each subsequence g owns P = (M + c) K buffer rows, c = ceil((a + b) / K): query u sits at row
    u, key u' at row u' + a, so tile j reads queries ``[jK, jK + K)`` and keys ``[jK, jK + L)``.
    The c trailing tiles of each subsequence are fully masked and ignored.
    ``q_idx [R K]`` / ``k_idx [R L]``: node read into each query / key slot of each tile (slots
    outside the sequence read node 0: they are masked, so any finite value serves); ``out_idx
    [N]``: query slot of each node; ``mask [R, 1, K, L]`` (R = G (M + c) tiles).
    """

    R: int
    K: int
    L: int
    q_idx: Tensor
    k_idx: Tensor
    out_idx: Tensor
    mask: Tensor


def check(graph) -> str | None:
    """None if the tiled kernel can run ``graph``, else the reason it cannot."""
    if not isinstance(graph, TokenGraph):
        return "it needs a TokenGraph built by graphs.window (a raw edge_index has no structure)"
    if window_params(graph) is None:
        return f"it runs window graphs only, this graph's pattern is {graph.pattern.name!r}"
    if graph.bipartite or not lengths(graph).uniform:
        return "it needs a batch of equal-length sequences (use backend='csr' for ragged batches)"
    return None


def _shape(graph: TokenGraph):
    w, causal, d = window_params(graph)
    T = lengths(graph).T_max
    a = w // d
    b = 0 if causal else a
    n = -(-T // d) if T else 0
    K = max(1, min(TILE, n))
    return T, d, a, b, n, K


def worthwhile(graph: TokenGraph) -> bool:
    """True when the tiles cover well under the dense T x T area (else masked dense SDPA wins)."""
    T, d, a, b, n, K = _shape(graph)
    return n > 0 and (K + a + b) * n * d <= 0.5 * T * T


def _build(graph: TokenGraph) -> Tiles:
    T, d, a, b, n, K = _shape(graph)
    B = lengths(graph).B
    M, L, G = -(-n // K), K + a + b, B * d
    c = -(-(a + b) // K)
    P, dev, N = (M + c) * K, graph.device, B * T
    g = torch.arange(G, device=dev).view(G, 1)
    seq, r = g // d, g % d
    p = torch.arange(P, device=dev).view(1, P)
    t = r + d * p                                              # query row p holds u = p
    q_idx = torch.where(t < T, seq * T + t, 0).flatten()
    s = r + d * (p - a)                                        # key row p holds u' = p - a
    k_idx = torch.where((p >= a) & (s < T), seq * T + s, 0).flatten()
    k_idx = torch.cat([k_idx, k_idx.new_zeros(L)])            # the last tile overhangs
    k_idx = k_idx.as_strided((G * (M + c), L), (K, 1)).flatten()  # tile j: rows jK .. jK + L
    j = torch.arange(M + c, device=dev).view(1, M + c, 1)
    u2 = j * K - a + torch.arange(L, device=dev).view(1, 1, L)  # key slot of tile j -> u'
    k_ok = (u2 >= 0) & (r.view(G, 1, 1) + d * u2 < T) & (j < M)
    cc = torch.arange(L, device=dev).view(1, L) - torch.arange(K, device=dev).view(K, 1)
    band = (cc >= 0) & (cc <= a + b)                           # u' - u in [-a, b]
    mask = (band.view(1, 1, K, L) & k_ok.view(G, M + c, 1, L)).view(G * (M + c), 1, K, L)
    node = torch.arange(N, device=dev)
    tt = node % max(T, 1)  # T = 0: no node
    out_idx = (node // max(T, 1) * d + tt % d) * P + tt // d
    return Tiles(G * (M + c), K, L, q_idx, k_idx, out_idx, mask)


def _edge_slots(graph: TokenGraph, tl: Tiles) -> Tensor:
    """Flat position of every edge in the ``[G (M + c), K, L]`` tile grid."""
    T, d, a, _, _, K = _shape(graph)
    if graph.num_edges == 0:  # also B = 0 or T = 0: no slot to address
        return torch.zeros(0, dtype=torch.long, device=graph.device)
    per_g = tl.R // (lengths(graph).B * d)  # M + c tiles per subsequence
    src, dst = graph.edge_index
    seq, t, s = dst // T, dst % T, src % T
    u, u2 = t // d, s // d
    g, j = seq * d + t % d, u // K
    return ((g * per_g + j) * K + u % K) * tl.L + (u2 - j * K + a)


def _additive(graph, mask: Tensor, dtype: torch.dtype) -> Tensor:
    """The boolean mask as 0 / -inf in ``dtype``, cached: SDPA would convert it at every call."""
    return cached(graph, ("tiled_mask", dtype),
                  lambda: torch.zeros(mask.shape, dtype=dtype, device=mask.device)
                  .masked_fill(~mask, float("-inf")))


def prepare(graph: TokenGraph, dtype: torch.dtype, with_bias: bool) -> None:
    """Build (and cache) the tiles, their mask in ``dtype`` and, with a bias, the edge slots."""
    tl = cached(graph, "tiled", lambda: _build(graph))
    _additive(graph, tl.mask, dtype)
    if with_bias:
        cached(graph, "tiled_edge_slots", lambda: _edge_slots(graph, tl))


def attention(q: Tensor, k: Tensor, v: Tensor, graph: TokenGraph, edge_bias: Tensor | None,
              scale: float) -> Tensor:
    """``out [N, H, Dv]`` for a window graph, ``score(q, k) = scale q.k (+ bias)``.

    **Shapes:** q, k ``[N, H, D]``, v ``[N, H, Dv]``, edge_bias ``[E, H]`` or ``[E, 1]``.
    """
    N, H, Dv = q.size(0), q.size(1), v.size(-1)
    if N == 0:
        return q.new_zeros(0, H, Dv) + connect(q, k, v)
    tl = cached(graph, "tiled", lambda: _build(graph))
    R, K, L = tl.R, tl.K, tl.L
    mask = _additive(graph, tl.mask, q.dtype)
    if edge_bias is not None:
        slots = cached(graph, "tiled_edge_slots", lambda: _edge_slots(graph, tl))
        Hb = edge_bias.size(1)
        fm = q.new_full((R * K * L, Hb), float("-inf")).index_put((slots,), edge_bias)
        mask = fm.view(R, K, L, Hb).permute(0, 3, 1, 2)
    # Tiles are SDPA's batch, heads its heads: every layout change below is a view.
    q4 = q.index_select(0, tl.q_idx).view(R, K, H, -1).transpose(1, 2)
    k4 = k.index_select(0, tl.k_idx).view(R, L, H, -1).transpose(1, 2)
    v4 = v.index_select(0, tl.k_idx).view(R, L, H, -1).transpose(1, 2)
    out = F.scaled_dot_product_attention(q4, k4, v4, attn_mask=mask, scale=scale)
    return out.transpose(1, 2).reshape(R * K, H, Dv).index_select(0, tl.out_idx)


def estimate(graph: TokenGraph, H: int, D: int, Dv: int, itemsize: int, bias_heads: int) -> int:
    """Bytes: q/k/v buffers and the output (x2 for gradients), indices and the mask."""
    _, d, a, b, n, K = _shape(graph)
    L = K + a + b
    rows = lengths(graph).B * d * (-(-n // K) + -(-(a + b) // K)) * K if n else 0
    total = 2 * H * rows * (2 * D + 2 * Dv) * itemsize + rows * (L + 24)
    if bias_heads:
        total += 3 * bias_heads * rows * L * itemsize
    return int(total)
