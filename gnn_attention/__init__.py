"""gnn_attention: attention is message passing on a graph.

Every token is a node, every allowed (query, key) pair an edge j -> i, and a softmax over each node's
incoming edges weighs the values sent along them.

Packages, in dependency order (each imports only those before it): graphs <- attention <- models
<- pretrained <- training <- viz / tools <- cli. See docs/architecture.md.
"""
from gnn_attention import graphs, pretrained
from gnn_attention.attention import (AttentionMemoryError, MultiheadAttentionConv, TransformerConv,
                                     dense_attention, graph_attention, positional)
from gnn_attention.graphs import TokenGraph
from gnn_attention.models import (DecoderOnlyConfig, DecoderOnlyModel, EncoderOnlyConfig,
                                  EncoderOnlyModel, KVCache, MultiheadAttention, Seq2SeqConfig,
                                  Seq2SeqModel, Transformer, TransformerConfig, TransformerDecoder,
                                  TransformerDecoderLayer, TransformerEncoder,
                                  TransformerEncoderLayer, beam_search, decoding, greedy_decode,
                                  pool)
from gnn_attention.pretrained import load_bert, minilm_directory, sentence_embeddings
from gnn_attention.training.determinism import deterministic

__version__ = "0.1.0"
__all__ = [
    "AttentionMemoryError", "DecoderOnlyConfig", "DecoderOnlyModel", "EncoderOnlyConfig",
    "EncoderOnlyModel", "KVCache", "MultiheadAttention", "MultiheadAttentionConv", "Seq2SeqConfig",
    "Seq2SeqModel", "TokenGraph", "Transformer", "TransformerConfig", "TransformerConv",
    "TransformerDecoder", "TransformerDecoderLayer", "TransformerEncoder", "TransformerEncoderLayer",
    "__version__", "beam_search", "decoding", "dense_attention", "deterministic",
    "graph_attention", "graphs", "greedy_decode", "load_bert", "minilm_directory", "pool",
    "positional", "pretrained", "sentence_embeddings",
]
