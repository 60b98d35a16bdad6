"""Structured patterns in closed form: per-target source ranges, edge counts, the edges themselves.

Notation: B sequences; sequence b has T_b targets and S_b sources; N_dst = sum T_b targets;
E edges; t, s = local positions; w window reach in tokens, d dilation, r = w // d neighbours per
side; off = 0 (top-left causal alignment) or S - T (bottom-right).

A structured graph is fully described by its pattern name, its parameters and the lengths, so a
:class:`~gnn_attention.graphs.core.TokenGraph` can keep only those and build its edges when asked.
Every structured pattern gives target t the sources ``lo_t + d * k`` for ``k < count_t``:

    name           lo_t                     count_t                                  d
    full, cross    0                        S                                        1
    causal,        0                        clamp(t + off + 1, 0, S)                 1
    cross_causal
    window         t - d min(t // d, r)     min(t // d, r) + 1 (+ min((T-1-t) // d, r)   d
                                            unless causal)

so the edge count of a sequence is a sum of clamped arithmetic series, computed per sequence in
O(B) (:func:`edge_count`, on Python ints); the per-target ranges cost O(N_dst) (:func:`ranges`) and the edges
O(E) (:func:`materialise`), sorted by (target, source) because k increases with s.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

STRUCTURED = ("full", "causal", "cross", "cross_causal", "window")
ALIGNS = ("top_left", "bottom_right")
# Edges per materialisation chunk: bounds the gather temporary to 32 MiB whatever E is.
CHUNK = 1 << 22


def canonical_params(name: str, params: tuple) -> tuple:
    """The parameters of a structured pattern as the kernels read them, validated.

    ``causal``/``cross_causal``: ``(align,)`` (default top-left); ``window``: ``(w, causal, d)``.
    """
    if name in ("full", "cross"):
        return ()
    if name in ("causal", "cross_causal"):
        align = params[0] if params else "top_left"
        if align not in ALIGNS:
            raise ValueError(f"a {name!r} pattern's align must be one of {ALIGNS}, got {align!r}")
        return (align,)
    if name == "window":
        if len(params) != 3:
            raise ValueError(f"a 'window' pattern has params (w, causal, dilation), got {params!r}")
        w, causal, d = params
        if not (_is_int(w) and _is_int(d) and isinstance(causal, bool)) or w < 0 or d < 1:
            raise ValueError(f"a 'window' pattern needs integers w >= 0, dilation >= 1 and a bool "
                             f"causal, got params {params!r}")
        return (int(w), causal, int(d))
    raise ValueError(f"{name!r} is not a structured pattern (one of {STRUCTURED})")


def _is_int(x) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def predicate(name: str, params: tuple):
    """``allows(t, s, T, S)`` of a structured pattern (what its edges are, position by position)."""
    params = canonical_params(name, params)
    if name in ("full", "cross"):
        return lambda t, s, T, S: (s < S) & (t < T)
    if name in ("causal", "cross_causal"):
        aligned = params[0] == "bottom_right"
        return lambda t, s, T, S: s <= t + (S - T if aligned else 0)
    w, causal, d = params

    def allows(t, s, T, S):
        ok = ((t - s).abs() <= w) & ((t - s) % d == 0)
        return ok & (s <= t) if causal else ok

    return allows


def _clamped_sum(c: int, T: int, S: int) -> int:
    """``sum_{x=c}^{c+T-1} clamp(x, 0, S)`` (the causal count_t = clamp(t + c, 0, S), summed)."""
    def below(n):  # sum_{x=0}^{n-1} min(x, S), n >= 0
        return n * (n - 1) // 2 if n <= S + 1 else S * (S + 1) // 2 + (n - S - 1) * S

    return below(max(c + T, 0)) - below(max(c, 0))


def _window_side(T: int, r: int, d: int) -> int:
    """``sum_{t=0}^{T-1} min(t // d, r)`` (neighbours on one side of every target)."""
    m = min(T, r * d)
    q = m // d
    return d * q * (q - 1) // 2 + (m - q * d) * q + r * (T - m)


def sequence_edges(name: str, params: tuple, S: int, T: int) -> int:
    """Edges of one sequence with S sources and T targets, in closed form (Python ints: no tensor
    is read, so it runs while ``torch.compile`` traces). ``params`` canonical."""
    if name in ("full", "cross"):
        return T * S
    if name in ("causal", "cross_causal"):
        off = S - T if params[0] == "bottom_right" else 0
        return _clamped_sum(off + 1, T, S)
    w, causal, d = params
    side = _window_side(T, w // d, d)
    return T + side + (0 if causal else side)


def edge_count(name: str, params: tuple, src_len: Sequence[int], dst_len: Sequence[int]) -> int:
    """Total edges of B sequences given as Python ints. O(B)."""
    params = canonical_params(name, params)
    return sum(sequence_edges(name, params, S, T) for S, T in zip(src_len, dst_len))


def edge_counts(name: str, params: tuple, src_len: Tensor, dst_len: Tensor) -> Tensor:
    """``[B]`` edges per sequence, without building anything per target. O(B)."""
    params = canonical_params(name, params)
    return torch.tensor([sequence_edges(name, params, S, T)
                         for S, T in zip(src_len.tolist(), dst_len.tolist())], dtype=torch.long)


def local_positions(dst_len: Tensor, src_len: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Per target node: its position t, its sequence's T and S (each ``[N_dst]``)."""
    seq = torch.repeat_interleave(torch.arange(dst_len.numel()), dst_len)
    start = torch.cat([dst_len.new_zeros(1), dst_len.cumsum(0)[:-1]])
    t = torch.arange(seq.numel()) - start[seq]
    return t, dst_len[seq], src_len[seq]


def ranges(name: str, params: tuple, src_len: Tensor, dst_len: Tensor) -> tuple[Tensor, Tensor, int]:
    """``(lo, count, d)``: target t has sources ``lo_t + d k``, ``k < count_t`` (``[N_dst]`` each,
    local positions). O(N_dst)."""
    params = canonical_params(name, params)
    t, T, S = local_positions(dst_len, src_len)
    zero = torch.zeros_like(t)
    if name in ("full", "cross"):
        return zero, S, 1
    if name in ("causal", "cross_causal"):
        off = S - T if params[0] == "bottom_right" else zero
        return zero, (t + off + 1).clamp(min=0).minimum(S), 1
    w, causal, d = params
    reach = torch.full_like(t, w // d)
    before = torch.minimum(t // d, reach)
    after = zero if causal else torch.minimum((T - 1 - t) // d, reach)
    return t - before * d, before + after + 1, d


def edge_bytes(num_edges: int) -> int:
    """Peak bytes of :func:`materialise` for E edges: the ``[2, E]`` int64 result and one ``[E]``
    int64 temporary (the target of every edge before it is copied in)."""
    return 3 * 8 * num_edges


def materialise(src_ptr: Tensor, dst_ptr: Tensor, lo: Tensor, count: Tensor,
                step: int) -> tuple[Tensor, Tensor]:
    """``(edge_index [2, E], rowptr [N_dst + 1])`` on the CPU from per-target ranges.

    Source of edge e of target i: ``src_ptr[b_i] + lo_i + step (e - rowptr_i)``, i.e.
    ``step e + c_i`` with one constant per target, added chunk by chunk so that the only
    E-sized tensors are the result and the one repeat of target ids.
    """
    rowptr = torch.cat([count.new_zeros(1), count.cumsum(0)])
    E, N = int(rowptr[-1]), count.numel()
    dst_len = dst_ptr.diff()
    seq = torch.repeat_interleave(torch.arange(dst_len.numel()), dst_len)
    c = src_ptr[:-1][seq] + lo - step * rowptr[:-1]  # [N_dst]
    out = torch.empty(2, E, dtype=torch.long)
    out[1].copy_(torch.repeat_interleave(torch.arange(N), count, output_size=E))
    if E:
        torch.arange(0, step * E, step, out=out[0])
    for a in range(0, E, CHUNK):
        piece = out[:, a:a + CHUNK]
        piece[0].add_(c[piece[1]])
    return out, rowptr
