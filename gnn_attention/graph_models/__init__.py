"""Graph transformers as edge programs: attention over chosen edge sets with per-edge attributes.

    encodings   structural encodings: shortest-path distances, spatial bias, degrees, RWSE, LapPE
    edge_path   Graphormer's edge-path encoding: one shortest path per pair, a bias per hop and head
    edge_sets   edge sets from a PyG ``batch`` vector: graph, all pairs, k-hop, expander, virtual
                nodes, typed unions
    gps         ``GPSLayer``: PyG's ``GPSConv`` without padding (``from_pyg`` copies its weights)
    graphormer  ``GraphormerLayer``: all pairs with a per-head shortest-path bias
    exphormer   ``ExphormerLayer``: graph + expander + virtual-node edges, a bias per edge type
    typed       per-type key/value offsets on a union of edge sets (``typed_attention``)
    bench       peak memory and time of ``GPSLayer`` against ``GPSConv`` on ragged batches

May import :mod:`gnn_attention.graphs`, :mod:`gnn_attention.attention` and
:mod:`gnn_attention.models`, nothing above them.
"""
from gnn_attention.graph_models import edge_sets, encodings
from gnn_attention.graph_models.edge_path import EdgePathBias, EdgePaths, shortest_path_edges
from gnn_attention.graph_models.exphormer import ExphormerLayer, exphormer_inputs
from gnn_attention.graph_models.gps import GPSLayer, all_pairs_attention
from gnn_attention.graph_models.graphormer import GraphormerLayer, graphormer_inputs
from gnn_attention.graph_models.typed import TypedKeyValue, typed_attention

__all__ = ["EdgePathBias", "EdgePaths", "ExphormerLayer", "GPSLayer", "GraphormerLayer",
           "TypedKeyValue", "all_pairs_attention", "edge_sets", "encodings", "exphormer_inputs",
           "graphormer_inputs", "shortest_path_edges", "typed_attention"]
