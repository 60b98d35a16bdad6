"""A model's forward pass cut at its seams: input node features, graphs, and the output head.

Notation: B sequences, T padded length (S for a source side), C = d_model, V vocabulary;
N packed nodes (valid tokens only), E edges j -> i.

A :class:`Plan` holds what a model's ``forward`` computes *before* its first layer (embeddings,
packed into node features; the token graphs; per-edge biases or rotary tables) and knows how to
turn the last layer's node states into the model's output. The layers themselves are walked by
:mod:`gnn_attention.interpret.runner`, so an intervention never patches a module. Every plan step
repeats its model's own forward, which the tests check (plain ``model(...)`` == an unedited run).

Stacks of each model, named as the model's attributes:

    EncoderOnlyModel   "encoder" (self-attention on the full graph of each sentence)
    DecoderOnlyModel   "decoder" (self-attention on the causal graph)
    Seq2SeqModel       "encoder" (full graph), "decoder" (causal graph + "cross": memory -> target)
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, Optional, Tuple

import torch
from torch import Tensor, nn

from gnn_attention import graphs
from gnn_attention.attention.positional import (
    alibi_bias,
    node_positions,
    rotary_tables,
    sinusoidal_encoding,
)
from gnn_attention.graphs import TokenGraph
from gnn_attention.models import DecoderOnlyModel, EncoderOnlyModel, Seq2SeqModel
from gnn_attention.models.packing import check_lengths, check_tokens, lengths_mask, pack, unpack


@dataclass(frozen=True)
class Plan:
    """Inputs of a model's layer stacks.

    Attributes:
        model: the model (in eval mode), read only.
        inputs: stack name -> packed node features ``[N, C]`` entering its first layer (replace
            one with a tensor that requires grad for input gradients: ``dataclasses.replace``).
        graphs: ``"encoder"`` / ``"decoder"`` self-attention graphs, ``"cross"`` (seq2seq).
        masks: stack name -> ``[B, T]`` bool, the padded layout of its nodes.
        edge_bias: per-edge bias ``[E, H]`` of the decoder-only self graph (ALiBi, T5), or None.
        rotary: ``(cos, sin)`` two ``[N, D/2]`` of a rotary decoder-only model, or None.
    """

    model: nn.Module
    inputs: Dict[str, Tensor]
    graphs: Dict[str, TokenGraph]
    masks: Dict[str, Tensor]
    edge_bias: Optional[Tensor] = None
    rotary: Optional[Tuple[Tensor, Tensor]] = None
    stacks: Dict[str, nn.Module] = field(default_factory=dict)

    def finish(self, states: Dict[str, Tensor]) -> Tensor:
        """The model's output from the final node states of its stacks (padded, zeros at padding)."""
        m = self.model
        if isinstance(m, EncoderOnlyModel):
            return unpack(states["encoder"], self.masks["encoder"])
        if isinstance(m, DecoderOnlyModel):
            return unpack(m.lm_head(states["decoder"]), self.masks["decoder"])
        return unpack(m.out_proj(states["decoder"]), self.masks["decoder"])


def prepare(model: nn.Module, *args, **kwargs) -> Plan:
    """The :class:`Plan` of ``model`` on the arguments its ``forward`` takes."""
    if model.training:
        raise ValueError("interventions run in eval mode (no dropout): call model.eval() first")
    if isinstance(model, EncoderOnlyModel):
        return prepare_encoder_only(model, *args, **kwargs)
    if isinstance(model, DecoderOnlyModel):
        return prepare_decoder_only(model, *args, **kwargs)
    if isinstance(model, Seq2SeqModel):
        return prepare_seq2seq(model, *args, **kwargs)
    raise TypeError(f"no intervention plan for {type(model).__name__}; supported: "
                    f"EncoderOnlyModel, DecoderOnlyModel, Seq2SeqModel")


