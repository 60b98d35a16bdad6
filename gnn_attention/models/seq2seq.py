"""Sequence-to-sequence model on token graphs and its dense twin.

Notation: B batch, S source length, T target length (padded), C = d_model, H heads, V vocabulary;
lengths are right-padding lengths; N_src = sum S_b, N_dst = sum T_b nodes.

    x_src = Emb_src(src) * sqrt(C) + P(s)          P: sinusoidal or learned positions
    memory = Encoder(x_src; full(S_b))            one self-attention graph per sentence
    y      = Decoder(x_tgt, memory; causal(T_b), cross(S_b -> T_b))
    logits = W_out y + b_out                      W_out tied to Emb_tgt when ``tie_embeddings``

Padded tensors come in and go out; inside, every valid token is a node and the three graphs are
built once per call from the lengths. ``to_dense()`` returns the same model whose core is
``nn.Transformer`` (dense masks) with copied weights: identical state-dict names.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, fields
from typing import Literal, Optional, get_args

import torch
from torch import Tensor, nn

from gnn_attention import graphs
from gnn_attention.attention.positional import LearnedPositions, sinusoidal_encoding
from gnn_attention.graphs.dense import edges_to_dense
from gnn_attention.models.config import LayerConfig, TransformerConfig, default
from gnn_attention.models.kv_cache import KVCache, decoder_step, init_cache
from gnn_attention.models.packing import check_lengths, check_tokens, lengths_mask, pack, unpack
from gnn_attention.models.transformer import Transformer

__all__ = ["DenseSeq2SeqModel", "Seq2SeqConfig", "Seq2SeqModel"]


Positional = Literal["sinusoidal", "learned"]


@dataclass(frozen=True)
class Seq2SeqConfig(LayerConfig):
    """An encoder-decoder translation model. ``positional``: ``"sinusoidal"`` or ``"learned"``
    (``max_len`` positions, beyond which learned positions raise); ``tie_embeddings`` shares the
    target embedding with the output projection. The model masks by lengths, so the content of
    padding never matters."""

    src_vocab_size: int
    tgt_vocab_size: int
    num_encoder_layers: int = 3
    num_decoder_layers: int = 3
    max_len: int = 256
    positional: Positional = "sinusoidal"
    tie_embeddings: bool = False
    d_model: int = default(256)
    nhead: int = default(4)
    dim_feedforward: int = default(1024)

    def __post_init__(self):
        super().__post_init__()
        if self.positional not in get_args(Positional):
            raise ValueError(f"positional must be one of {get_args(Positional)}, got "
                             f"{self.positional!r}")
        if min(self.src_vocab_size, self.tgt_vocab_size, self.max_len) <= 0:
            raise ValueError("vocabulary sizes and max_len must be positive")

    def transformer(self) -> TransformerConfig:
        return TransformerConfig(num_encoder_layers=self.num_encoder_layers,
                                 num_decoder_layers=self.num_decoder_layers,
                                 **{f.name: getattr(self, f.name) for f in fields(LayerConfig)})


class _Seq2SeqBase(nn.Module):
    """Embeddings, positions and output projection, shared by the graph model and its dense twin."""

    def __init__(self, config: Seq2SeqConfig):
        super().__init__()
        c = self.config = config
        self.src_embed = nn.Embedding(c.src_vocab_size, c.d_model)
        self.tgt_embed = nn.Embedding(c.tgt_vocab_size, c.d_model)
        if c.positional == "learned":
            self.src_pos = LearnedPositions(c.max_len, c.d_model)
            self.tgt_pos = LearnedPositions(c.max_len, c.d_model)
        self.embed_dropout = nn.Dropout(c.dropout)
        self.out_proj = nn.Linear(c.d_model, c.tgt_vocab_size)
        # Embeddings ~ N(0, 1/C), so that Emb * sqrt(C) has unit variance (Vaswani's scaling).
        for emb in (self.src_embed, self.tgt_embed):
            nn.init.normal_(emb.weight, std=c.d_model ** -0.5)
        if c.tie_embeddings:
            self.out_proj.weight = self.tgt_embed.weight

    def _positions(self, table: Optional[nn.Module], pos: Tensor) -> Tensor:
        if table is not None:
            return table(pos)
        return sinusoidal_encoding(pos.flatten(), self.config.d_model).view(*pos.shape, -1)

    def embed(self, tokens: Tensor, side: str, positions: Optional[Tensor] = None) -> Tensor:
        """``tokens [B, T]`` -> ``[B, T, C]``; positions default to ``0..T-1``."""
        emb, table = ((self.src_embed, getattr(self, "src_pos", None)) if side == "src" else
                      (self.tgt_embed, getattr(self, "tgt_pos", None)))
        if positions is None:
            positions = torch.arange(tokens.size(1), device=tokens.device).expand_as(tokens)
        x = emb(tokens) * math.sqrt(self.config.d_model)
        x = x + self._positions(table, positions).to(device=x.device, dtype=x.dtype)
        return self.embed_dropout(x)

    def _check(self, src, src_lengths, tgt_in=None, tgt_lengths=None) -> None:
        check_tokens(src, self.config.src_vocab_size, "src")
        check_lengths(src_lengths, src.size(0), src.size(1), "src_lengths")
        if tgt_in is not None:
            check_tokens(tgt_in, self.config.tgt_vocab_size, "tgt_in")
            check_lengths(tgt_lengths, tgt_in.size(0), tgt_in.size(1), "tgt_lengths")
            if tgt_in.size(0) != src.size(0):
                raise ValueError(f"src has {src.size(0)} sequences, tgt_in has {tgt_in.size(0)}")

    def forward(self, src: Tensor, src_lengths: Tensor, tgt_in: Tensor, tgt_lengths: Tensor,
                return_cross_attention: bool = False):
        """Teacher-forced logits ``[B, T, V]`` (zeros at padded positions); with
        ``return_cross_attention`` also a list (one per decoder layer) of ``[B, H, T, S]``."""
        self._check(src, src_lengths, tgt_in, tgt_lengths)
        memory = self.encode(src, src_lengths)
        return self.decode(memory, src_lengths, tgt_in, tgt_lengths, return_cross_attention)


class Seq2SeqModel(_Seq2SeqBase):
    """Encoder-decoder Transformer whose attention is message passing on token graphs.

    **Shapes:** ``forward(src [B, S] long, src_lengths [B], tgt_in [B, T] long, tgt_lengths [B])
    -> logits [B, T, V]``; ``encode -> memory [B, S, C]``; ``decode(memory, src_lengths, tgt_in,
    tgt_lengths) -> [B, T, V]``; incremental: ``init_cache(memory, src_lengths) -> KVCache``,
    ``decode_step(tokens [B], cache) -> (logits [B, V], cache)``.
    """

    def __init__(self, config: Seq2SeqConfig):
        super().__init__(config)
        self.transformer = Transformer.from_config(config.transformer(), batch_first=True)

    def encode(self, src: Tensor, src_lengths: Tensor) -> Tensor:
        """Encoder states ``[B, S, C]`` (zeros at padded positions)."""
        self._check(src, src_lengths)
        mask = lengths_mask(src_lengths.to(src.device), src.size(1))
        g = graphs.full(src_lengths, device=src.device)
        h = self.transformer.encoder.graph_forward(pack(self.embed(src, "src"), mask), g)
        return unpack(h, mask)

    def decode(self, memory: Tensor, src_lengths: Tensor, tgt_in: Tensor, tgt_lengths: Tensor,
               return_cross_attention: bool = False):
        """Teacher-forced decoder over a whole target prefix (full recomputation)."""
        check_tokens(tgt_in, self.config.tgt_vocab_size, "tgt_in")
        check_lengths(tgt_lengths, tgt_in.size(0), tgt_in.size(1), "tgt_lengths")
        check_lengths(src_lengths, memory.size(0), memory.size(1), "src_lengths")
        src_mask = lengths_mask(src_lengths.to(memory.device), memory.size(1))
        tgt_mask = lengths_mask(tgt_lengths.to(tgt_in.device), tgt_in.size(1))
        dev = tgt_in.device
        g_self = graphs.causal(tgt_lengths, device=dev)
        g_cross = graphs.cross(src_lengths, tgt_lengths, device=dev)
        res = self.transformer.decoder.graph_forward(pack(self.embed(tgt_in, "tgt"), tgt_mask),
                                                     pack(memory, src_mask), g_self, g_cross,
                                                     need_weights=return_cross_attention)
        y = res[0] if return_cross_attention else res
        logits = unpack(self.out_proj(y), tgt_mask)
        if not return_cross_attention:
            return logits
        T, S = tgt_in.size(1), memory.size(1)
        return logits, [edges_to_dense(g_cross, a, T, S) for a in res[2]]

    def init_cache(self, memory: Tensor, src_lengths: Tensor) -> KVCache:
        """An empty decoding cache holding each layer's projected memory keys/values."""
        check_lengths(src_lengths, memory.size(0), memory.size(1), "src_lengths")
        return init_cache(self.transformer.decoder, memory, src_lengths)

    def decode_step(self, tokens: Tensor, cache: KVCache):
        """Feed token ``tokens[b]`` at position ``cache.length``; ``-> (logits [B, V], cache)``."""
        if tokens.dim() != 1:
            raise ValueError(f"tokens must be [B] (one new token per sequence), got "
                             f"{list(tokens.shape)}")
        check_tokens(tokens.unsqueeze(1), self.config.tgt_vocab_size, "tokens")
        pos = torch.full_like(tokens, cache.length).unsqueeze(1)
        x = self.embed(tokens.unsqueeze(1), "tgt", pos).squeeze(1)
        y, cache = decoder_step(self.transformer.decoder, x, cache)
        return self.out_proj(y), cache

    def to_dense(self) -> "DenseSeq2SeqModel":
        """The same model with ``nn.Transformer`` as its core (copied weights, same mode)."""
        p = next(self.parameters())
        dense = DenseSeq2SeqModel(self.config).to(device=p.device, dtype=p.dtype)
        dense.load_state_dict(self.state_dict())
        return dense.train(self.training)


