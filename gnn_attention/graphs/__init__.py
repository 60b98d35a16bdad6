"""Token graphs: attention patterns as edge sets.

Every token is a node; every allowed (query, key) pair is an edge ``j -> i`` from a source node j
(key/value) to a target node i (query). A batch of sequences is the disjoint union of one graph per
sequence (PyG style: no batch axis, no padding inside the graph, no edge between two sequences).

Notation: B sequences; sequence b has T_b target (query) tokens and S_b source (key) tokens;
N_dst = sum T_b, N_src = sum S_b nodes; E edges; t, s = positions inside a sequence.

Conventions (see docs/decisions.md):
  * ``edge_index[0]`` = source j, ``edge_index[1]`` = target i; edges sorted by (target, source).
  * Edge present = attention allowed. Dense masks say which PyTorch convention they use:
    ``"sdpa"`` (``F.scaled_dot_product_attention``: True = allowed) or
    ``"mha"`` (``nn.MultiheadAttention``: True = blocked).
  * Causal alignment is top-left by default (as SDPA ``is_causal``): s <= t. Bottom-right aligns the
    last query with the last key: s <= t + S - T (used by incremental decoding).
"""
from gnn_attention.graphs.budget import MemoryLimitError
from gnn_attention.graphs.builders import causal, cross, from_predicate, full, window
from gnn_attention.graphs.composite import bigbird, incremental_causal, padded_cross
from gnn_attention.graphs.convert import (
                                       from_dense_mask,
                                       intersection,
                                       to_dense_mask,
                                       to_networkx,
                                       union,
)
from gnn_attention.graphs.core import (
                                       ALIGNS,
                                       CONVENTIONS,
                                       Pattern,
                                       TokenGraph,
                                       as_lengths,
                                       check_edge_index,
                                       from_edge_index,
)
from gnn_attention.graphs.dense import edges_to_dense
from gnn_attention.graphs.masks import masks_to_graph
from gnn_attention.graphs.positions import edge_positions, node_positions, sequence_and_position

__all__ = ["ALIGNS", "CONVENTIONS", "MemoryLimitError", "Pattern", "TokenGraph", "as_lengths",
           "bigbird", "causal", "check_edge_index", "cross", "edge_positions", "edges_to_dense",
           "from_dense_mask", "from_edge_index", "from_predicate", "full", "incremental_causal",
           "intersection", "masks_to_graph", "node_positions", "padded_cross",
           "sequence_and_position", "to_dense_mask", "to_networkx", "union", "window"]
