"""Builders: each attention pattern as an edge set over a batch of sequences (a disjoint union).

Structured patterns are built from per-target ranges (no dense T x S mask is materialised);
``from_predicate`` evaluates any predicate ``allows(t, s, T, S)`` over local positions.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from gnn_attention.graphs.core import (
    ALIGNS,
    Lengths,
    Pattern,
    Predicate,
    TokenGraph,
    _from_ranges,
    _local_positions,
    _ptr,
    as_lengths,
    from_edge_index,
)


def full(lengths: Lengths, device=None) -> TokenGraph:
    """Bidirectional self-attention: every token attends to every token of its sequence."""
    n = as_lengths(lengths)
    t, T, S = _local_positions(n, n)
    return _from_ranges(n, n, torch.zeros_like(t), S, 1,
                        Pattern("full", (), lambda t, s, T, S: (s < S) & (t < T)), False, device)


def _causal_offset(align: str, T: Tensor, S: Tensor) -> Tensor:
    if align not in ALIGNS:
        raise ValueError(f"align must be one of {ALIGNS}, got {align!r}")
    return torch.zeros_like(T) if align == "top_left" else S - T


def causal(lengths: Lengths, align: str = "top_left", src_lengths: Optional[Lengths] = None,
           device=None) -> TokenGraph:
    """Causal self-attention: target t attends to sources s <= t (top-left aligned, as SDPA
    ``is_causal``) or s <= t + S - T (bottom-right aligned: the last query sees every key).

    ``src_lengths`` (default ``lengths``) allows T != S, e.g. a few new queries over a longer cache.
    """
    n = as_lengths(lengths)
    m = n if src_lengths is None else as_lengths(src_lengths, "src_lengths")
    if m.numel() != n.numel():
        raise ValueError(f"src_lengths has {m.numel()} sequences, lengths has {n.numel()}")
    t, T, S = _local_positions(n, m)
    count = torch.minimum(t + _causal_offset(align, T, S) + 1, S)
    aligned = align == "bottom_right"
    allows = lambda t, s, T, S: s <= t + (S - T if aligned else 0)  # noqa: E731
    return _from_ranges(m, n, torch.zeros_like(t), count, 1, Pattern("causal", (align,), allows),
                        src_lengths is not None, device)


def window(lengths: Lengths, w: int, causal: bool = False, dilation: int = 1,
           device=None) -> TokenGraph:
    """Sliding window: target t attends to s with |t - s| <= w (s <= t as well when ``causal``) and
    (t - s) divisible by ``dilation``. ``w`` is a distance in tokens, not a neighbour count."""
    if int(w) < 0 or int(dilation) < 1:
        raise ValueError(f"window needs w >= 0 and dilation >= 1, got w={w}, dilation={dilation}")
    n = as_lengths(lengths)
    t, T, _ = _local_positions(n, n)
    reach = w // dilation  # neighbours on each side
    before = torch.minimum(t // dilation, torch.full_like(t, reach))
    after = torch.zeros_like(t) if causal else torch.minimum((T - 1 - t) // dilation,
                                                             torch.full_like(t, reach))
    lo = t - before * dilation
    d, c = int(dilation), bool(causal)

    def allows(t, s, T, S):
        ok = ((t - s).abs() <= w) & ((t - s) % d == 0)
        return ok & (s <= t) if c else ok

    return _from_ranges(n, n, lo, before + after + 1, dilation,
                        Pattern("window", (int(w), c, d), allows), False, device)


def cross(src_lengths: Lengths, dst_lengths: Lengths, causal: bool = False,
          align: str = "top_left", device=None) -> TokenGraph:
    """Bipartite encoder -> decoder graph: every target (decoder token) attends to every source
    (encoder token) of the same sequence; with ``causal`` only to s <= t (or s <= t + S - T)."""
    m, n = as_lengths(src_lengths, "src_lengths"), as_lengths(dst_lengths, "dst_lengths")
    if m.numel() != n.numel():
        raise ValueError(f"src_lengths has {m.numel()} sequences, dst_lengths has {n.numel()}")
    t, T, S = _local_positions(n, m)
    if causal:
        count = torch.minimum(t + _causal_offset(align, T, S) + 1, S)
        aligned = align == "bottom_right"
        pattern = Pattern("cross_causal", (align,),
                          lambda t, s, T, S: s <= t + (S - T if aligned else 0))
    else:
        count, pattern = S, Pattern("cross", (), lambda t, s, T, S: s < S)
    return _from_ranges(m, n, torch.zeros_like(t), count, 1, pattern, True, device)


def from_predicate(lengths: Lengths, allows: Predicate, src_lengths: Optional[Lengths] = None,
                   name: str = "predicate", device=None) -> TokenGraph:
    """Any pattern given as a predicate ``allows(t, s, T, S)`` over local positions (tensors that
    broadcast). Costs O(sum T_b * S_b) to evaluate; structured builders above avoid that."""
    n = as_lengths(lengths)
    m = n if src_lengths is None else as_lengths(src_lengths, "src_lengths")
    if m.numel() != n.numel():
        raise ValueError(f"src_lengths has {m.numel()} sequences, lengths has {n.numel()}")
    src_ptr, dst_ptr = _ptr(m), _ptr(n)
    parts = []
    for b, (T, S) in enumerate(zip(n.tolist(), m.tolist())):
        t, s = torch.arange(T).view(-1, 1), torch.arange(S).view(1, -1)
        ok = torch.as_tensor(allows(t, s, torch.tensor(T), torch.tensor(S))).expand(T, S)
        ti, si = ok.nonzero(as_tuple=True)
        parts.append(torch.stack([si + src_ptr[b], ti + dst_ptr[b]]))
    ei = torch.cat(parts, 1) if parts else torch.zeros(2, 0, dtype=torch.long)
    return from_edge_index(ei, m, n, Pattern(name, (), allows), src_lengths is not None, device)
