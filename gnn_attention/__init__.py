"""gnn_attention: attention is message passing on a graph.

Every token is a node, every allowed (query, key) pair an edge j -> i, and a softmax over each node's
incoming edges weighs the values sent along them.

Packages, in dependency order (each imports only those before it): graphs <- attention <- models
<- pretrained <- training <- viz / tools <- cli. See docs/architecture.md.

The names below are imported on first use (PEP 562), so ``import gnn_attention`` (and the
``gnn-attention`` command starting up) loads no torch until something is asked for: the command
line can then answer Ctrl-C during that import with one line instead of a traceback.
"""
from __future__ import annotations

import importlib

# name -> the module that defines it ("" : the name is itself a subpackage or module)
_EXPORTS = {
    **{n: "gnn_attention.attention" for n in (
        "AttentionMemoryError", "MultiheadAttentionConv", "TransformerConv", "dense_attention",
        "graph_attention", "positional")},
    "TokenGraph": "gnn_attention.graphs",
    **{n: "gnn_attention.models" for n in (
        "DecoderOnlyConfig", "DecoderOnlyModel", "EncoderOnlyConfig", "EncoderOnlyModel", "KVCache",
        "MultiheadAttention", "Seq2SeqConfig", "Seq2SeqModel", "Transformer", "TransformerConfig",
        "TransformerDecoder", "TransformerDecoderLayer", "TransformerEncoder",
        "TransformerEncoderLayer", "beam_search", "decoding", "greedy_decode", "pool")},
    **{n: "gnn_attention.pretrained" for n in ("load_bert", "minilm_directory",
                                               "sentence_embeddings")},
    "deterministic": "gnn_attention.training.determinism",
    "graphs": "", "pretrained": "",
}

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


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'gnn_attention' has no attribute {name!r}")
    where = _EXPORTS[name]
    value = (importlib.import_module(f"gnn_attention.{name}") if not where
             else getattr(importlib.import_module(where), name))
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__():
    return sorted(set(globals()) | set(__all__))
