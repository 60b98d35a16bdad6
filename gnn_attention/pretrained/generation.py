"""Greedy and beam-search decoding on growing graphs, token for token as ``transformers``'
``generate(do_sample=False)``.

Notation: B prompts, K beams, V vocabulary, P prefix length (the padded prompt for a decoder-only
model, 1 start token for a seq2seq decoder), n new tokens, L_b cached tokens of sequence b.

Each step adds one node per sequence. Its self-attention graph is one query over the L_b cached
nodes and itself, causal and bottom-right aligned (the last query sees every key):
``graphs.causal(ones(B), align="bottom_right", src_lengths=L + 1)``, which is
``graphs.incremental_causal(B, L)`` when every L_b is equal. Keys and values of old nodes never
change (causality), so the :class:`Cache` keeps them and a step costs O(L) per layer, not O(L^2).

A model plugs in with three methods: ``prefill(input_ids, mask) -> (logits [B, V], Cache)``,
``decode_step(tokens [B], cache) -> (logits [B, V], Cache)`` and its ``eos_token_id`` /
``pad_token_id``. Scores are float32 log-probabilities, as in ``transformers``.

Beam search follows the rules of ``transformers``' beam search: 2K candidates per prompt; a
candidate that ends (EOS, or the length limit) joins the finished hypotheses, scored
``sum log p / (generated length) ** length_penalty``, only if it ranks among the top K; the others
continue; the search stops when no running beam can beat the worst finished one
(``early_stopping=False`` heuristic) or at the length limit.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import torch
from torch import Tensor

from gnn_attention.graphs import TokenGraph, causal
from gnn_attention.pretrained.blocks import grow, select

NEG = -1.0e9  # the "impossible" score of transformers' beam search (finite, so sums stay ordered)


@dataclass(frozen=True)
class Cache:
    """Packed keys/values of every decoded node, per layer, and of the encoder memory.

    Attributes:
        keys, values: per layer ``[sum_b L_b, H, D]`` (sequence b owns a contiguous block).
        lengths: ``[B]`` L_b (CPU int64).
        memory_keys, memory_values: per layer ``[sum_b S_b, H, D]`` (seq2seq cross-attention).
        memory_lengths: ``[B]`` S_b, or None for a decoder-only model.
    """

    keys: tuple
    values: tuple
    lengths: Tensor
    memory_keys: tuple = ()
    memory_values: tuple = ()
    memory_lengths: Tensor | None = None

    def past(self, layer: int):
        """``(keys, values, lengths)`` of one layer, the form a block's ``past`` takes."""
        return self.keys[layer], self.values[layer], self.lengths

    def select(self, index: Tensor) -> Cache:
        """The cache of sequences ``index`` (beam search: each beam takes its parent's)."""
        pick = lambda ts, n: tuple(select(t, n, index) for t in ts)
        mem = {}
        if self.memory_lengths is not None:
            mem = {"memory_keys": pick(self.memory_keys, self.memory_lengths),
                       "memory_values": pick(self.memory_values, self.memory_lengths),
                       "memory_lengths": self.memory_lengths[index.cpu()]}
        return replace(self, keys=pick(self.keys, self.lengths),
                       values=pick(self.values, self.lengths), lengths=self.lengths[index.cpu()],
                       **mem)


def extend(k_new: Tensor, v_new: Tensor, past) -> tuple:
    """Keys/values a layer attends over: its own (full forward) or the cache grown by one node
    per sequence (decoding step). ``past = (keys, values, lengths)`` or None."""
    if past is None:
        return k_new, v_new
    keys, values, lengths = past
    return grow(keys, lengths, k_new), grow(values, lengths, v_new)


def step_graph(lengths: Tensor, device=None) -> TokenGraph:
    """Self-attention graph of one decoding step: query b over its L_b cached nodes and itself."""
    return causal(torch.ones_like(lengths), align="bottom_right", src_lengths=lengths + 1,
                  device=device)


def _check(max_new_tokens: int, num_beams: int) -> None:
    if int(max_new_tokens) < 1:
        raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    if int(num_beams) < 1:
        raise ValueError(f"num_beams must be >= 1, got {num_beams}")


@torch.no_grad()
def generate(model, input_ids: Tensor, prefix: Tensor, attention_mask: Tensor | None = None,
             max_new_tokens: int = 20, num_beams: int = 1, length_penalty: float = 1.0) -> Tensor:
    """Greedy (``num_beams=1``) or beam search decoding of ``model`` after ``prefix``.

    **Shapes:** ``input_ids, attention_mask [B, T]``, ``prefix [B, P]`` (the prompt itself for
    a decoder-only model, the start tokens for a seq2seq one) -> ``[B, P + n]``, n <= max_new_tokens
    (shorter when every sequence ended early, as in ``transformers``).
    """
    _check(max_new_tokens, num_beams)
    logits, cache = model.prefill(input_ids, attention_mask)
    if num_beams == 1:
        return _greedy(model, logits, cache, prefix, int(max_new_tokens))
    return _beam(model, logits, cache, prefix, int(max_new_tokens), int(num_beams),
                 float(length_penalty))


