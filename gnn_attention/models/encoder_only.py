"""The encoder half of the Transformer as a graph network: BERT-style encoder-only.

Notation: B batch, T padded length, C = d_model, H heads, V vocabulary, L layers; N valid tokens
(nodes), E edges j -> i of the complete self-attention graph of each sentence.

    x = LN(W_tok[id] + W_pos[p] + W_type[type]);  h = Encoder(x; full graph)

Only valid tokens become nodes (``attention_mask``); outputs are scattered back to the padded
layout with zeros at padding. Attention weights come back as edge weights
``(edge_index [2, E], alpha [E, H])`` over packed nodes: node n is ``mask.nonzero()[n] = (b, t)``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gnn_attention import graphs
from gnn_attention.attention.positional import LearnedPositions
from gnn_attention.models.config import Activation, LayerConfig, default
from gnn_attention.models.layers import encoder_stack
from gnn_attention.models.packing import check_tokens, pack, unpack

__all__ = ["EncoderOnlyConfig", "EncoderOnlyModel", "pool"]


@dataclass(frozen=True)
class EncoderOnlyConfig(LayerConfig):
    """BERT-family encoder (defaults: all-MiniLM-L6-v2's shape)."""

    vocab_size: int = 30522
    num_layers: int = 6
    max_len: int = 512
    type_vocab_size: int = 2
    d_model: int = default(384)
    nhead: int = default(12)
    dim_feedforward: int = default(1536)
    activation: Activation = default("gelu")
    layer_norm_eps: float = default(1e-12)


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
        self.encoder = encoder_stack(c, c.num_layers)

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
