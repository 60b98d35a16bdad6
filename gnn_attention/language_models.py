"""The two halves of the Transformer as graph networks: BERT-style encoder-only and GPT-style
decoder-only.

Notation: B batch, T padded length, C = d_model, H heads, V vocabulary, L layers; N valid tokens
(nodes), E edges j -> i of the (full or causal) self-attention graph.

Encoder-only (BERT):  x = LN(W_tok[id] + W_pos[p] + W_type[type]);  h = Encoder(x; full graph)
Decoder-only (GPT):   x = W_tok[id] + pos;  h = Encoder(x; causal graph);  logits = W_out h
(a decoder-only stack is an encoder stack on the causal graph: there is no memory to cross-attend.)

Only valid tokens become nodes (``attention_mask``/lengths); outputs are scattered back to the
padded layout with zeros at padding. Attention weights come back as edge weights
``(edge_index [2, E], alpha [E, H])`` over packed nodes: node n is ``mask.nonzero()[n] = (b, t)``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from . import graphs
from .layers import ACTIVATIONS, Encoder, EncoderLayer
from .packing import check_lengths, check_tokens, lengths_mask, pack, unpack
from .positional import (LearnedPositions, T5RelativeBias, alibi_bias, node_positions,
                         rotary_tables, sinusoidal_encoding)

__all__ = ["DecoderOnlyConfig", "DecoderOnlyModel", "EncoderOnlyConfig", "EncoderOnlyModel", "pool"]


def _check_dims(d_model: int, nhead: int, activation: str, dropout: float) -> None:
    if d_model <= 0 or nhead <= 0 or d_model % nhead:
        raise ValueError(f"d_model ({d_model}) must be a positive multiple of nhead ({nhead})")
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {tuple(ACTIVATIONS)}, got {activation!r}")
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"dropout must be in [0, 1), got {dropout}")


def _stack(c, num_layers: int) -> Encoder:
    """L encoder layers; a final LayerNorm exactly when pre-norm (post-norm ends normalised)."""
    layer = EncoderLayer(c.d_model, c.nhead, c.dim_feedforward, c.dropout, c.activation,
                         c.layer_norm_eps, c.norm_first)
    norm = nn.LayerNorm(c.d_model, eps=c.layer_norm_eps) if c.norm_first else None
    return Encoder(layer, num_layers, norm)


@dataclass(frozen=True)
class EncoderOnlyConfig:
    """BERT-family encoder (defaults: all-MiniLM-L6-v2's shape)."""

    vocab_size: int = 30522
    d_model: int = 384
    nhead: int = 12
    num_layers: int = 6
    dim_feedforward: int = 1536
    dropout: float = 0.1
    activation: str = "gelu"
    norm_first: bool = False
    layer_norm_eps: float = 1e-12
    max_len: int = 512
    type_vocab_size: int = 2
    pad_id: int = 0

    def __post_init__(self):
        _check_dims(self.d_model, self.nhead, self.activation, self.dropout)


class EncoderOnlyModel(nn.Module):
    """BERT-style encoder on the complete graph of each sentence; holds BERT weights exactly.

    Parameters: ``word_embeddings``, ``position_embeddings``, ``token_type_embeddings``,
    ``embed_norm`` (the embedding LayerNorm), ``encoder.layers[i]`` with ``self_attn``
    (in_proj = [W_q; W_k; W_v]), ``norm1`` (attention output LayerNorm), ``linear1``/``linear2``
    (intermediate/output dense), ``norm2`` (output LayerNorm).

    **Shapes:** ``forward(input_ids [B, T], attention_mask [B, T] (1 = token, 0 = pad),
    token_type_ids [B, T], position_ids [B, T])`` -> ``hidden [B, T, C]``; with
    ``return_attention=True``: ``(hidden, all_hidden_states (L + 1 of [B, T, C]: embeddings, then
    each layer), attentions (L of (edge_index [2, E], alpha [E, H])))``.
    """

    def __init__(self, config: EncoderOnlyConfig):
        super().__init__()
        c = self.config = config
        self.word_embeddings = nn.Embedding(c.vocab_size, c.d_model)
        self.position_embeddings = LearnedPositions(c.max_len, c.d_model)
        self.token_type_embeddings = (nn.Embedding(c.type_vocab_size, c.d_model)
                                      if c.type_vocab_size else None)
        self.embed_norm = nn.LayerNorm(c.d_model, eps=c.layer_norm_eps)
        self.embed_dropout = nn.Dropout(c.dropout)
        self.encoder = _stack(c, c.num_layers)

    def forward(self, input_ids: Tensor, attention_mask: Optional[Tensor] = None,
                token_type_ids: Optional[Tensor] = None, return_attention: bool = False,
                position_ids: Optional[Tensor] = None):
        check_tokens(input_ids, self.config.vocab_size, "input_ids")
        B, T = input_ids.shape
        mask = self._mask(attention_mask, B, T, input_ids.device)
        if position_ids is None:  # as BERT: the column index, whatever the padding side
            position_ids = torch.arange(T, device=input_ids.device).expand(B, T)
        x = self.word_embeddings(input_ids) + self.position_embeddings(position_ids)
        if self.token_type_embeddings is not None:
            if token_type_ids is None:
                token_type_ids = torch.zeros_like(input_ids)
            check_tokens(token_type_ids, self.config.type_vocab_size, "token_type_ids")
            x = x + self.token_type_embeddings(token_type_ids)
        elif token_type_ids is not None:
            raise ValueError("token_type_ids given, but the model has type_vocab_size=0")
        x = pack(self.embed_dropout(self.embed_norm(x)), mask)
        graph = graphs.full(mask.sum(1).cpu(), device=x.device)
        if not return_attention:
            return unpack(self.encoder(x, graph), mask)
        h, hidden, alphas = self.encoder(x, graph, need_weights=True)
        return (unpack(h, mask), [unpack(t, mask) for t in hidden],
                [(graph.edge_index, a) for a in alphas])

    @staticmethod
    def _mask(attention_mask: Optional[Tensor], B: int, T: int, device) -> Tensor:
        if attention_mask is None:
            return torch.ones(B, T, dtype=torch.bool, device=device)
        if attention_mask.shape != (B, T):
            raise ValueError(f"attention_mask must have shape [B, T] = {[B, T]}, got "
                             f"{list(attention_mask.shape)}")
        if ((attention_mask != 0) & (attention_mask != 1)).any():
            raise ValueError("attention_mask must hold 1 (token) and 0 (padding) only")
        return attention_mask.bool()


def pool(hidden: Tensor, attention_mask: Optional[Tensor] = None, mode: str = "mean",
         normalize: bool = False) -> Tensor:
    r"""Sentence vectors from token states: ``"mean"`` over valid tokens
    (:math:`\sum_t m_t h_t / \sum_t m_t`, zero for an empty sentence) or ``"cls"`` (first token);
    ``normalize`` divides by the L2 norm (sentence-transformers' ``Normalize``).

    **Shapes:** ``hidden [B, T, C]``, ``attention_mask [B, T]`` -> ``[B, C]``.
    """
    if mode not in ("mean", "cls"):
        raise ValueError(f"mode must be 'mean' or 'cls', got {mode!r}")
    if mode == "cls":
        out = hidden[:, 0]
    else:
        m = (torch.ones(hidden.shape[:2], device=hidden.device) if attention_mask is None
             else attention_mask).to(hidden.dtype).unsqueeze(-1)
        count = m.sum(1)
        out = (hidden * m).sum(1) / torch.where(count > 0, count, torch.ones_like(count))
    return F.normalize(out, p=2, dim=-1) if normalize else out


DECODER_POSITIONALS = ("learned", "sinusoidal", "rotary", "alibi", "t5")


@dataclass(frozen=True)
class DecoderOnlyConfig:
    """GPT-style language model. ``positional``: absolute on the nodes (``"learned"``,
    ``"sinusoidal"``), rotary on q/k (``"rotary"``) or a relative bias on the edges
    (``"alibi"``, ``"t5"``: learned buckets shared by all layers)."""

    vocab_size: int
    d_model: int = 256
    nhead: int = 4
    num_layers: int = 4
    dim_feedforward: int = 1024
    dropout: float = 0.1
    activation: str = "gelu"
    norm_first: bool = True
    layer_norm_eps: float = 1e-5
    max_len: int = 256
    positional: str = "learned"
    tie_embeddings: bool = True
    pad_id: int = 0

    def __post_init__(self):
        _check_dims(self.d_model, self.nhead, self.activation, self.dropout)
        if self.positional not in DECODER_POSITIONALS:
            raise ValueError(f"positional must be one of {DECODER_POSITIONALS}, got "
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
        self.decoder = _stack(c, c.num_layers)
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