class DenseSeq2SeqModel(_Seq2SeqBase):
    """The reference twin: identical embeddings and projection around ``nn.Transformer`` with
    dense key-padding and causal masks. Same ``forward``/``encode``/``decode`` contract."""

    def __init__(self, config: Seq2SeqConfig):
        super().__init__(config)
        c = config.transformer()
        with warnings.catch_warnings():  # torch's note that its nested-tensor fast path is off
            warnings.filterwarnings("ignore", message="enable_nested_tensor is True")
            self.transformer = nn.Transformer(c.d_model, c.nhead, c.num_encoder_layers,
                                              c.num_decoder_layers, c.dim_feedforward,
                                              c.dropout, c.activation,
                                              layer_norm_eps=c.layer_norm_eps, batch_first=True,
                                              norm_first=c.norm_first)

    def encode(self, src: Tensor, src_lengths: Tensor) -> Tensor:
        self._check(src, src_lengths)
        mask = lengths_mask(src_lengths.to(src.device), src.size(1))
        out = self.transformer.encoder(self.embed(src, "src"), src_key_padding_mask=~mask)
        return out.masked_fill(~mask.unsqueeze(-1), 0.0)

    def decode(self, memory: Tensor, src_lengths: Tensor, tgt_in: Tensor, tgt_lengths: Tensor,
               return_cross_attention: bool = False):
        if return_cross_attention:
            raise ValueError("the dense twin does not return attention weights")
        T = tgt_in.size(1)
        src_mask = lengths_mask(src_lengths.to(memory.device), memory.size(1))
        tgt_mask = lengths_mask(tgt_lengths.to(tgt_in.device), T)
        # Bool masks throughout (True = blocked): torch warns when bool and float masks mix.
        causal = torch.ones(T, T, dtype=torch.bool, device=tgt_in.device).triu(1)
        y = self.transformer.decoder(self.embed(tgt_in, "tgt"), memory, tgt_mask=causal,
                                     tgt_key_padding_mask=~tgt_mask,
                                     memory_key_padding_mask=~src_mask, tgt_is_causal=True)
        return self.out_proj(y).masked_fill(~tgt_mask.unsqueeze(-1), 0.0)

