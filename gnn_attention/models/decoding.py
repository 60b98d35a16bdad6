"""Greedy and beam-search decoding, incrementally (KV cache on a growing causal graph) or by full
recomputation of the decoder at every step.

Notation: B source sentences, K beams, V target vocabulary, L tokens generated so far, n = length of
a hypothesis counted in generated tokens (its EOS included), alpha = length-penalty exponent.

Beam score (GNMT, Wu et al. 2016):  score(Y) = log P(Y | X) / lp(Y),  lp(Y) = ((5 + |Y|) / 6)^alpha.

A *stepper* turns "the next token of every sequence" into next-token log-probabilities:
``_Incremental`` feeds one token per sequence through ``model.decode_step`` with a
:class:`~gnn_attention.kv_cache.KVCache` (a step costs O(L * C) per layer); ``_Recompute``
re-runs ``model.decode`` over the whole prefix (O(L^2 * C) per layer), which also works for the
dense twin (``Seq2SeqModel.to_dense()``). Both decode in ``torch.no_grad()``; put the model in
``eval()`` mode first (dropout would make the search random).

Outputs are token lists without BOS and EOS.
"""
from __future__ import annotations

from typing import List, Optional

import torch
from torch import Tensor

__all__ = ["beam_search", "gnmt_length_penalty", "greedy_decode"]


class _Incremental:
    """Next-token log-probabilities from KV-cached decoder steps."""

    def __init__(self, model, memory: Tensor, src_lengths: Tensor):
        if not hasattr(model, "decode_step"):
            raise TypeError(f"{type(model).__name__} has no decode_step (no KV cache): decode it "
                            f"with incremental=False")
        self.model, self.cache = model, model.init_cache(memory, src_lengths)

    def step(self, tokens: Tensor) -> Tensor:
        logits, self.cache = self.model.decode_step(tokens, self.cache)
        return torch.log_softmax(logits.float(), -1)

    def reorder(self, index: Tensor) -> None:
        self.cache = self.cache.reorder(index)


class _Recompute:
    """Next-token log-probabilities by running the decoder over the whole prefix every step."""

    def __init__(self, model, memory: Tensor, src_lengths: Tensor):
        self.model, self.memory, self.src_lengths = model, memory, src_lengths
        self.prefix = memory.new_zeros(memory.size(0), 0, dtype=torch.long)

    def step(self, tokens: Tensor) -> Tensor:
        self.prefix = torch.cat([self.prefix, tokens.unsqueeze(1)], 1)
        B, L = self.prefix.shape
        logits = self.model.decode(self.memory, self.src_lengths, self.prefix,
                                   torch.full((B,), L, dtype=torch.long))
        return torch.log_softmax(logits[:, -1].float(), -1)

    def reorder(self, index: Tensor) -> None:
        self.prefix = self.prefix.index_select(0, index)
        self.memory = self.memory.index_select(0, index)
        self.src_lengths = self.src_lengths.index_select(0, index.to(self.src_lengths.device))


def _check(src: Tensor, src_lengths: Tensor, bos_id: int, eos_id: Optional[int],
           max_len: int) -> None:
    if src.dim() != 2 or src_lengths.dim() != 1 or src_lengths.numel() != src.size(0):
        raise ValueError(f"src must be [B, S] and src_lengths [B], got {list(src.shape)} and "
                         f"{list(src_lengths.shape)}")
    if int(max_len) < 1:
        raise ValueError(f"max_len must be >= 1, got {max_len}")
    if bos_id is None or int(bos_id) < 0 or (eos_id is not None and int(eos_id) < 0):
        raise ValueError(f"bos_id and eos_id must be token ids, got {bos_id} and {eos_id}")


def _start(model, src, src_lengths, incremental: bool, repeat: int = 1):
    memory = model.encode(src, src_lengths)
    if repeat > 1:
        memory = memory.repeat_interleave(repeat, 0)
        src_lengths = src_lengths.repeat_interleave(repeat, 0)
    return (_Incremental if incremental else _Recompute)(model, memory, src_lengths)


@torch.no_grad()
def greedy_decode(model, src: Tensor, src_lengths: Tensor, bos_id: int, eos_id: Optional[int],
                  max_len: int, incremental: bool = True) -> List[List[int]]:
    """Pick the most probable token at every step until EOS or ``max_len`` generated tokens.

    ``eos_id=None`` never stops early (exactly ``max_len`` tokens; used to time decoding).
    **Shapes:** ``src [B, S]``, ``src_lengths [B]`` -> B lists of token ids.
    """
    _check(src, src_lengths, bos_id, eos_id, max_len)
    stepper = _start(model, src, src_lengths, incremental)
    B = src.size(0)
    tokens = torch.full((B,), int(bos_id), dtype=torch.long, device=src.device)
    out: List[List[int]] = [[] for _ in range(B)]
    done = [False] * B
    for _ in range(int(max_len)):
        tokens = stepper.step(tokens).argmax(-1)
        for b, tok in enumerate(tokens.tolist()):
            if done[b]:
                continue
            if tok == eos_id:
                done[b] = True
            else:
                out[b].append(tok)
        if all(done):
            break
    return out


