"""Models built from the attention layer: layers and stacks, the encoder-decoder, the encoder-only
and decoder-only halves, incremental decoding with a KV cache, and the torch drop-ins
(``MultiheadAttention``, ``Transformer`` and its encoder/decoder layers and stacks).

May import :mod:`gnn_attention.graphs` and :mod:`gnn_attention.attention`.
"""
from gnn_attention.models import decoding
from gnn_attention.models.config import LayerConfig
from gnn_attention.models.decoder_only import DecoderOnlyConfig, DecoderOnlyModel
from gnn_attention.models.decoding import beam_search, greedy_decode
from gnn_attention.models.encoder_only import EncoderOnlyConfig, EncoderOnlyModel, pool
from gnn_attention.models.kv_cache import KVCache
from gnn_attention.models.mha import MultiheadAttention
from gnn_attention.models.torch_layers import (TransformerDecoder, TransformerDecoderLayer,
                                             TransformerEncoder, TransformerEncoderLayer)
from gnn_attention.models.seq2seq import DenseSeq2SeqModel, Seq2SeqConfig, Seq2SeqModel
from gnn_attention.models.transformer import Transformer, TransformerConfig

__all__ = ["DecoderOnlyConfig", "DecoderOnlyModel", "DenseSeq2SeqModel", "EncoderOnlyConfig",
           "EncoderOnlyModel", "KVCache", "LayerConfig", "MultiheadAttention", "Seq2SeqConfig",
           "Seq2SeqModel", "Transformer", "TransformerConfig", "TransformerDecoder",
           "TransformerDecoderLayer", "TransformerEncoder", "TransformerEncoderLayer", "beam_search",
           "decoding", "greedy_decode", "pool"]
