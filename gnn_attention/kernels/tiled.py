"""Tiled kernel: sliding windows (plain, causal, dilated) as SDPA on band tiles.

Notation: B sequences of equal length T, H heads, D / Dv widths, w window (distance in tokens),
d dilation, a / b how many neighbours a query sees before / after itself (a = w // d; b = a, or 0
when causal), n = ceil(T / d) tokens per residue class, K tile height (queries per tile),
L = K + a + b tile width (keys per tile), G = B d subsequences, M = ceil(n / K) tiles per subsequence.

A dilated window only links tokens whose positions agree modulo d, so each sequence splits into d
residue classes (t = r + d u) and, inside one class, the graph is a plain band |u - u'| <= a (u' <= u
when causal). The band is cut into tiles of K consecutive queries; the keys a tile can reach are the
L = K + a + b positions around it. Every tile is one "head" of a 4-D SDPA call

    q: [H, G M, K, D],   k, v: [H, G M, L, D],   mask: [1, G M, K, L] (True = allowed)

so the work is G M K L ~ B T (2w/d + K) dot products instead of B T^2 for the dense mask. Queries
and keys are gathered into this layout with one precomputed index each (out-of-range keys read a
zero row and are masked), and outputs are gathered back. ``edge_bias`` becomes a float mask over
the tiles (-inf outside the graph).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from ..graphs import TokenGraph
from .plan import cached, lengths, window_params

TILE = 64  # queries per tile: bench P3 (w = 32..256) ran fastest near 64 on this CPU


@dataclass(frozen=True)
class Tiles:
    """Gather indices and the mask of the tile layout (cached per graph).

    ``q_idx [G M K]`` / ``k_idx [G M L]``: node read into each query / key slot (N = a zero row);
    ``out_idx [N]``: query slot holding each node; ``mask [1, G M, K, L]``.
    """

    G: int
    M: int
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
    dev, N = graph.device, B * T
    g = torch.arange(G, device=dev).view(G, 1, 1)
    seq, r = g // d, g % d
    i = torch.arange(M, device=dev).view(1, M, 1)
    u = i * K + torch.arange(K, device=dev).view(1, 1, K)                 # query slot -> u
    t = r + d * u
    q_idx = torch.where(t < T, seq * T + t, N).flatten()
    u2 = i * K - a + torch.arange(L, device=dev).view(1, 1, L)            # key slot -> u'
    s = r + d * u2
    k_ok = (u2 >= 0) & (s < T)
    k_idx = torch.where(k_ok, seq * T + s, N).flatten()
    c = torch.arange(L, device=dev).view(1, L) - torch.arange(K, device=dev).view(K, 1)
    band = (c >= 0) & (c <= a + b)                                        # u' - u in [-a, b]
    mask = (band.view(1, 1, K, L) & k_ok.view(G, M, 1, L)).view(1, G * M, K, L)
    node = torch.arange(N, device=dev)
    tt = node % T
    out_idx = ((node // T * d + tt % d) * M * K + tt // d)
    return Tiles(G, M, K, L, q_idx, k_idx, out_idx, mask)


def _edge_slots(graph: TokenGraph, tl: Tiles) -> Tensor:
    """Flat position of every edge in the ``[G M, K, L]`` tile grid."""
    T, d, a, _, _, K = _shape(graph)
    src, dst = graph.edge_index
    seq, t, s = dst // T, dst % T, src % T
    u, u2 = t // d, s // d
    g, i = seq * d + t % d, u // K
    return ((g * tl.M + i) * K + u % K) * tl.L + (u2 - i * K + a)


def _gather(x: Tensor, idx: Tensor, rows: int, width: int) -> Tensor:
    """``x [N, H, D]`` -> ``[H, rows, width, D]`` slots (index N reads zeros)."""
    x = torch.cat([x, x.new_zeros(1, x.size(1), x.size(2))])
    return x.index_select(0, idx).view(rows, width, x.size(1), x.size(2)).permute(2, 0, 1, 3)


def attention(q: Tensor, k: Tensor, v: Tensor, graph: TokenGraph, edge_bias: Tensor | None,
              scale: float) -> Tensor:
    """``out [N, H, Dv]`` for a window graph, ``score(q, k) = scale q.k (+ bias)``.

    **Shapes:** q, k ``[N, H, D]``, v ``[N, H, Dv]``, edge_bias ``[E, H]`` or ``[E, 1]``.
    """
    N, H, Dv = q.size(0), q.size(1), v.size(-1)
    if N == 0:
        return q.new_zeros(0, H, Dv) + (q.sum() + k.sum() + v.sum()) * 0
    tl = cached(graph, "tiled", lambda: _build(graph))
    rows = tl.G * tl.M
    mask = tl.mask
    if edge_bias is not None:
        slots = cached(graph, "tiled_edge_slots", lambda: _edge_slots(graph, tl))
        Hb = edge_bias.size(1)
        fm = q.new_full((rows * tl.K * tl.L, Hb), float("-inf")).index_put((slots,), edge_bias)
        mask = fm.view(rows, tl.K, tl.L, Hb).permute(3, 0, 1, 2)
    q4 = _gather(q, tl.q_idx, rows, tl.K)
    k4, v4 = _gather(k, tl.k_idx, rows, tl.L), _gather(v, tl.k_idx, rows, tl.L)
    out = F.scaled_dot_product_attention(q4, k4, v4, attn_mask=mask, scale=scale)
    out = out.permute(1, 2, 0, 3).reshape(rows * tl.K, H, Dv)
    return out.index_select(0, tl.out_idx)


def estimate(graph: TokenGraph, H: int, D: int, Dv: int, itemsize: int, bias_heads: int) -> int:
    """Bytes: tile copies of q, k, v and the output (x2 for gradients), indices and mask."""
    _T, d, a, b, n, K = _shape(graph)
    slots = lengths(graph).B * d * -(-n // K) * K if n else 0
    L = K + a + b
    total = 2 * H * slots * (D + (D + Dv) * L / K + Dv) * itemsize + slots * (L + 24)
    if bias_heads:
        total += 3 * bias_heads * slots * L * itemsize
    return int(total)
