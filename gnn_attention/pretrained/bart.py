"""BART (and Marian, the same program with other positions) as token graphs.

Notation: B rows, S padded source positions, T padded target positions, N_src / N_dst valid source /
target tokens (nodes), C width, H heads, D = C / H, V vocabulary, L layers.

Three graphs per batch, shared by every layer:

    encoder self-attention   full(S_b)            every valid source token <-> every other
    decoder self-attention   causal(T_b)          target t receives from t' <= t
    cross-attention          cross(S_b, T_b)      bipartite: source s -> target t, same sequence

Embeddings: ``h^0 = e[x] * sqrt(C)^{scale} + pos[p + offset]``, p the padded column index (as
``transformers`` numbers it, whatever the padding side). BART learns positions and offsets them by
2 (rows 0 and 1 of its table are never used); Marian uses a fixed sinusoidal table, offset 0, and no
embedding norm. Layers are post-norm: ``h = LN(h + Attn(h))``, then ``h = LN(h + FFN(h))``.
``logits = h W_lm^T + final_logits_bias``.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from gnn_attention.graphs import causal, cross, full
from gnn_attention.pretrained.blocks import (
    GraphAttention,
    activation,
    check_batch,
    check_vocab,
    lengths_of,
    special_tokens,
)
from gnn_attention.pretrained.generation import Cache, extend, generate_seq2seq, step_graph


@dataclass(frozen=True)
class BartConfig:
    """Sizes and options of the BART family (``transformers`` names where they differ)."""

    vocab_size: int
    d_model: int
    encoder_layers: int
    decoder_layers: int
    encoder_heads: int          # encoder_attention_heads
    decoder_heads: int          # decoder_attention_heads
    encoder_ffn: int            # encoder_ffn_dim
    decoder_ffn: int            # decoder_ffn_dim
    max_positions: int          # max_position_embeddings
    activation: str = "gelu"    # activation_function
    positions: str = "learned"  # "learned" (BART) or "sinusoidal" (Marian)
    position_offset: int = 2    # BART's learned table starts at row 2
    scale_embedding: bool = False
    layernorm_embedding: bool = True
    eps: float = 1e-5
    decoder_start_token_id: int = 2
    eos_token_id: int | None = 2
    pad_token_id: int | None = 1

    @classmethod
    def from_hf(cls, cfg, **overrides) -> BartConfig:
        fields = {"vocab_size": cfg.vocab_size, "d_model": cfg.d_model,
                  "encoder_layers": cfg.encoder_layers, "decoder_layers": cfg.decoder_layers,
                  "encoder_heads": cfg.encoder_attention_heads,
                  "decoder_heads": cfg.decoder_attention_heads,
                  "encoder_ffn": cfg.encoder_ffn_dim, "decoder_ffn": cfg.decoder_ffn_dim,
                  "max_positions": cfg.max_position_embeddings,
                  "activation": cfg.activation_function,
                  "scale_embedding": bool(cfg.scale_embedding)}
        return cls(**{**fields, **overrides})


class EncoderLayer(nn.Module):
    """Post-norm: ``h = LN_1(h + SelfAttn(h))``, ``h = LN_2(h + W_2 act(W_1 h))``.

    **Shapes:** ``h [N, C]`` -> ``[N, C]``."""

    def __init__(self, c: BartConfig, heads: int, ffn: int):
        super().__init__()
        self.self_attn = GraphAttention(c.d_model, heads, c.d_model // heads)
        self.self_attn_layer_norm = nn.LayerNorm(c.d_model, c.eps)
        self.fc1, self.fc2 = nn.Linear(c.d_model, ffn), nn.Linear(ffn, c.d_model)
        self.final_layer_norm = nn.LayerNorm(c.d_model, c.eps)
        self.act = activation(c.activation)

    def ffn(self, h: Tensor) -> Tensor:
        return self.final_layer_norm(h + self.fc2(self.act(self.fc1(h))))

    def forward(self, h: Tensor, graph) -> Tensor:
        return self.ffn(self.self_attn_layer_norm(h + self.self_attn(h, h, graph)))


class DecoderLayer(EncoderLayer):
    """Self-attention on the causal graph (``past``: cached keys in a decoding step), then
    cross-attention from the memory keys/values ``memory = (k, v)``, each post-norm.

    **Shapes:** ``h [N_dst, C]``, ``memory`` two ``[N_src, H, D]`` ->
    ``(h [N_dst, C], keys, values)``."""

    def __init__(self, c: BartConfig):
        super().__init__(c, c.decoder_heads, c.decoder_ffn)
        self.encoder_attn = GraphAttention(c.d_model, c.decoder_heads, c.d_model // c.decoder_heads)
        self.encoder_attn_layer_norm = nn.LayerNorm(c.d_model, c.eps)

    def memory(self, mem: Tensor):
        """Cross-attention keys and values of the memory nodes (computed once per generation)."""
        a = self.encoder_attn
        return a.heads_of(a.k, mem), a.heads_of(a.v, mem)

    def forward(self, h: Tensor, graph, cross_graph, memory, past=None):
        a = self.self_attn
        k, v = extend(a.heads_of(a.k, h), a.heads_of(a.v, h), past)
        h = self.self_attn_layer_norm(h + a.attend(a.heads_of(a.q, h), k, v, graph))
        c = self.encoder_attn
        h = self.encoder_attn_layer_norm(h + c.attend(c.heads_of(c.q, h), *memory, cross_graph))
        return self.ffn(h), k, v


class Embedding(nn.Module):
    """Token embedding (scaled by sqrt(C) if asked) plus the position table at ``p + offset``."""

    def __init__(self, c: BartConfig, table: Tensor | None):
        super().__init__()
        self.tokens = nn.Embedding(c.vocab_size, c.d_model)
        rows = c.max_positions + c.position_offset
        if table is None:
            self.positions = nn.Embedding(rows, c.d_model)
        else:  # fixed (sinusoidal) positions: a buffer, not a parameter
            self.register_buffer("table", table)
        self.norm = nn.LayerNorm(c.d_model, c.eps) if c.layernorm_embedding else None
        self.scale, self.offset = (c.d_model ** 0.5 if c.scale_embedding else 1.0), c.position_offset
        self.max_positions = c.max_positions

    def forward(self, ids: Tensor, positions: Tensor) -> Tensor:
        if positions.numel() and int(positions.max()) >= self.max_positions:
            raise ValueError(f"position {int(positions.max())} exceeds the model's "
                             f"{self.max_positions} positions")
        table = self.positions.weight if hasattr(self, "positions") else self.table
        h = self.tokens(ids) * self.scale + table[positions + self.offset]
        return h if self.norm is None else self.norm(h)


def columns(mask: Tensor) -> Tensor:
    """The padded column index of every valid token (``[N]``): the position ids of BART."""
    return torch.arange(mask.size(1), device=mask.device).expand_as(mask)[mask]


class BartGraph(nn.Module):
    """Encoder-decoder language model on token graphs, ``transformers``' call signatures.

    **Shapes:** ``input_ids, attention_mask [B, S]``, ``decoder_input_ids,
    decoder_attention_mask [B, T]`` -> logits ``[B, T, V]`` (zeros at padded targets).
    """

    def __init__(self, config: BartConfig, table: Tensor | None = None):
        super().__init__()
        c = self.config = config
        self.encoder_embed, self.decoder_embed = Embedding(c, table), Embedding(c, table)
        self.encoder = nn.ModuleList(EncoderLayer(c, c.encoder_heads, c.encoder_ffn)
                                     for _ in range(c.encoder_layers))
        self.decoder = nn.ModuleList(DecoderLayer(c) for _ in range(c.decoder_layers))
        self.lm_head = nn.Linear(c.d_model, c.vocab_size, bias=False)
        self.register_buffer("final_logits_bias", torch.zeros(c.vocab_size))
        self.eos_token_id, self.pad_token_id = c.eos_token_id, c.pad_token_id

    def encode(self, input_ids: Tensor, attention_mask: Tensor | None = None):
        """Memory nodes ``[N_src, C]`` and the source lengths ``[B]``."""
        ids, mask = check_batch(input_ids, attention_mask)
        check_vocab(ids, self.config.vocab_size)
        lengths = lengths_of(mask)
        graph, h = full(lengths, device=ids.device), self.encoder_embed(ids[mask], columns(mask))
        for layer in self.encoder:
            h = layer(h, graph)
        return h, lengths

    def _decode(self, h: Tensor, graph, cross_graph, memory, cache: Cache | None):
        keys, values = [], []
        for i, layer in enumerate(self.decoder):
            h, k, v = layer(h, graph, cross_graph, memory[i],
                            None if cache is None else cache.past(i))
            keys.append(k), values.append(v)
        return self.lm_head(h) + self.final_logits_bias, tuple(keys), tuple(values)

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
        dst_len = lengths_of(dmask)
        graph, cross_graph = causal(dst_len, device=dec.device), cross(src_len, dst_len,
                                                                       device=dec.device)
        h = self.decoder_embed(dec[dmask], columns(dmask))
        logits = self._decode(h, graph, cross_graph, [l.memory(mem) for l in self.decoder],
                              None)[0]
        out = logits.new_zeros(*dec.shape, logits.size(-1))
        out[dmask] = logits
        return out

    # -- incremental decoding -------------------------------------------------------------------

    def prefill(self, input_ids: Tensor, attention_mask: Tensor | None = None):
        """Encode once, cache the memory keys/values, decode the start token."""
        mem, src_len = self.encode(input_ids, attention_mask)
        memory = [layer.memory(mem) for layer in self.decoder]
        B, H, D = src_len.numel(), self.config.decoder_heads, self.config.d_model // \
            self.config.decoder_heads
        empty = tuple(mem.new_zeros(0, H, D) for _ in self.decoder)
        cache = Cache(empty, empty, torch.zeros(B, dtype=torch.long),
                      tuple(m[0] for m in memory), tuple(m[1] for m in memory), src_len)
        start = torch.full((B,), self.config.decoder_start_token_id, device=mem.device)
        return self.decode_step(start, cache)

    def decode_step(self, tokens: Tensor, cache: Cache):
        """One new target node per sequence at position L_b. ``[B]`` -> ``([B, V], Cache)``."""
        B = tokens.size(0)
        cross_graph = cross(cache.memory_lengths, torch.ones(B, dtype=torch.long),
                            device=tokens.device)
        h = self.decoder_embed(tokens, cache.lengths.to(tokens.device))
        memory = list(zip(cache.memory_keys, cache.memory_values))
        logits, keys, values = self._decode(h, step_graph(cache.lengths, tokens.device),
                                            cross_graph, memory, cache)
        return logits, Cache(keys, values, cache.lengths + 1, cache.memory_keys,
                             cache.memory_values, cache.memory_lengths)

    def generate(self, input_ids: Tensor, attention_mask: Tensor | None = None,
                 max_new_tokens: int = 20, num_beams: int = 1, **kwargs) -> Tensor:
        """Decoder ids (start token first), as ``transformers``' ``generate(do_sample=False)``.

        **Shapes:** ``[B, S]`` -> ``[B, 1 + n]``."""
        return generate_seq2seq(self, input_ids, attention_mask, max_new_tokens, num_beams,
                                **kwargs)


def bart_state_dict(hf_state: dict, config: BartConfig) -> dict:
    """``Bart/MarianForConditionalGeneration`` tensors renamed for :class:`BartGraph`; a fixed
    position table in the checkpoint is dropped (it is rebuilt, and compared by the caller)."""
    src = {k.removeprefix("model."): v for k, v in hf_state.items()}
    src.pop("shared.weight", None)  # the same tensor as both embed_tokens (tied)
    out = {"lm_head.weight": src.pop("lm_head.weight"),
           "final_logits_bias": src.pop("final_logits_bias").reshape(-1)}
    for side in ("encoder", "decoder"):
        out[f"{side}_embed.tokens.weight"] = src.pop(f"{side}.embed_tokens.weight")
        table = src.pop(f"{side}.embed_positions.weight")
        if config.positions == "learned":
            out[f"{side}_embed.positions.weight"] = table
        for kind in ("weight", "bias"):
            if config.layernorm_embedding:
                out[f"{side}_embed.norm.{kind}"] = src.pop(f"{side}.layernorm_embedding.{kind}")
    for name in list(src):
        side, rest = name.split(".", 1)
        if rest.startswith("layers."):  # layers.{i}.x_proj -> {i}.x
            rest = rest.removeprefix("layers.")
            for theirs, ours in (("q_proj", "q"), ("k_proj", "k"), ("v_proj", "v"),
                                 ("out_proj", "o")):
                rest = rest.replace(f".{theirs}.", f".{ours}.")
            out[f"{side}.{rest}"] = src.pop(name)
    if src:
        raise KeyError(f"tensors with no place in the graph model: {sorted(src)}")
    return out


def from_hf_bart(hf_model, config: BartConfig | None = None,
                 table: Tensor | None = None) -> BartGraph:
    """A :class:`BartGraph` with a copy of a ``BartForConditionalGeneration``'s weights (eval)."""
    config = config or BartConfig.from_hf(hf_model.config, **special_tokens(hf_model))
    model = BartGraph(config, table)
    p = next(hf_model.parameters())
    state = bart_state_dict(hf_model.state_dict(), config)
    if table is not None:
        state.update({f"{s}_embed.table": table for s in ("encoder", "decoder")})
    model = model.to(device=p.device, dtype=p.dtype)  # cast first: float64 stays float64
    model.load_state_dict(state, strict=True)
    return model.eval()
