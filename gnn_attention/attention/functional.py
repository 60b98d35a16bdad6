"""``graph_attention``: the entry point of attention as message passing.

Notation: N_dst target (query) nodes, N_src source (key/value) nodes, E edges j -> i, H heads,
D query/key width per head, Dv value width per head.

It validates its inputs once, before any computation, then hands them to the kernel the graph's
plan chooses (:mod:`gnn_attention.attention.kernels`); every kernel computes what
:func:`~gnn_attention.attention.math.reference_attention` computes. The math (score functions,
segment softmax, the dense reference) lives in :mod:`gnn_attention.attention.math`.
"""
from __future__ import annotations

from typing import Optional, Union

import torch
from torch import Tensor

from gnn_attention.attention import kernels
from gnn_attention.attention.math import (  # noqa: F401
    SCORES,
    ScoreWeight,
    check_inputs,
    dense_attention,
    reference_attention,
)
from gnn_attention.graphs import TokenGraph


def graph_attention(q: Tensor, k: Tensor, v: Tensor, edge_index: Union[Tensor, TokenGraph], *,
                    edge_bias: Optional[Tensor] = None, score: str = "scaled_dot",
                    score_weight: ScoreWeight = None, scale: Optional[float] = None,
                    dropout_p: float = 0.0, return_attention_weights: bool = False,
                    strict: bool = False, backend: str = "auto"):
    """Multi-head attention as message passing over the edges j -> i of a graph.

    Args:
        q, k, v: ``[N_dst, H, D]``, ``[N_src, H, D]``, ``[N_src, H, Dv]``.
        edge_index: ``[2, E]`` (row 0 = source j, row 1 = target i) or a :class:`TokenGraph`.
        edge_bias: optional ``[E, H]`` (or ``[E, 1]``) added to the scores, e.g. a relative-position
            bias carried as an edge attribute; -inf removes the edge for that head.
        score, score_weight, scale: the score function (see module docstring).
        dropout_p: dropout on the attention weights (apply only in training, as with SDPA).
        return_attention_weights: also return ``alpha [E, H]``, in the order of ``edge_index``.
        strict: raise if a target has no incoming edge instead of returning zeros for it.
        backend: ``"auto"`` or a kernel name from :data:`gnn_attention.attention.kernels.BACKENDS`;
            ``"reference"`` runs the readable gather -> segment softmax -> scatter form.

    Returns:
        ``out [N_dst, H, Dv]``, or ``(out, alpha [E, H])``.
    """

    if not 0.0 <= dropout_p <= 1.0:  # a negative p would otherwise be silently ignored
        raise ValueError(f"dropout_p must be in [0, 1], got {dropout_p}")
    ei = check_inputs(q, k, v, edge_index, edge_bias, score, score_weight, scale)
    if strict:
        deg = edge_index.in_degree() if isinstance(edge_index, TokenGraph) else \
            torch.bincount(ei[1], minlength=q.size(0))
        if q.size(0) and int(deg.min()) == 0:
            raise ValueError(f"strict=True: {int((deg == 0).sum())} target node(s) have no incoming "
                             f"edge (first: {int((deg == 0).nonzero()[0])})")
    return kernels.dispatch(q, k, v, edge_index, ei, edge_bias=edge_bias, score=score,
                            score_weight=score_weight, scale=scale, dropout_p=dropout_p,
                            return_attention_weights=return_attention_weights, backend=backend)
