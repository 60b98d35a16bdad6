"""Which kernel runs a graph: decided once from its structure (see the table in :mod:`.plan`) and
cached on the graph under ``"kernel"``.

The tiled kernel says itself whether its tiles pay off for a window graph, so this module sits
above both :mod:`.plan` and :mod:`.tiled`.
"""
from __future__ import annotations

from torch import Tensor

from gnn_attention.attention.kernels import tiled
from gnn_attention.attention.kernels.plan import DENSE_MASK_DENSITY, DENSE_PATTERNS, cached, lengths
from gnn_attention.graphs import TokenGraph


def choose(graph: TokenGraph | Tensor) -> str:
    """The kernel ``backend="auto"`` runs for this graph (cached on a TokenGraph)."""
    if not isinstance(graph, TokenGraph):
        return "csr"
    return cached(graph, "kernel", lambda: _choose(graph))


def _choose(graph: TokenGraph) -> str:
    name = graph.pattern.name
    if name in DENSE_PATTERNS:
        return "dense"
    if name == "window" and tiled.check(graph) is None and tiled.worthwhile(graph):
        return "tiled"
    n = lengths(graph)
    pairs = sum(t * s for t, s in zip(n.T, n.S))
    if pairs and graph.num_edges >= DENSE_MASK_DENSITY * pairs:
        return "dense"
    return "csr"
