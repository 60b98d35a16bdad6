"""Validation of edges before anything runs on them: shape, dtype and range, duplicates, sequence
boundaries, per-edge inputs, and structured labels checked against the edges they name.

Notation: B sequences; ``src_ptr`` / ``dst_ptr`` ``[B + 1]`` node offsets; E edges j -> i, sorted by
(i, j) where said; t, s = local positions of an edge's target and source; T, S their sequence's
lengths.

Every check runs before computation and names what is wrong and how to fix it: a wrong graph must
fail loudly here, never give a silent wrong result in a kernel.
"""
from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from gnn_attention.graphs.lengths import offsets
from gnn_attention.graphs.pattern import Pattern
from gnn_attention.graphs.structured import STRUCTURED, canonical_params, edge_counts, predicate


def check_edge_attr(edge_attr, num_edges: int) -> None:
    """``edge_attr`` must be a tensor with E rows, or a tuple/list/dict of such tensors."""
    items = (edge_attr.values() if isinstance(edge_attr, dict)
             else edge_attr if isinstance(edge_attr, (tuple, list)) else [edge_attr])
    for a in items:
        if not isinstance(a, Tensor) or a.dim() == 0:
            raise TypeError(f"edge_attr must be a tensor with one row per edge, or a tuple/dict of "
                            f"them, got {type(a).__name__}")
        if a.size(0) != num_edges:
            raise ValueError(f"edge_attr has {a.size(0)} rows but edge_index has {num_edges} edges")


def check_same_sequence(ei: Tensor, src_ptr: Tensor, dst_ptr: Tensor) -> None:
    """Raise if an edge joins two sequences (a batch of token graphs is a disjoint union)."""
    if ei.size(1):
        seq_s = torch.searchsorted(src_ptr, ei[0], right=True) - 1
        seq_d = torch.searchsorted(dst_ptr, ei[1], right=True) - 1
        if (seq_s != seq_d).any():
            raise ValueError("edge_index has edges between two different sequences; a batch of "
                             "token graphs is a disjoint union")


def check_pattern(name: str, params: tuple, ei: Tensor, src_ptr: Tensor, dst_ptr: Tensor,
                  rowptr: Tensor) -> tuple[tuple, Callable]:
    """The label of sorted, duplicate-free edges, checked when kernels would trust it.

    A structured name holds when every sequence has the pattern's edge count (closed form, O(B))
    and every edge satisfies its predicate (one vectorised pass, O(E)): a set of distinct allowed
    pairs as large as the allowed set is the allowed set. Returns the pattern with its canonical
    parameters and predicate (``name`` must be structured).
    """
    params = canonical_params(name, params)
    m, n = src_ptr.diff().cpu(), dst_ptr.diff().cpu()
    if name == "window" and not torch.equal(m, n):
        raise ValueError("a 'window' pattern is self-attention: every sequence needs as many "
                         "sources as targets")
    fix = (f"leave pattern=None (an arbitrary edge set) or build the graph with graphs.{name}"
           f"{'' if name != 'cross_causal' else ' / graphs.cross(causal=True)'}")
    want = edge_counts(name, params, m, n)
    have = (rowptr[dst_ptr[1:]] - rowptr[dst_ptr[:-1]]).cpu()
    if not torch.equal(want, have):
        b = int((want != have).nonzero()[0])
        raise ValueError(f"the edges are not the {name!r} pattern {params}: sequence {b} has "
                         f"{int(have[b])} edges where the pattern has {int(want[b])}; {fix}")
    allows = predicate(name, params)
    if ei.size(1):
        seq = torch.searchsorted(dst_ptr, ei[1], right=True) - 1
        t, s = ei[1] - dst_ptr[seq], ei[0] - src_ptr[seq]
        bad = ~allows(t, s, n.to(seq.device)[seq], m.to(seq.device)[seq])
        if bool(bad.any()):
            e = int(bad.nonzero()[0])
            raise ValueError(f"the edges are not the {name!r} pattern {params}: edge "
                             f"{int(ei[0, e])} -> {int(ei[1, e])} (t={int(t[e])}, s={int(s[e])}) is "
                             f"not in it; {fix}")
    return params, allows


