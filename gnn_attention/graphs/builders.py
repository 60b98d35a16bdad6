"""Builders: each attention pattern as an edge set over a batch of sequences (a disjoint union).

Notation: B sequences; T_b / S_b target / source lengths; t, s local positions; w window reach in
tokens, d dilation; E edges.

``full``, ``causal``, ``window`` and ``cross`` return *implicit* graphs: the pattern and the
lengths, O(B) to build; their edges (from closed-form per-target ranges, see :mod:`.structured`)
are built only when something reads ``edge_index``. ``from_predicate`` evaluates any predicate
``allows(t, s, T, S)`` over local positions, block by block, and keeps its edges.
"""
from __future__ import annotations

import operator

import torch
from torch import Tensor

from gnn_attention.graphs import budget
from gnn_attention.graphs.core import (
    ALIGNS,
    Lengths,
    Pattern,
    Predicate,
    TokenGraph,
    _ptr,
    from_edge_index,
    host_lengths,
    structured_graph,
)

# Target rows of a predicate evaluated at once: bounds its [rows, S] temporaries (int64 positions
# broadcast inside the predicate) to ~2^22 pairs, whatever T and S are.
PREDICATE_PAIRS = 1 << 22


def check_int(name: str, value, low: int | None = None) -> int:
    """``value`` as an int >= ``low``; bools, floats and strings are mistakes, not integers."""
    try:
        if isinstance(value, bool) or (isinstance(value, Tensor) and value.dtype == torch.bool):
            raise TypeError
        value = operator.index(value)
    except TypeError:
        raise TypeError(f"{name} must be an integer, got {value!r}") from None
    if low is not None and value < low:
        raise ValueError(f"{name} must be >= {low}, got {value}")
    return value


def check_bool(name: str, value) -> bool:
    """Only True / False: a string such as ``"no"`` is truthy and would flip the pattern."""
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be True or False, got {value!r}")
    return value


def _check_align(align: str) -> str:
    if align not in ALIGNS:
        raise ValueError(f"align must be one of {ALIGNS}, got {align!r}")
    return align


def _pair(lengths: Lengths, src_lengths: Lengths | None, name: str):
    """``(S_b, T_b)`` as tuples of Python ints (see :func:`~gnn_attention.graphs.core.host_lengths`)."""
    n = host_lengths(lengths, name)
    m = n if src_lengths is None else host_lengths(src_lengths, "src_lengths")
    if len(m) != len(n):
        raise ValueError(f"src_lengths has {len(m)} sequences, {name} has {len(n)}")
    return m, n


def full(lengths: Lengths, device=None) -> TokenGraph:
    """Bidirectional self-attention: every token attends to every token of its sequence.

    Implicit: O(B) to build; edges (T_b^2 per sequence) only when ``edge_index`` is read."""
    n = host_lengths(lengths)
    return structured_graph(Pattern("full"), n, n, False, device)


def causal(lengths: Lengths, align: str = "top_left", src_lengths: Lengths | None = None,
           device=None) -> TokenGraph:
    """Causal self-attention: target t attends to sources s <= t (top-left aligned, as SDPA
    ``is_causal``) or s <= t + S - T (bottom-right aligned: the last query sees every key).

    ``src_lengths`` (default ``lengths``) allows T != S, e.g. a few new queries over a longer cache.
    Implicit: O(B) to build."""
    m, n = _pair(lengths, src_lengths, "lengths")
    return structured_graph(Pattern("causal", (_check_align(align),)), m, n,
                            src_lengths is not None, device)


def window(lengths: Lengths, w: int, causal: bool = False, dilation: int = 1,
           device=None) -> TokenGraph:
    """Sliding window: target t attends to s with |t - s| <= w (s <= t as well when ``causal``) and
    (t - s) divisible by ``dilation``. ``w`` is a distance in tokens, not a neighbour count.
    Implicit: O(B) to build."""
    w, d = check_int("window w", w), check_int("window dilation", dilation)
    if w < 0 or d < 1:
        raise ValueError(f"window needs w >= 0 and dilation >= 1, got w={w}, dilation={d}")
    c = check_bool("window causal", causal)
    n = host_lengths(lengths)
    return structured_graph(Pattern("window", (w, c, d)), n, n, False, device)


def cross(src_lengths: Lengths, dst_lengths: Lengths, causal: bool = False,
          align: str = "top_left", device=None) -> TokenGraph:
    """Bipartite encoder -> decoder graph: every target (decoder token) attends to every source
    (encoder token) of the same sequence; with ``causal`` only to s <= t (or s <= t + S - T).
    Implicit: O(B) to build."""
    m, n = _pair(dst_lengths, src_lengths, "dst_lengths")
    if check_bool("cross causal", causal):
        return structured_graph(Pattern("cross_causal", (_check_align(align),)), m, n, True, device)
    _check_align(align)
    return structured_graph(Pattern("cross"), m, n, True, device)


def from_predicate(lengths: Lengths, allows: Predicate, src_lengths: Lengths | None = None,
                   name: str = "predicate", device=None) -> TokenGraph:
    """Any pattern given as a predicate ``allows(t, s, T, S)`` over local positions: ``t [R, 1]``,
    ``s [1, S]`` and 0-d ``T``, ``S`` in, a bool tensor broadcasting to ``[R, S]`` out (R target rows
    at a time, all T of them unless T S > 2^22). Costs O(sum T_b S_b) to evaluate; the structured
    builders above avoid that. A ``name`` of a structured pattern is checked against the edges."""
    m, n = _pair(lengths, src_lengths, "lengths")
    src_ptr, dst_ptr = _ptr(torch.tensor(m, dtype=torch.long)), _ptr(torch.tensor(n, dtype=torch.long))
    parts, found = [], 0
    for b, (T, S) in enumerate(zip(n, m)):
        rows = max(1, PREDICATE_PAIRS // max(S, 1) if T * S > PREDICATE_PAIRS else T)
        for r in range(0, T, rows):
            t, s = torch.arange(r, min(r + rows, T)).view(-1, 1), torch.arange(S).view(1, -1)
            ti, si = _evaluate(allows, t, s, T, S).nonzero(as_tuple=True)
            parts.append(torch.stack([si + src_ptr[b], ti + r + dst_ptr[b]]))
            found += ti.numel()
            budget.check(lambda: f"from_predicate's {found}+ edges", found * 64,
                         "Use a structured builder (full, causal, window, cross) where one fits.")
    ei = torch.cat(parts, 1) if parts else torch.zeros(2, 0, dtype=torch.long)
    return from_edge_index(ei, m, n, Pattern(name, (), allows), src_lengths is not None, device)


def _evaluate(allows: Predicate, t: Tensor, s: Tensor, T: int, S: int) -> Tensor:
    """One block of a predicate, checked: a bool tensor of shape ``[len(t), S]``."""
    ok = torch.as_tensor(allows(t, s, torch.tensor(T), torch.tensor(S)))
    if ok.dtype != torch.bool:  # truthiness of an int or float mask would silently add edges
        raise TypeError(f"allows(t, s, T, S) must return a bool tensor, got dtype {ok.dtype}")
    try:
        return ok.expand(t.size(0), S)
    except RuntimeError as e:
        raise ValueError(f"allows(t, s, T, S) must broadcast to [{t.size(0)}, {S}] (t is "
                         f"[{t.size(0)}, 1], s is [1, {S}]), got shape {tuple(ok.shape)}") from e
