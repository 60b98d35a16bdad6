"""Node -> (sequence, position): where each node and each edge of a disjoint union sits.

Notation: B sequences; sequence b owns target nodes ``dst_ptr[b]:dst_ptr[b+1]`` (T_b of them) and
source nodes ``src_ptr[b]:src_ptr[b+1]`` (S_b); N nodes, E edges; t, s = local positions.

Every module that needs "which sequence, which position" for a node or an edge asks here: the
kernels (padded layouts), the positional encodings (relative positions per edge), the conversions
to dense maps and the decoders.
"""
from __future__ import annotations

import torch
from torch import Tensor

from gnn_attention.graphs.core import ALIGNS, TokenGraph, as_lengths


def sequence_and_position(ptr: Tensor, node: Tensor) -> tuple[Tensor, Tensor]:
    """``(b, t)`` of each node, given the ``[B + 1]`` offsets ``ptr`` of its side.

    **Shapes:** ``ptr [B + 1]``, ``node [N]`` -> two ``[N]`` (int64)."""
    seq = torch.searchsorted(ptr, node, right=True) - 1
    return seq, node - ptr[seq]


def node_positions(lengths, device=None) -> Tensor:
    """Local position of every node of a disjoint union: ``[0..T_0-1, 0..T_1-1, ...]`` (``[N]``)."""
    n = as_lengths(lengths)
    seq = torch.repeat_interleave(torch.arange(n.numel()), n)
    start = torch.cat([n.new_zeros(1), n.cumsum(0)[:-1]])
    return (torch.arange(seq.numel()) - start[seq]).to(device)


def edge_sequences(graph: TokenGraph) -> Tensor:
    """The sequence b of every edge (``[E]``); no edge crosses two sequences."""
    return sequence_and_position(graph.dst_ptr, graph.edge_index[1])[0]


def edge_positions(graph: TokenGraph, align: str = "top_left") -> tuple[Tensor, Tensor]:
    """Local positions ``(t, s)`` of each edge's target and source inside their sequence (``[E]``).

    ``align="bottom_right"`` numbers the T targets of a sequence as the *last* T of its S positions
    (t + S - T): a step of incremental decoding has one query at position S - 1, not 0.
    """
    if align not in ALIGNS:
        raise ValueError(f"align must be one of {ALIGNS}, got {align!r}")
    src, dst = graph.edge_index
    seq, t = sequence_and_position(graph.dst_ptr, dst)
    s = src - graph.src_ptr[seq]
    if align == "bottom_right":
        t = t + (graph.src_lengths - graph.dst_lengths)[seq]
    return t, s