def _greedy(model, logits: Tensor, cache: Cache, prefix: Tensor, n: int) -> Tensor:
    eos, pad = model.eos_token_id, model.pad_token_id
    pad = eos if pad is None else pad
    out, alive = [prefix], torch.ones(prefix.size(0), dtype=torch.bool, device=prefix.device)
    for i in range(n):
        token = logits.float().argmax(-1)
        if eos is not None:  # a finished sequence emits padding, as transformers does
            token = torch.where(alive, token, torch.full_like(token, pad))
            alive = alive & (token != eos)
        out.append(token[:, None])
        if i == n - 1 or not bool(alive.any()):
            break
        logits, cache = model.decode_step(token, cache)
    return torch.cat(out, 1)


def _beam(model, logits: Tensor, cache: Cache, prefix: Tensor, n: int, K: int,
          length_penalty: float) -> Tensor:
    """Beam search over B prompts at once; every tensor below is ``[B, K, ...]`` or ``[B, 2K]``."""
    eos, pad = model.eos_token_id, model.pad_token_id
    B, P = prefix.shape
    dev, total = prefix.device, P + n
    fill = (pad if pad else eos) if eos is not None else -1  # transformers' `pad or eos` fill
    expand = torch.arange(B).repeat_interleave(K)
    cache, logits = cache.select(expand), logits[expand.to(logits.device)]
    running = torch.full((B, K, total), fill, dtype=torch.long, device=dev)
    running[:, :, :P] = prefix[:, None]
    done_seq, done_len = running.clone(), torch.zeros(B, K, dtype=torch.long, device=dev)
    run_score = torch.zeros(B, K, device=dev)
    run_score[:, 1:] = NEG                      # K copies of one prompt: only the first counts
    done_score = torch.full((B, K), NEG, device=dev)
    done = torch.zeros(B, K, dtype=torch.bool, device=dev)
    improvable = torch.ones(B, 1, dtype=torch.bool, device=dev)
    top_k = torch.arange(2 * K, device=dev) < K
    for cur in range(P, total):
        logp = torch.log_softmax(logits.float(), -1).view(B, K, -1) + run_score[:, :, None]
        V = logp.size(-1)
        cand_score, flat = logp.view(B, -1).topk(2 * K)
        parent, token = flat // V, flat % V
        cand = running.gather(1, parent[:, :, None].expand(-1, -1, total)).clone()
        cand[:, :, cur] = token
        ends = torch.full_like(token, cur + 1 >= total, dtype=torch.bool)
        if eos is not None:
            ends = ends | (token == eos)
        # the best K candidates that go on
        go_score = cand_score + ends.float() * NEG
        keep = go_score.topk(K).indices
        running = cand.gather(1, keep[:, :, None].expand(-1, -1, total))
        run_score, parent = go_score.gather(1, keep), parent.gather(1, keep)
        # candidates among the top K that ended join the finished hypotheses if good enough
        new = cand_score / ((cur + 1 - P) ** length_penalty)
        new = new + (~improvable).float() * NEG + (~(ends & top_k)).float() * NEG
        merged = torch.cat([done_score, new], 1).topk(K).indices
        done_score = torch.cat([done_score, new], 1).gather(1, merged)
        done_seq = torch.cat([done_seq, cand], 1).gather(1, merged[:, :, None].expand(-1, -1, total))
        done = torch.cat([done, ends & top_k], 1).gather(1, merged)
        done_len = torch.cat([done_len, torch.full_like(token, cur + 1 - P)], 1).gather(1, merged)
        best = run_score[:, :1] / ((cur + 1 - P) ** length_penalty)
        worst = torch.where(done, done_score.min(1, keepdim=True).values, torch.full_like(best, NEG))
        improvable = improvable & (best > worst).any(-1, keepdim=True)
        if not bool(improvable.any()) or bool(ends.all()):
            break
        rows = (parent + torch.arange(B, device=dev)[:, None] * K).reshape(-1)
        logits, cache = model.decode_step(running[:, :, cur].reshape(-1), cache.select(rows.cpu()))
    return done_seq[:, 0, :P + int(done_len[:, 0].max())]


def generate_seq2seq(model, input_ids: Tensor, attention_mask: Tensor | None = None,
                     max_new_tokens: int = 20, num_beams: int = 1, **kwargs) -> Tensor:
    """:func:`generate` for an encoder-decoder: the decoder prefix is the start token.

    **Shapes:** ``[B, S]`` -> ``[B, 1 + n]``."""
    start = torch.full((input_ids.size(0), 1), model.config.decoder_start_token_id,
                       dtype=torch.long, device=input_ids.device)
    return generate(model, input_ids, start, attention_mask, max_new_tokens, num_beams, **kwargs)
