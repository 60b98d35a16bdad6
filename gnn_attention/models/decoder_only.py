"""The decoder half of the Transformer as a graph network: GPT-style decoder-only.

Notation: B batch, T padded length, C = d_model, H heads, V vocabulary, L layers; N valid tokens
(nodes), E edges j -> i of the causal self-attention graph.

    x = W_tok[id] + pos;  h = Encoder(x; causal graph);  logits = W_out h

A decoder-only stack is an encoder stack on the causal graph: there is no memory to cross-attend.
Only valid tokens (``lengths``) become nodes; logits are scattered back with zeros at padding.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Optional, get_args

import torch
from torch import Tensor, nn

from gnn_attention import graphs
from gnn_attention.attention.positional import (
    LearnedPositions,
    T5RelativeBias,
    alibi_bias,
    node_positions,
    rotary_tables,
    sinusoidal_encoding,
)
from gnn_attention.models.config import Activation, LayerConfig, default
from gnn_attention.models.layers import encoder_stack
from gnn_attention.models.packing import check_lengths, check_tokens, lengths_mask, pack, unpack

__all__ = ["DecoderOnlyConfig", "DecoderOnlyModel"]


Positional = Literal["learned", "sinusoidal", "rotary", "alibi", "t5"]


@dataclass(frozen=True)
class DecoderOnlyConfig(LayerConfig):
    """GPT-style language model. ``positional``: absolute on the nodes (``"learned"``,
    ``"sinusoidal"``), rotary on q/k (``"rotary"``) or a relative bias on the edges
    (``"alibi"``, ``"t5"``: learned buckets shared by all layers)."""

    vocab_size: int
    num_layers: int = 4
    max_len: int = 256
    positional: Positional = "learned"
    tie_embeddings: bool = True
    d_model: int = default(256)
    nhead: int = default(4)
    dim_feedforward: int = default(1024)
    activation: Activation = default("gelu")
    norm_first: bool = default(True)

    def __post_init__(self):
        super().__post_init__()
        if self.positional not in get_args(Positional):
            raise ValueError(f"positional must be one of {get_args(Positional)}, got "
                             f"{self.positional!r}")


class DecoderOnlyModel(nn.Module):
    """GPT-style causal language model: every token attends to itself and the tokens before it.

    **Shapes:** ``forward(input_ids [B, T], lengths [B] (default T))`` -> ``logits [B, T, V]``
    (zeros at padded positions).
    """

    def __init__(self, config: DecoderOnlyConfig):
        super().__init__()
        c = self.config = config
        self.token_embeddings = nn.Embedding(c.vocab_size, c.d_model)
        nn.init.normal_(self.token_embeddings.weight, std=0.02)
        if c.positional == "learned":
            self.position_embeddings = LearnedPositions(c.max_len, c.d_model)
            nn.init.normal_(self.position_embeddings.weight, std=0.02)
        if c.positional == "t5":
            self.relative_bias = T5RelativeBias(c.nhead, bidirectional=False)
        self.embed_dropout = nn.Dropout(c.dropout)
        self.decoder = encoder_stack(c, c.num_layers)
        self.lm_head = nn.Linear(c.d_model, c.vocab_size, bias=False)
        if c.tie_embeddings:
            self.lm_head.weight = self.token_embeddings.weight

    def forward(self, input_ids: Tensor, lengths: Optional[Tensor] = None) -> Tensor:
        c = self.config
        check_tokens(input_ids, c.vocab_size, "input_ids")
        B, T = input_ids.shape
        lengths = torch.full((B,), T, dtype=torch.long) if lengths is None else lengths
        check_lengths(lengths, B, T, "lengths")
        mask = lengths_mask(lengths.to(input_ids.device), T)
        graph = graphs.causal(lengths.cpu(), device=input_ids.device)
        x = pack(self.token_embeddings(input_ids), mask)
        pos = node_positions(lengths.cpu(), device=x.device)
        bias = rotary = None
        if c.positional == "learned":
            x = x + self.position_embeddings(pos)
        elif c.positional == "sinusoidal":
            x = x + sinusoidal_encoding(pos, c.d_model, x.dtype)
        elif c.positional == "rotary":
            rotary = rotary_tables(pos, c.d_model // c.nhead, dtype=x.dtype)
        elif c.positional == "alibi":
            bias = alibi_bias(graph, c.nhead, dtype=x.dtype)
        else:
            bias = self.relative_bias(graph)
        h = self.decoder(self.embed_dropout(x), graph, edge_bias=bias, rotary=rotary)
        return unpack(self.lm_head(h), mask)
