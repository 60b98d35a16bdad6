"""``GraphormerLayer``: Graphormer (Ying et al. 2021) as attention over all pairs of each graph with a
shortest-path bias per edge and head, no padding and no ``[G, H, N, N]`` bias tensor held by the user.

Notation: N nodes of a mini-batch of G graphs (``batch [N]``), E graph edges j -> i, P attention
edges (all pairs of each graph), H heads, C channels, L the largest distance embedded.

    a^h_ij = q^h_i . k^h_j / sqrt(D) + b^h_{spd(j, i)} (+ an optional per-edge bias)
    h      = x + Dropout(MHA(LN(x); a))              (pre-LayerNorm, as in Graphormer)
    out    = h + FFN(LN(h))

The spatial bias is an edge attribute of the all-pairs graph: ``spd`` is computed once per batch
from the graph's own (sorted) edges by :func:`graphormer_inputs`, so bias and edges are aligned by
construction. With ``edge_dim`` the layer also adds the edge-path encoding
(:class:`~.edge_path.EdgePathBias`: the mean of ``x_{e_n} . w^h_n`` over the first L edges of one
shortest path), from the paths :func:`graphormer_inputs` finds with ``edge_paths=True``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from torch import Tensor, nn

from gnn_attention.attention import MultiheadAttentionConv
from gnn_attention.graph_models.edge_path import EdgePathBias, EdgePaths, shortest_path_edges
from gnn_attention.graph_models.edge_sets import graph_edges, graph_sizes
from gnn_attention.graph_models.encodings import SpatialBias, shortest_path_distance
from gnn_attention.graphs import TokenGraph, full


@dataclass(frozen=True)
class GraphormerInputs:
    """The edge program of a Graphormer stack, built once per batch: ``graph`` the all-pairs
    :class:`TokenGraph` (edges sorted by (target, source)), ``distance [P]`` the capped hop
    distance j -> i of each of its edges (L + 1 = farther or unreachable), ``paths`` the first L
    edges of one shortest path per pair (ids into the input ``edge_index``) or None."""

    graph: TokenGraph
    distance: Tensor
    paths: Optional[EdgePaths] = None


def graphormer_inputs(edge_index: Tensor, batch: Tensor, max_distance: int,
                      edge_paths: bool = False) -> GraphormerInputs:
    """All pairs of each graph and their shortest-path distances along ``edge_index``;
    ``edge_paths=True`` also finds the first ``max_distance`` edges of one shortest path per pair
    (:func:`~.edge_path.shortest_path_edges`), for a layer with ``edge_dim``.

    **Shapes:** ``edge_index [2, E]``, ``batch [N]`` -> a graph with ``P = sum_g N_g^2`` edges,
    ``distance [P]`` and ``paths.edges [P, L]``."""
    graph_edges(edge_index, batch)
    sizes = graph_sizes(batch).cpu()
    graph = full(sizes, device=batch.device)
    dist = shortest_path_distance(edge_index, batch.numel(), graph.edge_index, max_distance)
    paths = shortest_path_edges(edge_index, batch.numel(), graph.edge_index,
                                max(max_distance, 1)) if edge_paths else None
    return GraphormerInputs(graph, dist, paths)


class GraphormerLayer(nn.Module):
    r"""One Graphormer encoder layer.

    Edge program: all pairs (j, i) of each graph; edge attribute ``spd(j, i)``, embedded per head
    as ``edge_bias`` (:class:`~.encodings.SpatialBias`); with ``edge_dim`` F, plus the edge-path
    encoding of the graph's ``edge_attr`` (:class:`~.edge_path.EdgePathBias`, L hop weights); an
    extra ``edge_bias [P, H]`` is added to both.

    Args: ``channels`` C, ``heads`` H, ``max_distance`` L, ``ffn_channels`` (default C),
    ``dropout`` (after attention and in the FFN), ``attn_dropout`` (on the attention weights),
    ``edge_dim`` (None: no edge-path encoding).

    **Shapes:** ``x [N, C]``, ``inputs`` from :func:`graphormer_inputs`, ``edge_attr [E, F]``
    aligned with the ``edge_index`` the inputs were built from -> ``[N, C]``.
    """

    def __init__(self, channels: int, heads: int, max_distance: int = 5,
                 ffn_channels: Optional[int] = None, dropout: float = 0.0,
                 attn_dropout: float = 0.0, edge_dim: Optional[int] = None):
        super().__init__()
        ffn = ffn_channels or channels
        self.channels, self.heads = channels, heads
        self.norm1 = nn.LayerNorm(channels)
        self.attn = MultiheadAttentionConv(channels, heads, dropout=attn_dropout)
        self.spatial = SpatialBias(max_distance, heads)
        self.edge_path = None if edge_dim is None else \
            EdgePathBias(edge_dim, max(max_distance, 1), heads)
        self.dropout = nn.Dropout(dropout)
        self.norm2 = nn.LayerNorm(channels)
        self.ffn = nn.Sequential(nn.Linear(channels, ffn), nn.GELU(), nn.Dropout(dropout),
                                 nn.Linear(ffn, channels), nn.Dropout(dropout))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for m in (self.norm1, self.attn, self.spatial, self.norm2, self.ffn[0], self.ffn[3]):
            m.reset_parameters()
        if self.edge_path is not None:
            self.edge_path.reset_parameters()

    def forward(self, x: Tensor, inputs: GraphormerInputs, edge_bias: Optional[Tensor] = None,
                edge_attr: Optional[Tensor] = None) -> Tensor:
        if inputs.graph.num_dst != x.size(0):
            raise ValueError(f"inputs were built for {inputs.graph.num_dst} nodes, x has {x.size(0)}")
        if self.edge_path is not None and (edge_attr is None or inputs.paths is None):
            raise ValueError("this layer has edge_dim set: pass edge_attr [E, F] and inputs built "
                             "with graphormer_inputs(..., edge_paths=True)")
        if self.edge_path is None and edge_attr is not None:
            raise ValueError("edge_attr given but this layer has edge_dim=None")
        bias = self.spatial(inputs.distance)
        if self.edge_path is not None:
            bias = bias + self.edge_path(edge_attr.to(bias.dtype), inputs.paths)
        if edge_bias is not None:
            bias = bias + edge_bias
        h = x + self.dropout(self.attn(self.norm1(x), inputs.graph, edge_bias=bias))
        return h + self.ffn(self.norm2(h))

    def __repr__(self) -> str:
        return (f"{self.__class__.__name__}({self.channels}, heads={self.heads}, "
                f"max_distance={self.spatial.max_distance})")
