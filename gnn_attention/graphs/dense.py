"""Edge weights -> dense attention maps: one per-edge value laid out as ``[B, H, T, S]``.

Notation: B sequences, T / S padded target / source length (the longest sequence unless given),
E edges, H heads.

This is the one place where "alpha of edge j -> i" becomes "row t_i, column s_j of sequence b";
the drop-in's ``attn_weights``, the pretrained models' ``output_attentions``-style maps and the
plots all read it, so they agree on the layout.
"""
from __future__ import annotations

from torch import Tensor

from gnn_attention.graphs.core import TokenGraph
from gnn_attention.graphs.positions import edge_positions, edge_sequences


def edges_to_dense(graph: TokenGraph, alpha: Tensor, T: int | None = None,
                   S: int | None = None, fill: float = 0.0) -> Tensor:
    """Per-edge values as dense maps, ``fill`` where there is no edge (row = query t, column =
    key s, as ``nn.MultiheadAttention``'s ``attn_weights``).

    **Shapes:** ``alpha [E, H]`` (or ``[E]``) -> ``[B, H, T, S]`` (or ``[B, T, S]``).
    """
    if alpha.size(0) != graph.num_edges:
        raise ValueError(f"alpha has {alpha.size(0)} rows but the graph has {graph.num_edges} edges")
    T = int(graph.dst_lengths.max()) if T is None and graph.batch_size else (T or 0)
    S = int(graph.src_lengths.max()) if S is None and graph.batch_size else (S or 0)
    t, s = edge_positions(graph)
    b = edge_sequences(graph)
    out = alpha.new_full((graph.batch_size, T, S, *alpha.shape[1:]), fill)
    out[b, t, s] = alpha
    return out.permute(0, 3, 1, 2) if alpha.dim() == 2 else out
