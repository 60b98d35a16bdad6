"""Figures of attention as graphs: static plots (:mod:`.static`, matplotlib + networkx) and the
self-contained interactive page (:mod:`.html`).

May import :mod:`gnn_attention.graphs` only (callers pass the weights in).
"""
from gnn_attention.viz.html import to_html
from gnn_attention.viz.static import (
                                      alignment_plot,
                                      attention_graph,
                                      attention_heatmap,
                                      dense_weights,
                                      head_weights,
                                      pattern_gallery,
                                      plot_patterns,
                                      select_edges,
                                      sequence_edges,
)

__all__ = ["alignment_plot", "attention_graph", "attention_heatmap", "dense_weights",
           "head_weights", "pattern_gallery", "plot_patterns", "select_edges", "sequence_edges",
           "to_html"]
