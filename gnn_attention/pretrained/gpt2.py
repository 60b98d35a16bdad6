"""GPT-2 as a token-graph program: learned absolute positions, one causal graph over the valid
tokens, pre-norm blocks, the LM head tied to the token embedding.

Notation: B rows, T padded positions, N valid tokens (nodes), C width, H heads, D = C / H,
V vocabulary, P maximum positions, L layers.

    h^0_n = wte[x_n] + wpe[p_n]
    h <- h + Attn(LN_1 h)   over causal(lengths): node i receives from j <= i of its sequence
    h <- h + W_2 gelu_tanh(W_1 LN_2 h)
    logits = LN_f(h) wte^T

Padding is absent from the graph (left or right alike), so the only thing the padding side
changes is the position ids p: ``transformers`` numbers the padded columns 0..T-1 in a forward
call and the valid tokens 0..T_b-1 in ``generate``; both are reproduced (``position_ids``).
GPT-2's ``Conv1D`` stores weights as ``[C_in, C_out]``; they are transposed into ``nn.Linear``
layout when copied, and the fused ``c_attn`` is split into q, k, v.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from gnn_attention.graphs import causal, node_positions
from gnn_attention.pretrained.blocks import (
    GraphAttention,
    activation,
    check_batch,
    check_vocab,
    lengths_of,
    special_tokens,
)
from gnn_attention.pretrained.generation import Cache, extend, generate, step_graph


@dataclass(frozen=True)
class GPT2Config:
    """Sizes and options of a GPT-2 (``transformers.GPT2Config`` names in brackets)."""

    vocab_size: int
    max_positions: int          # n_positions
    d_model: int                # n_embd
    num_heads: int              # n_head
    num_layers: int             # n_layer
    d_ff: int                   # n_inner (default 4 C)
    eps: float = 1e-5           # layer_norm_epsilon
    activation: str = "gelu_new"
    eos_token_id: int | None = None
    pad_token_id: int | None = None

    @classmethod
    def from_hf(cls, cfg, tokens: dict) -> GPT2Config:
        if getattr(cfg, "scale_attn_by_inverse_layer_idx", False) or \
                getattr(cfg, "reorder_and_upcast_attn", False) or not cfg.scale_attn_weights:
            raise ValueError("only GPT-2's default score scaling 1/sqrt(D) is supported")
        return cls(cfg.vocab_size, cfg.n_positions, cfg.n_embd, cfg.n_head, cfg.n_layer,
                   cfg.n_inner or 4 * cfg.n_embd, cfg.layer_norm_epsilon,
                   cfg.activation_function, _token(tokens["eos_token_id"], cfg.vocab_size),
                   _token(tokens["pad_token_id"], cfg.vocab_size))


def _token(token, vocab_size: int):
    """A special token id, or None when the config names one outside the vocabulary."""
    return token if isinstance(token, int) and 0 <= token < vocab_size else None


class GPT2Block(nn.Module):
    """One pre-norm block; ``past`` = cached ``(keys, values, lengths)`` in a decoding step.

    **Shapes:** ``h [N, C]`` -> ``(h [N, C], keys [N_src, H, D], values [N_src, H, D])``.
    """

    def __init__(self, c: GPT2Config):
        super().__init__()
        self.ln_1, self.ln_2 = nn.LayerNorm(c.d_model, c.eps), nn.LayerNorm(c.d_model, c.eps)
        self.attn = GraphAttention(c.d_model, c.num_heads, c.d_model // c.num_heads)
        self.fc, self.proj = nn.Linear(c.d_model, c.d_ff), nn.Linear(c.d_ff, c.d_model)
        self.act = activation(c.activation)

    def forward(self, h: Tensor, graph, past=None):
        x, a = self.ln_1(h), self.attn
        k, v = extend(a.heads_of(a.k, x), a.heads_of(a.v, x), past)
        h = h + a.attend(a.heads_of(a.q, x), k, v, graph)
        return h + self.proj(self.act(self.fc(self.ln_2(h)))), k, v


class GPT2Graph(nn.Module):
    """GPT-2 language model on token graphs; ``transformers``' call signatures.

    **Shapes:** ``input_ids, attention_mask, position_ids [B, T]`` -> logits ``[B, T, V]``
    (zeros at padded positions, which are no nodes).
    """

    def __init__(self, config: GPT2Config):
        super().__init__()
        c = self.config = config
        self.wte, self.wpe = nn.Embedding(c.vocab_size, c.d_model), nn.Embedding(c.max_positions,
                                                                                 c.d_model)
        self.blocks = nn.ModuleList(GPT2Block(c) for _ in range(c.num_layers))
        self.ln_f = nn.LayerNorm(c.d_model, c.eps)
        self.eos_token_id, self.pad_token_id = c.eos_token_id, c.pad_token_id

    def _run(self, ids: Tensor, positions: Tensor, graph, cache: Cache | None = None):
        """Nodes ``ids [N]`` at ``positions [N]`` -> logits ``[N, V]`` and per-layer keys/values."""
        if positions.numel() and int(positions.max()) >= self.config.max_positions:
            raise ValueError(f"position {int(positions.max())} exceeds the model's "
                             f"{self.config.max_positions} positions")
        h, keys, values = self.wte(ids) + self.wpe(positions), [], []
        for layer, block in enumerate(self.blocks):
            h, k, v = block(h, graph, None if cache is None else cache.past(layer))
            keys.append(k), values.append(v)
        return self.ln_f(h) @ self.wte.weight.T, tuple(keys), tuple(values)

    def forward(self, input_ids: Tensor, attention_mask: Tensor | None = None,
                position_ids: Tensor | None = None) -> Tensor:
        ids, mask = check_batch(input_ids, attention_mask)
        check_vocab(ids, self.config.vocab_size)
        B, T = ids.shape
        if position_ids is None:  # transformers' forward: the padded column index
            position_ids = torch.arange(T, device=ids.device).expand(B, T)
        elif position_ids.shape != ids.shape:
            raise ValueError(f"position_ids must have shape {list(ids.shape)}")
        graph = causal(lengths_of(mask), device=ids.device)
        logits = self._run(ids[mask], position_ids[mask], graph)[0]
        out = logits.new_zeros(B, T, logits.size(-1))
        out[mask] = logits
        return out

    # -- incremental decoding -------------------------------------------------------------------

    def prefill(self, input_ids: Tensor, attention_mask: Tensor | None = None):
        """The prompt's cache and the logits of its last valid token (positions 0..T_b-1, as
        ``generate`` numbers them). **Shapes:** ``[B, T]`` -> ``([B, V], Cache)``."""
        ids, mask = check_batch(input_ids, attention_mask)
        check_vocab(ids, self.config.vocab_size)
        lengths = lengths_of(mask)
        if int(lengths.min()) == 0:
            raise ValueError("every prompt needs at least one token")
        logits, keys, values = self._run(ids[mask], node_positions(lengths, ids.device),
                                         causal(lengths, device=ids.device))
        last = (lengths.cumsum(0) - 1).to(ids.device)
        return logits[last], Cache(keys, values, lengths)

    def decode_step(self, tokens: Tensor, cache: Cache):
        """One new node per sequence at position L_b. **Shapes:** ``[B]`` -> ``([B, V], Cache)``."""
        graph = step_graph(cache.lengths, tokens.device)
        logits, keys, values = self._run(tokens, cache.lengths.to(tokens.device), graph, cache)
        return logits, Cache(keys, values, cache.lengths + 1)

    def generate(self, input_ids: Tensor, attention_mask: Tensor | None = None,
                 max_new_tokens: int = 20, num_beams: int = 1, **kwargs) -> Tensor:
        """The prompt followed by the decoded tokens, as ``transformers``' ``generate`` with
        ``do_sample=False`` (left-pad prompts: the new tokens follow the last column).

        **Shapes:** ``[B, T]`` -> ``[B, T + n]``."""
        return generate(self, input_ids, input_ids, attention_mask, max_new_tokens, num_beams,
                        **kwargs)


def gpt2_state_dict(hf_state: dict) -> dict:
    """``GPT2LMHeadModel`` tensors renamed (and transposed from ``Conv1D``) for :class:`GPT2Graph`."""
    src = {k.removeprefix("transformer."): v for k, v in hf_state.items()
           if not k.endswith((".attn.bias", ".attn.masked_bias")) and k != "lm_head.weight"}
    out = {"wte.weight": src.pop("wte.weight"), "wpe.weight": src.pop("wpe.weight"),
           "ln_f.weight": src.pop("ln_f.weight"), "ln_f.bias": src.pop("ln_f.bias")}
    layers = sorted({int(k.split(".")[1]) for k in src if k.startswith("h.")})
    for i in layers:
        p, q = f"h.{i}.", f"blocks.{i}."
        for name in ("ln_1", "ln_2"):
            for kind in ("weight", "bias"):
                out[f"{q}{name}.{kind}"] = src.pop(f"{p}{name}.{kind}")
        w, b = src.pop(p + "attn.c_attn.weight").T, src.pop(p + "attn.c_attn.bias")
        for j, name in enumerate("qkv"):
            C = w.size(1)
            out[f"{q}attn.{name}.weight"] = w[j * C:(j + 1) * C]
            out[f"{q}attn.{name}.bias"] = b[j * C:(j + 1) * C]
        for ours, theirs in (("attn.o", "attn.c_proj"), ("fc", "mlp.c_fc"),
                             ("proj", "mlp.c_proj")):
            out[f"{q}{ours}.weight"] = src.pop(f"{p}{theirs}.weight").T
            out[f"{q}{ours}.bias"] = src.pop(f"{p}{theirs}.bias")
    if src:
        raise KeyError(f"GPT-2 tensors with no place in the graph model: {sorted(src)}")
    return {k: v.contiguous() for k, v in out.items()}


def from_hf_gpt2(hf_model) -> GPT2Graph:
    """A :class:`GPT2Graph` with a copy of a ``GPT2LMHeadModel``'s weights, in eval mode."""
    model = GPT2Graph(GPT2Config.from_hf(hf_model.config, special_tokens(hf_model)))
    p, state = next(hf_model.parameters()), hf_model.state_dict()
    if not torch.equal(state["lm_head.weight"], state["transformer.wte.weight"]):
        raise ValueError("GPT-2 with an LM head not tied to the token embedding is not supported")
    # cast before copying: float64 weights must not pass through float32 parameters
    model = model.to(device=p.device, dtype=p.dtype)
    model.load_state_dict(gpt2_state_dict(state), strict=True)
    return model.eval()
