"""T5 as token graphs: relative-position buckets as per-head edge attributes, unscaled scores,
RMS norm, pre-norm blocks, ReLU or gated-GELU feed-forward.

Notation: B rows, N_src / N_dst valid source / target tokens (nodes), C = d_model, H heads,
D = d_kv (H * D need not be C), F = d_ff, E edges j -> i, t / s the positions of an edge's target
and source, n_b buckets, d_max the max distance.

The graphs are BART's (full encoder, causal decoder, bipartite cross); what T5 adds lives on the
edges. Every self-attention edge j -> i carries the bucket of its relative position r = s - t,

    bidirectional (encoder):   n = n_b / 2,  bucket = n * [r > 0] + f(|r|)
    unidirectional (decoder):  n = n_b,      bucket = f(max(-r, 0))
    f(a) = a if a < n/2, else min(n/2 + floor(log(a / (n/2)) / log(d_max / (n/2)) * (n/2)), n - 1)

and its edge attribute is the learned bias ``b[bucket] in R^H`` (one table per stack, shared by
its layers), added to the unscaled score ``q_i . k_j``. Cross-attention edges carry no bias. The
LM head reads ``h * C^-1/2`` when the output embedding is tied (``scale_decoder_outputs``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from gnn_attention.graphs import causal, cross, full, node_positions
from gnn_attention.pretrained.bart import columns
from gnn_attention.pretrained.blocks import (
    GraphAttention,
    RMSNorm,
    activation,
    check_batch,
    check_vocab,
    lengths_of,
    special_tokens,
)
from gnn_attention.pretrained.generation import Cache, extend, generate_seq2seq, step_graph


@dataclass(frozen=True)
class T5Config:
    """Sizes and options of a T5 (``transformers.T5Config`` names)."""

    vocab_size: int
    d_model: int
    d_kv: int
    d_ff: int
    num_layers: int
    num_decoder_layers: int
    num_heads: int
    num_buckets: int = 32
    max_distance: int = 128
    activation: str = "relu"
    gated: bool = False
    eps: float = 1e-6
    scale_decoder_outputs: bool = True
    decoder_start_token_id: int = 0
    eos_token_id: int | None = 1
    pad_token_id: int | None = 0

    @classmethod
    def from_hf(cls, cfg, tokens: dict) -> T5Config:
        scale = getattr(cfg, "scale_decoder_outputs", getattr(cfg, "tie_word_embeddings", True))
        return cls(cfg.vocab_size, cfg.d_model, cfg.d_kv, cfg.d_ff, cfg.num_layers,
                   cfg.num_decoder_layers, cfg.num_heads, cfg.relative_attention_num_buckets,
                   cfg.relative_attention_max_distance, cfg.dense_act_fn, bool(cfg.is_gated_act),
                   cfg.layer_norm_epsilon, bool(scale), tokens["decoder_start_token_id"],
                   tokens["eos_token_id"], tokens["pad_token_id"])


def relative_buckets(r: Tensor, bidirectional: bool, num_buckets: int, max_distance: int) -> Tensor:
    """T5's bucket of each relative position ``r = s - t`` (see the module docstring).

    The logarithm is taken in float32, as T5 does, so float64 runs pick the same buckets.

    **Shapes:** ``r [E]`` int64 -> ``[E]`` int64 in ``[0, num_buckets)``.
    """
    n, offset = num_buckets, torch.zeros_like(r)
    if bidirectional:
        n //= 2
        offset, a = (r > 0).long() * n, r.abs()
    else:
        a = (-r).clamp_min(0)
    exact = n // 2
    far = exact + (torch.log(a.float() / exact) / math.log(max_distance / exact)
                   * (n - exact)).long()
    return offset + torch.where(a < exact, a, far.clamp_max(n - 1))


def edge_bias(table: nn.Embedding, graph, src_pos: Tensor, dst_pos: Tensor, bidirectional: bool,
              max_distance: int) -> Tensor:
    """The per-head bias of every edge: ``table[bucket(s - t)]``.

    **Shapes:** ``src_pos [N_src]``, ``dst_pos [N_dst]`` positions -> ``[E, H]``."""
    j, i = graph.edge_index
    r = src_pos[j] - dst_pos[i]
    return table(relative_buckets(r, bidirectional, table.num_embeddings, max_distance))


class FeedForward(nn.Module):
    """``W_o act(W_i h)`` or, gated, ``W_o (act(W_i0 h) * W_i1 h)``. ``[N, C] -> [N, C]``."""

    def __init__(self, c: T5Config):
        super().__init__()
        self.gated, self.act = c.gated, activation(c.activation)
        if c.gated:
            self.wi_0, self.wi_1 = nn.Linear(c.d_model, c.d_ff, False), nn.Linear(c.d_model, c.d_ff,
                                                                                  False)
        else:
            self.wi = nn.Linear(c.d_model, c.d_ff, bias=False)
        self.wo = nn.Linear(c.d_ff, c.d_model, bias=False)

    def forward(self, h: Tensor) -> Tensor:
        return self.wo(self.act(self.wi_0(h)) * self.wi_1(h) if self.gated else self.act(self.wi(h)))


class T5Block(nn.Module):
    """Pre-norm: ``h += SelfAttn(RMS h) [+ bias on edges]``, (decoder) ``h += Cross(RMS h)``,
    ``h += FFN(RMS h)``. **Shapes:** ``h [N, C]`` -> ``(h, keys, values)``."""

    def __init__(self, c: T5Config, decoder: bool):
        super().__init__()
        att = lambda: GraphAttention(c.d_model, c.num_heads, c.d_kv, bias=False, scale=1.0)
        self.self_attn, self.norm_self = att(), RMSNorm(c.d_model, c.eps)
        self.cross_attn, self.norm_cross = (att(), RMSNorm(c.d_model, c.eps)) if decoder else \
            (None, None)
        self.ffn, self.norm_ffn = FeedForward(c), RMSNorm(c.d_model, c.eps)

    def memory(self, mem: Tensor):
        a = self.cross_attn
        return a.heads_of(a.k, mem), a.heads_of(a.v, mem)

    def forward(self, h, graph, bias, cross_graph=None, memory=None, past=None):
        x, a = self.norm_self(h), self.self_attn
        k, v = extend(a.heads_of(a.k, x), a.heads_of(a.v, x), past)
        h = h + a.attend(a.heads_of(a.q, x), k, v, graph, bias)
        if self.cross_attn is not None:
            c = self.cross_attn
            h = h + c.attend(c.heads_of(c.q, self.norm_cross(h)), *memory, cross_graph)
        return h + self.ffn(self.norm_ffn(h)), k, v


class T5Graph(nn.Module):
    """T5 encoder-decoder on token graphs, ``transformers``' call signatures.

    **Shapes:** ``input_ids, attention_mask [B, S]``, ``decoder_input_ids,
    decoder_attention_mask [B, T]`` -> logits ``[B, T, V]`` (zeros at padded targets).
    """

    def __init__(self, config: T5Config):
        super().__init__()
        c = self.config = config
        self.shared = nn.Embedding(c.vocab_size, c.d_model)
        self.encoder = nn.ModuleList(T5Block(c, False) for _ in range(c.num_layers))
        self.decoder = nn.ModuleList(T5Block(c, True) for _ in range(c.num_decoder_layers))
        self.encoder_bias = nn.Embedding(c.num_buckets, c.num_heads)
        self.decoder_bias = nn.Embedding(c.num_buckets, c.num_heads)
        self.encoder_norm, self.decoder_norm = RMSNorm(c.d_model, c.eps), RMSNorm(c.d_model, c.eps)
        self.lm_head = nn.Linear(c.d_model, c.vocab_size, bias=False)
        self.eos_token_id, self.pad_token_id = c.eos_token_id, c.pad_token_id

    def encode(self, input_ids: Tensor, attention_mask: Tensor | None = None):
        """Memory nodes ``[N_src, C]`` and source lengths ``[B]``."""
        ids, mask = check_batch(input_ids, attention_mask)
        check_vocab(ids, self.config.vocab_size)
        lengths = lengths_of(mask)
        graph, pos = full(lengths, device=ids.device), columns(mask)
        bias = edge_bias(self.encoder_bias, graph, pos, pos, True, self.config.max_distance)
        h = self.shared(ids[mask])
        for block in self.encoder:
            h = block(h, graph, bias)[0]
        return self.encoder_norm(h), lengths

    def _decode(self, h, graph, bias, cross_graph, memory, cache: Cache | None):
        keys, values = [], []
        for i, block in enumerate(self.decoder):
            h, k, v = block(h, graph, bias, cross_graph, memory[i],
                            None if cache is None else cache.past(i))
            keys.append(k), values.append(v)
        h = self.decoder_norm(h)
        if self.config.scale_decoder_outputs:
            h = h * self.config.d_model ** -0.5
        return self.lm_head(h), tuple(keys), tuple(values)

    def forward(self, input_ids: Tensor, attention_mask: Tensor | None = None,
                decoder_input_ids: Tensor | None = None,
                decoder_attention_mask: Tensor | None = None) -> Tensor:
        if decoder_input_ids is None:
            raise ValueError("decoder_input_ids are required (the targets, shifted right)")
        mem, src_len = self.encode(input_ids, attention_mask)
        dec, dmask = check_batch(decoder_input_ids, decoder_attention_mask, "decoder_input_ids")
        check_vocab(dec, self.config.vocab_size, "decoder_input_ids")
        if dec.size(0) != src_len.numel():
            raise ValueError(f"{src_len.numel()} source rows but {dec.size(0)} target rows")
        dst_len, pos = lengths_of(dmask), columns(dmask)
        graph = causal(dst_len, device=dec.device)
        bias = edge_bias(self.decoder_bias, graph, pos, pos, False, self.config.max_distance)
        logits = self._decode(self.shared(dec[dmask]), graph, bias,
                              cross(src_len, dst_len, device=dec.device),
                              [b.memory(mem) for b in self.decoder], None)[0]
        out = logits.new_zeros(*dec.shape, logits.size(-1))
        out[dmask] = logits
        return out

    # -- incremental decoding -------------------------------------------------------------------

    def prefill(self, input_ids: Tensor, attention_mask: Tensor | None = None):
        """Encode once, cache the memory keys/values, decode the start token."""
        mem, src_len = self.encode(input_ids, attention_mask)
        memory = [block.memory(mem) for block in self.decoder]
        B, H, D = src_len.numel(), self.config.num_heads, self.config.d_kv
        empty = tuple(mem.new_zeros(0, H, D) for _ in self.decoder)
        cache = Cache(empty, empty, torch.zeros(B, dtype=torch.long),
                      tuple(m[0] for m in memory), tuple(m[1] for m in memory), src_len)
        start = torch.full((B,), self.config.decoder_start_token_id, device=mem.device)
        return self.decode_step(start, cache)

    def decode_step(self, tokens: Tensor, cache: Cache):
        """One new target node per sequence at position L_b. ``[B]`` -> ``([B, V], Cache)``."""
        dev, B = tokens.device, tokens.size(0)
        graph = step_graph(cache.lengths, dev)
        src_pos = node_positions(cache.lengths + 1, dev)          # keys 0..L_b
        bias = edge_bias(self.decoder_bias, graph, src_pos, cache.lengths.to(dev), False,
                         self.config.max_distance)
        cross_graph = cross(cache.memory_lengths, torch.ones(B, dtype=torch.long), device=dev)
        memory = list(zip(cache.memory_keys, cache.memory_values))
        logits, keys, values = self._decode(self.shared(tokens), graph, bias, cross_graph, memory,
                                            cache)
        return logits, Cache(keys, values, cache.lengths + 1, cache.memory_keys,
                             cache.memory_values, cache.memory_lengths)

    def generate(self, input_ids: Tensor, attention_mask: Tensor | None = None,
                 max_new_tokens: int = 20, num_beams: int = 1, **kwargs) -> Tensor:
        """Decoder ids (start token first), as ``transformers``' ``generate(do_sample=False)``.

        **Shapes:** ``[B, S]`` -> ``[B, 1 + n]``."""
        return generate_seq2seq(self, input_ids, attention_mask, max_new_tokens, num_beams,
                                **kwargs)


T5_LAYER_NAMES = {"encoder": {"layer.0.SelfAttention": "self_attn", "layer.0.layer_norm": "norm_self",
                              "layer.1.DenseReluDense": "ffn", "layer.1.layer_norm": "norm_ffn"},
                  "decoder": {"layer.0.SelfAttention": "self_attn", "layer.0.layer_norm": "norm_self",
                              "layer.1.EncDecAttention": "cross_attn",
                              "layer.1.layer_norm": "norm_cross",
                              "layer.2.DenseReluDense": "ffn", "layer.2.layer_norm": "norm_ffn"}}


def t5_state_dict(hf_state: dict) -> dict:
    """``T5ForConditionalGeneration`` tensors renamed for :class:`T5Graph`."""
    src = dict(hf_state)
    out = {"shared.weight": src.pop("shared.weight"), "lm_head.weight": src.pop("lm_head.weight"),
           "encoder_norm.weight": src.pop("encoder.final_layer_norm.weight"),
           "decoder_norm.weight": src.pop("decoder.final_layer_norm.weight")}
    for side in ("encoder", "decoder"):
        src.pop(f"{side}.embed_tokens.weight", None)  # tied to shared
        out[f"{side}_bias.weight"] = src.pop(
            f"{side}.block.0.layer.0.SelfAttention.relative_attention_bias.weight")
        for name in [n for n in src if n.startswith(f"{side}.block.")]:
            _, _, i, rest = name.split(".", 3)
            for theirs, ours in T5_LAYER_NAMES[side].items():
                if rest.startswith(theirs + "."):
                    out[f"{side}.{i}.{ours}{rest[len(theirs):]}"] = src.pop(name)
    if src:
        raise KeyError(f"T5 tensors with no place in the graph model: {sorted(src)}")
    return out


def from_hf_t5(hf_model) -> T5Graph:
    """A :class:`T5Graph` with a copy of a ``T5ForConditionalGeneration``'s weights (eval)."""
    model = T5Graph(T5Config.from_hf(hf_model.config, special_tokens(hf_model)))
    p = next(hf_model.parameters())
    model = model.to(device=p.device, dtype=p.dtype)  # cast first: float64 stays float64
    model.load_state_dict(t5_state_dict(hf_model.state_dict()), strict=True)
    return model.eval()