def gnmt_length_penalty(n: int, alpha: float) -> float:
    """GNMT's ``lp = ((5 + n) / 6) ** alpha`` for a hypothesis of n generated tokens."""
    return ((5.0 + n) / 6.0) ** alpha


@torch.no_grad()
def beam_search(model, src: Tensor, src_lengths: Tensor, bos_id: int, eos_id: int, max_len: int,
                beam_size: int = 4, length_penalty: float = 0.6, early_stop: bool = True,
                incremental: bool = True) -> List[List[int]]:
    """Keep the K best prefixes per sentence; return the best finished hypothesis by
    ``log P / lp`` (see module docstring).

    At each step the 2K best extensions of the K alive beams are ranked: those ending in EOS
    become finished hypotheses, the K best others stay alive. A sentence is done when it has K
    finished hypotheses and either ``early_stop`` is set or no alive beam can still beat the
    worst of them (log-probabilities only fall, so the best an alive beam can reach is its score
    divided by the penalty at the most favourable remaining length: an exact bound). Beams alive at
    ``max_len`` are finished there.

    **Shapes:** ``src [B, S]``, ``src_lengths [B]`` -> B lists of token ids.
    """
    _check(src, src_lengths, bos_id, eos_id, max_len)
    if int(beam_size) < 1:
        raise ValueError(f"beam_size must be >= 1, got {beam_size}")
    alpha, lp = float(length_penalty), gnmt_length_penalty
    B, K, dev = src.size(0), int(beam_size), src.device
    stepper = _start(model, src, src_lengths, incremental, repeat=K)
    scores = torch.full((B, K), float("-inf"), device=dev)
    scores[:, 0] = 0.0  # one live beam per sentence at first: no K identical copies
    history = torch.zeros(B * K, 0, dtype=torch.long, device=dev)
    tokens = torch.full((B * K,), int(bos_id), dtype=torch.long, device=dev)
    finished: List[List[tuple]] = [[] for _ in range(B)]  # (score, tokens) per sentence
    done = [False] * B
    for n in range(1, int(max_len) + 1):
        logp = stepper.step(tokens)
        V = logp.size(-1)
        cand = (scores.unsqueeze(-1) + logp.view(B, K, V)).view(B, K * V)
        top_s, top_i = cand.topk(min(2 * K, K * V), dim=-1)
        new_scores = torch.full((B, K), float("-inf"), device=dev)
        parent = torch.arange(B * K, device=dev).view(B, K).clone()
        new_tok = torch.full((B, K), int(eos_id), dtype=torch.long, device=dev)
        for b in range(B):
            if done[b]:
                continue
            alive = 0
            for s, i in zip(top_s[b].tolist(), top_i[b].tolist()):
                if s == float("-inf") or alive == K:
                    break
                beam, tok = divmod(i, V)
                if tok == eos_id:
                    finished[b].append((s / lp(n, alpha), history[b * K + beam].tolist()))
                else:
                    new_scores[b, alive], parent[b, alive] = s, b * K + beam
                    new_tok[b, alive] = tok
                    alive += 1
            finished[b] = sorted(finished[b], key=lambda h: -h[0])[:K]
            if n == int(max_len):  # out of room: alive beams finish here
                finished[b] = sorted(finished[b] + [
                    (float(new_scores[b, k]) / lp(n, alpha),
                     history[int(parent[b, k])].tolist() + [int(new_tok[b, k])])
                    for k in range(alive)], key=lambda h: -h[0])[:K]
                done[b] = True
            elif alive == 0:  # every extension ended: nothing left to grow
                done[b] = True
            elif len(finished[b]) >= K:
                best_alive = float(new_scores[b].max())
                reach = max(best_alive / lp(n + 1, alpha), best_alive / lp(int(max_len), alpha))
                done[b] = early_stop or reach <= finished[b][-1][0]
        if all(done):
            break
        index = parent.view(-1)
        stepper.reorder(index)
        history = torch.cat([history.index_select(0, index), new_tok.view(-1, 1)], 1)
        scores, tokens = new_scores, new_tok.view(-1)
    return [max(f, key=lambda h: h[0])[1] if f else [] for f in finished]