def check_edge_index(edge_index: Tensor, num_src: int, num_dst: int,
                     check_duplicates: bool = True) -> Tensor:
    """Validate ``edge_index`` (``[2, E]`` integer, indices in range, no edge twice) and return it
    as int64.

    Duplicates are rejected, not merged: attention edges form a set, and a repeated edge j -> i
    would silently give key j twice the weight in the softmax of target i. The check costs O(E) when
    the edges are already sorted by (target, source) (as in every :class:`TokenGraph`), else one sort.
    """
    if not isinstance(edge_index, Tensor):
        raise TypeError(f"edge_index must be a Tensor or TokenGraph, got {type(edge_index).__name__}")
    if edge_index.dtype not in (torch.int64, torch.int32):
        raise TypeError(f"edge_index must have an integer dtype (int64), got {edge_index.dtype}")
    if edge_index.dim() != 2 or edge_index.size(0) != 2:
        raise ValueError(f"edge_index must have shape [2, E], got {tuple(edge_index.shape)}")
    if torch.compiler.is_compiling():
        # Value checks read the data on the host, which would break a compiled graph: under
        # torch.compile only dtype and shape are checked (run eagerly once to validate values).
        return edge_index.long()
    if edge_index.numel():
        lo, hi = edge_index.min(dim=1).values.tolist(), edge_index.max(dim=1).values.tolist()
        if min(lo) < 0 or hi[0] >= num_src or hi[1] >= num_dst:
            raise IndexError(f"edge_index out of range: sources must lie in [0, {num_src}) and "
                             f"targets in [0, {num_dst}), got sources in [{lo[0]}, {hi[0]}] and "
                             f"targets in [{lo[1]}, {hi[1]}]")
    ei = edge_index.long()
    if check_duplicates and ei.size(1) > 1:
        key, edges = ei[1] * max(num_src, 1) + ei[0], ei
        if not bool((key[1:] >= key[:-1]).all()):
            key, order = key.sort()
            edges = ei[:, order]
        reject_duplicates(edges, key)
    return ei


def reject_duplicates(ei: Tensor, sorted_key: Tensor) -> None:
    """Raise if two consecutive (sorted) edge keys are equal, naming the first repeated edge."""
    same = sorted_key[1:] == sorted_key[:-1]
    if bool(same.any()):
        first = int(same.nonzero()[0])
        j, i = ei[0, first].item(), ei[1, first].item()
        raise ValueError(f"edge_index has {int(same.sum())} duplicate edge(s), first j={j} -> i={i}; "
                         f"attention edges form a set (a repeated edge would count its key twice in "
                         f"the softmax): remove them, e.g. torch.unique(edge_index, dim=1)")


def check_ptrs(g) -> None:
    """Offsets ``[B + 1]`` int64 from 0, non-decreasing, ending at the node counts."""
    for name, ptr, total in (("src_ptr", g.src_ptr, g.num_src), ("dst_ptr", g.dst_ptr, g.num_dst)):
        if not isinstance(ptr, Tensor) or ptr.dtype != torch.int64 or ptr.dim() != 1 or not ptr.numel():
            raise ValueError(f"{name} must be a 1-D int64 tensor of B + 1 offsets")
        if int(ptr[0]) != 0 or int(ptr[-1]) != total or bool((ptr.diff() < 0).any()):
            raise ValueError(f"{name} must rise from 0 to {total}, got {ptr.tolist()}")
    if g.src_ptr.numel() != g.dst_ptr.numel():
        raise ValueError(f"src_ptr and dst_ptr describe {g.src_ptr.numel() - 1} and "
                         f"{g.dst_ptr.numel() - 1} sequences")


def check_edges(g, ei: Tensor, rowptr: Tensor) -> Pattern:
    """A hand-built graph's edges: in range, sorted by (target, source) without duplicates, CSR
    pointers that match, no edge across sequences, a true structured label. O(E log B)."""
    if not isinstance(ei, Tensor) or ei.dtype != torch.int64:
        raise TypeError(f"a TokenGraph's edge_index must be an int64 tensor, got "
                        f"{getattr(ei, 'dtype', type(ei).__name__)}")
    check_edge_index(ei, g.num_src, g.num_dst, check_duplicates=False)
    key = ei[1] * max(g.num_src, 1) + ei[0]
    if ei.size(1) > 1 and not bool((key[1:] > key[:-1]).all()):
        raise ValueError("a TokenGraph's edges must be sorted by (target, source) without "
                         "duplicates (the CSR kernel reads them in order); build it with "
                         "graphs.from_edge_index, which sorts them")
    if not isinstance(rowptr, Tensor) or not torch.equal(
            rowptr.long(), offsets(torch.bincount(ei[1], minlength=g.num_dst))):
        raise ValueError("rowptr must be the CSR pointers of the sorted targets ([N_dst + 1], "
                         "rowptr[i + 1] - rowptr[i] = in-degree of target i)")
    check_same_sequence(ei, g.src_ptr, g.dst_ptr)
    return checked_label(g.pattern, ei, g.src_ptr, g.dst_ptr, rowptr)


def checked_label(pattern: Pattern, ei: Tensor, src_ptr: Tensor, dst_ptr: Tensor,
                  rowptr: Tensor) -> Pattern:
    """A structured label checked against sorted edges (canonical params and predicate filled
    in); other labels unchanged, since no kernel trusts them."""
    if pattern.name not in STRUCTURED:
        return pattern
    params, allows = check_pattern(pattern.name, pattern.params, ei, src_ptr, dst_ptr, rowptr)
    return Pattern(pattern.name, params, pattern.allows or allows)