def prepare_encoder_only(model: EncoderOnlyModel, input_ids: Tensor,
                         attention_mask: Optional[Tensor] = None,
                         token_type_ids: Optional[Tensor] = None,
                         position_ids: Optional[Tensor] = None) -> Plan:
    """BERT-style: word + position (+ type) embeddings, LayerNorm, packed; full graph per row.
    **Shapes:** ``input_ids [B, T]``, ``attention_mask [B, T]`` (1 = token)."""
    c = model.config
    check_tokens(input_ids, c.vocab_size, "input_ids")
    B, T = input_ids.shape
    if attention_mask is None:
        mask = torch.ones(B, T, dtype=torch.bool, device=input_ids.device)
    elif attention_mask.shape != (B, T) or ((attention_mask != 0) & (attention_mask != 1)).any():
        raise ValueError(f"attention_mask must be [B, T] = {[B, T]} of 0/1, got "
                         f"{list(attention_mask.shape)}")
    else:
        mask = attention_mask.bool()
    if position_ids is None:
        position_ids = torch.arange(T, device=input_ids.device).expand(B, T)
    x = model.word_embeddings(input_ids) + model.position_embeddings(position_ids)
    if model.token_type_embeddings is not None:
        if token_type_ids is None:
            token_type_ids = torch.zeros_like(input_ids)
        check_tokens(token_type_ids, c.type_vocab_size, "token_type_ids")
        x = x + model.token_type_embeddings(token_type_ids)
    elif token_type_ids is not None:
        raise ValueError("token_type_ids given, but the model has type_vocab_size=0")
    x = pack(model.embed_dropout(model.embed_norm(x)), mask)
    g = graphs.full(mask.sum(1).cpu(), device=x.device)
    return Plan(model, {"encoder": x}, {"encoder": g}, {"encoder": mask},
                stacks={"encoder": model.encoder})


def prepare_decoder_only(model: DecoderOnlyModel, input_ids: Tensor,
                         lengths: Optional[Tensor] = None) -> Plan:
    """GPT-style: token embeddings plus the configured positions; causal graph per row.
    **Shapes:** ``input_ids [B, T]``, ``lengths [B]`` (default T)."""
    c = model.config
    check_tokens(input_ids, c.vocab_size, "input_ids")
    B, T = input_ids.shape
    lengths = torch.full((B,), T, dtype=torch.long) if lengths is None else lengths
    check_lengths(lengths, B, T, "lengths")
    mask = lengths_mask(lengths.to(input_ids.device), T)
    g = graphs.causal(lengths.cpu(), device=input_ids.device)
    x = pack(model.token_embeddings(input_ids), mask)
    pos = node_positions(lengths.cpu(), device=x.device)
    bias = rotary = None
    if c.positional == "learned":
        x = x + model.position_embeddings(pos)
    elif c.positional == "sinusoidal":
        x = x + sinusoidal_encoding(pos, c.d_model, x.dtype)
    elif c.positional == "rotary":
        rotary = rotary_tables(pos, c.d_model // c.nhead, dtype=x.dtype)
    elif c.positional == "alibi":
        bias = alibi_bias(g, c.nhead, dtype=x.dtype)
    else:
        bias = model.relative_bias(g)
    return Plan(model, {"decoder": model.embed_dropout(x)}, {"decoder": g}, {"decoder": mask},
                edge_bias=bias, rotary=rotary, stacks={"decoder": model.decoder})


def prepare_seq2seq(model: Seq2SeqModel, src: Tensor, src_lengths: Tensor, tgt_in: Tensor,
                    tgt_lengths: Tensor) -> Plan:
    """Encoder-decoder, teacher-forced: source and target embeddings (scaled, plus positions),
    the full source graph, the causal target graph and the cross graph source -> target.
    **Shapes:** ``src [B, S]``, ``src_lengths [B]``, ``tgt_in [B, T]``, ``tgt_lengths [B]``."""
    for name, t, vocab in (("src", src, model.config.src_vocab_size),
                           ("tgt_in", tgt_in, model.config.tgt_vocab_size)):
        check_tokens(t, vocab, name)
    check_lengths(src_lengths, src.size(0), src.size(1), "src_lengths")
    check_lengths(tgt_lengths, tgt_in.size(0), tgt_in.size(1), "tgt_lengths")
    if tgt_in.size(0) != src.size(0):
        raise ValueError(f"src has {src.size(0)} sequences, tgt_in has {tgt_in.size(0)}")
    src_mask = lengths_mask(src_lengths.to(src.device), src.size(1))
    tgt_mask = lengths_mask(tgt_lengths.to(tgt_in.device), tgt_in.size(1))
    dev = src.device
    g = {"encoder": graphs.full(src_lengths, device=dev),
         "decoder": graphs.causal(tgt_lengths, device=dev),
         "cross": graphs.cross(src_lengths, tgt_lengths, device=dev)}
    x = {"encoder": pack(model.embed(src, "src"), src_mask),
         "decoder": pack(model.embed(tgt_in, "tgt"), tgt_mask)}
    t = model.transformer
    return Plan(model, x, g, {"encoder": src_mask, "decoder": tgt_mask},
                stacks={"encoder": t.encoder, "decoder": t.decoder})

