"""Per-edge records of one attention site and the readable, editable attention that makes them.

Notation: E edges j -> i of the site's graph, N_src source and N_dst target nodes, H heads,
D per-head width.

    e_ij = score(q_i, k_j) + bias_ij     (the *score*, recorded before any edit)
    alpha_ij = segment softmax of e over N(i), after removals, times the scale
    m_ij = alpha_ij v_j                  (the *message*, after zeroing and patching)
    out_i = sum_{j -> i} m_ij            (per head, before the output projection)

:func:`edited_attention` is :func:`gnn_attention.attention.math.reference_attention` with the
edits of :class:`~gnn_attention.interpret.edits.SiteEdit` inserted at the step they name; with
no edit it performs the same operations in the same order, so it equals the ``"reference"``
kernel bitwise (the fast kernels agree with it to rounding: ~1e-16 in float64).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Tuple

import torch
from torch import Tensor

from gnn_attention.attention.math import compute_dtype, edge_scores, segment_softmax
from gnn_attention.graphs import TokenGraph
from gnn_attention.interpret.edits import SiteEdit


@dataclass(frozen=True)
class SiteRecord:
    """What one attention site computed, per edge and head.

    **Shapes:** ``edge_index [2, E]``, ``scores [E, H]`` (score + bias, before edits),
    ``alpha [E, H]`` (the weights used, after removal and scaling), ``messages [E, H, D]``
    (``alpha_ij v_j`` after zeroing and patching: what was summed), ``out [N_dst, H, D]``
    (per-head output before the output projection, after head ablation).
    """

    edge_index: Tensor
    scores: Tensor
    alpha: Tensor
    messages: Tensor
    out: Tensor


def edited_attention(q: Tensor, k: Tensor, v: Tensor, graph: TokenGraph,
                     edge_bias: Optional[Tensor] = None, score: str = "scaled_dot",
                     score_weight=None, edit: Optional[SiteEdit] = None
                     ) -> Tuple[Tensor, SiteRecord]:
    """Attention through scores -> segment softmax -> messages -> sum, with ``edit`` applied.

    A target whose edges are all removed outputs exactly zero (the library's empty-row rule).
    The edit must have been checked against the graph (:meth:`SiteEdit.check`).

    **Shapes:** ``q [N_dst, H, D]``, ``k, v [N_src, H, D]``, ``edge_bias [E, H]`` or ``[E, 1]``
    -> ``(out [N_dst, H, D], SiteRecord)``.
    """
    edit = edit or SiteEdit()
    ei = graph.edge_index
    dtype = compute_dtype(q.dtype)
    qc, kc, vc = q.to(dtype), k.to(dtype), v.to(dtype)
    s = edge_scores(qc, kc, ei, score=score, score_weight=score_weight)
    if edge_bias is not None:
        s = s + edge_bias.to(dtype)
    # Removal is a -inf bias: the softmax renormalises over the remaining edges of each target.
    e = s if edit.remove is None else s.masked_fill(edit.remove, float("-inf"))
    alpha = segment_softmax(e, ei[1], q.size(0))
    if edit.scale is not None:
        alpha = alpha * edit.scale.to(dtype)
    if edit.zero_value is not None:
        z = edit.zero_value if edit.zero_value.dim() == 2 else edit.zero_value.unsqueeze(1)
        vc = vc.masked_fill(z.unsqueeze(-1), 0.0)
    msg = alpha.unsqueeze(-1) * vc[ei[0]]
    if edit.patch is not None:
        msg = torch.where(edit.patch.unsqueeze(-1), edit.messages.to(dtype), msg)
    out = vc.new_zeros(q.size(0), vc.size(1), vc.size(2)).index_add(0, ei[1], msg)
    if edit.ablate_heads:
        keep = torch.ones(out.size(1), dtype=torch.bool, device=out.device)
        keep[list(edit.ablate_heads)] = False
        out = out.masked_fill(~keep.view(1, -1, 1), 0.0)
    out = out.to(v.dtype)
    return out, SiteRecord(ei, s.to(q.dtype), alpha.to(q.dtype), msg.to(v.dtype), out)
