"""gnn_attention: attention is message passing on a graph.

Every token is a node, every allowed (query, key) pair an edge j -> i, and a softmax over each node's
incoming edges weighs the values sent along them.
"""
from . import decoding, graphs, positional, pretrained
from .conv import MultiheadAttentionConv
from .decoding import beam_search, greedy_decode
from .determinism import deterministic
from .functional import dense_attention, graph_attention
from .graphs import TokenGraph
from .kernels import AttentionMemoryError
from .kv_cache import KVCache
from .mha import MultiheadAttention
from .models import (DecoderOnlyConfig, DecoderOnlyModel, EncoderOnlyConfig, EncoderOnlyModel,
                     Seq2SeqConfig, Seq2SeqModel, pool)
from .pretrained import load_bert, minilm_directory, sentence_embeddings
from .transformer import Transformer, TransformerConfig

__version__ = "0.1.0"
__all__ = [
    "AttentionMemoryError", "DecoderOnlyConfig", "DecoderOnlyModel", "EncoderOnlyConfig", "EncoderOnlyModel", "KVCache",
    "MultiheadAttention", "MultiheadAttentionConv", "Seq2SeqConfig", "Seq2SeqModel", "TokenGraph",
    "Transformer", "TransformerConfig", "__version__", "beam_search", "decoding", "dense_attention", "deterministic",
    "graph_attention", "graphs", "greedy_decode", "load_bert", "minilm_directory", "pool",
    "positional", "pretrained", "sentence_embeddings",
]
