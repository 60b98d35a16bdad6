"""Execution strategies ("kernels") for :func:`gnn_attention.functional.graph_attention`.

Every kernel computes exactly what :func:`gnn_attention.functional.reference_attention` computes,
behind one signature. The choice is made once per graph and cached on the :class:`TokenGraph`.
"""
from __future__ import annotations

from typing import Optional

from torch import Tensor

from ..functional import reference_attention

BACKENDS = ("auto", "reference")


def dispatch(q: Tensor, k: Tensor, v: Tensor, graph, edge_index: Tensor, *,
             edge_bias: Optional[Tensor], score: str, score_weight, scale: Optional[float],
             dropout_p: float, return_attention_weights: bool, backend: str):
    """Run the kernel named by ``backend`` (``"auto"``: the best one for this graph)."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    return reference_attention(q, k, v, edge_index, edge_bias=edge_bias, score=score,
                               score_weight=score_weight, scale=scale, dropout_p=dropout_p,
                               return_attention_weights=return_attention_weights)
