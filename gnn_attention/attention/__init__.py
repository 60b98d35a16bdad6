"""Attention on a token graph: the math, the ``graph_attention`` entry point and its kernels, the
conv layer, positional information as node and edge attributes.

    math         scores, segment softmax, the message-passing and dense references (pure functions)
    functional   ``graph_attention(q, k, v, graph)``: validation, then the planned kernel
    kernels/     plan, dense (SDPA), tiled windows, fused CSR, memory guard
    conv         ``MultiheadAttentionConv``: a PyG ``MessagePassing`` layer owning the projections
    transformer_conv  ``TransformerConv``: the drop-in for PyG's layer (per-head channels, concat)
    positional   sinusoidal / learned / rotary on nodes; T5 buckets and ALiBi on edges

May import :mod:`gnn_attention.graphs` only.
"""
from gnn_attention.attention import kernels, positional
from gnn_attention.attention.conv import MultiheadAttentionConv
from gnn_attention.attention.functional import graph_attention
from gnn_attention.attention.kernels import BACKENDS, AttentionMemoryError
from gnn_attention.attention.math import SCORES, dense_attention, reference_attention
from gnn_attention.attention.transformer_conv import TransformerConv

__all__ = ["BACKENDS", "SCORES", "AttentionMemoryError", "MultiheadAttentionConv",
           "TransformerConv", "dense_attention", "graph_attention", "kernels", "positional",
           "reference_attention"]
