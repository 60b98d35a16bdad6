"""gnn_attention: attention is message passing on a graph.

Every token is a node, every allowed (query, key) pair an edge j -> i, and a softmax over each node's
incoming edges weighs the values sent along them.
"""
from . import graphs
from .conv import MultiheadAttentionConv
from .functional import dense_attention, graph_attention
from .graphs import TokenGraph
from .mha import MultiheadAttention

__version__ = "0.1.0"
__all__ = ["MultiheadAttention", "MultiheadAttentionConv", "TokenGraph", "dense_attention",
           "graph_attention", "graphs", "__version__"]
