"""Token ids -> padded batches with lengths, and a resumable, shardable order of batches.

Notation: B sequences per batch, S = longest source, T = longest target + 1 (the BOS/EOS shift);
``world`` processes, this one is ``rank``; an epoch is one pass over the training examples.

The model builds its token graphs from the lengths once per batch (padding never enters a graph:
a batch is a disjoint union of per-sequence graphs), so padded positions only exist in these dense
id tensors and are excluded from the loss with :data:`IGNORE`.
"""
from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Dict, Iterator, List, Sequence, Tuple

import torch
from torch import Tensor
from torch.utils.data import DistributedSampler

from gnn_attention.training.data.tokenizer import BOS, EOS, PAD, Tokenizer

IGNORE = -100  # F.cross_entropy's default ignore_index: padded target positions carry no loss
Example = Tuple[List[int], List[int]]


@dataclass(frozen=True)
class Batch:
    """Padded tensors of one batch.

    **Shapes:** ``src [B, S]``, ``src_lengths [B]``, ``tgt_in [B, T]`` (BOS + target, PAD after),
    ``tgt_out [B, T]`` (target + EOS, :data:`IGNORE` after), ``tgt_lengths [B]`` (target + 1).
    """

    src: Tensor
    src_lengths: Tensor
    tgt_in: Tensor
    tgt_out: Tensor
    tgt_lengths: Tensor

    def to(self, device) -> "Batch":
        return Batch(*(getattr(self, f.name).to(device, non_blocking=True) for f in fields(self)))

    @property
    def num_tokens(self) -> int:
        """Source plus target tokens (without padding): the unit of tokens/second."""
        return int(self.src_lengths.sum()) + int(self.tgt_lengths.sum())


def encode_pairs(pairs: Sequence[Tuple[str, str]], src_tok: Tokenizer,
                 tgt_tok: Tokenizer) -> List[Example]:
    """(source ids, target ids) for each text pair; empty sources are rejected (no node to attend
    to would make every cross-attention row empty, which the task generators never produce)."""
    out = []
    for src, tgt in pairs:
        s = src_tok.encode(src)
        if not s:
            raise ValueError(f"empty source text in pair {(src, tgt)!r}")
        out.append((s, tgt_tok.encode(tgt)))
    return out


def collate(examples: Sequence[Example]) -> Batch:
    """Pad a list of (source ids, target ids) into a :class:`Batch`."""
    if not examples:
        raise ValueError("cannot collate an empty batch")
    B = len(examples)
    S = max(len(s) for s, _ in examples)
    T = max(len(t) for _, t in examples) + 1
    src = torch.full((B, S), PAD, dtype=torch.long)
    tgt_in = torch.full((B, T), PAD, dtype=torch.long)
    tgt_out = torch.full((B, T), IGNORE, dtype=torch.long)
    for b, (s, t) in enumerate(examples):
        src[b, :len(s)] = torch.tensor(s, dtype=torch.long)
        tgt_in[b, :len(t) + 1] = torch.tensor([BOS] + list(t), dtype=torch.long)
        tgt_out[b, :len(t) + 1] = torch.tensor(list(t) + [EOS], dtype=torch.long)
    src_lengths = torch.tensor([len(s) for s, _ in examples], dtype=torch.long)
    tgt_lengths = torch.tensor([len(t) + 1 for _, t in examples], dtype=torch.long)
    return Batch(src, src_lengths, tgt_in, tgt_out, tgt_lengths)


def pad_sources(seqs: Sequence[Sequence[int]]) -> Tuple[Tensor, Tensor]:
    """``(src [B, S], src_lengths [B])`` for decoding."""
    lengths = torch.tensor([len(s) for s in seqs], dtype=torch.long)
    src = torch.full((len(seqs), int(lengths.max())), PAD, dtype=torch.long)
    for b, s in enumerate(seqs):
        src[b, :len(s)] = torch.tensor(list(s), dtype=torch.long)
    return src, lengths


class BatchStream:
    """An endless, deterministic stream of training batches with a resumable position.

    Epoch e shuffles the examples with ``torch.utils.data.DistributedSampler`` (seed ``seed``,
    epoch e), so rank r of ``world`` processes reads its own shard; the shard is cut into batches of
    ``batch_size // world`` examples, dropping the incomplete tail so that every rank takes the
    same number of steps. The position ``(epoch, index)`` is all the state there is: a resumed run
    that restores it reads exactly the batches an uninterrupted run would have read.
    """

    def __init__(self, examples: Sequence[Example], batch_size: int, seed: int = 0,
                 rank: int = 0, world: int = 1):
        if batch_size % world:
            raise ValueError(f"batch size {batch_size} must be divisible by the number of "
                             f"processes ({world})")
        self.examples, self.seed, self.rank, self.world = examples, seed, rank, world
        self.per_rank = batch_size // world
        if len(examples) // world < self.per_rank:
            raise ValueError(f"{len(examples)} training examples cannot fill one batch of "
                             f"{batch_size} on {world} process(es)")
        self.epoch, self.index = 0, 0
        self._order: List[List[int]] = []

    def _batches(self, epoch: int) -> List[List[int]]:
        sampler = DistributedSampler(range(len(self.examples)), num_replicas=self.world,
                                     rank=self.rank, shuffle=True, seed=self.seed, drop_last=True)
        sampler.set_epoch(epoch)
        idx = list(sampler)
        n = len(idx) // self.per_rank
        return [idx[k * self.per_rank:(k + 1) * self.per_rank] for k in range(n)]

    def __iter__(self) -> Iterator[Batch]:
        return self

    def __next__(self) -> Batch:
        if not self._order:
            self._order = self._batches(self.epoch)
        if self.index >= len(self._order):
            self.epoch, self.index = self.epoch + 1, 0
            self._order = self._batches(self.epoch)
        batch = collate([self.examples[i] for i in self._order[self.index]])
        self.index += 1
        return batch

    def state_dict(self) -> Dict[str, int]:
        return {"epoch": self.epoch, "index": self.index}

    def load_state_dict(self, state: Dict[str, int]) -> None:
        self.epoch, self.index, self._order = int(state["epoch"]), int(state["index"]), []


def fixed_batches(examples: Sequence[Example], batch_size: int) -> Iterator[Batch]:
    """The examples in their order, in batches (evaluation)."""
    for k in range(0, len(examples), batch_size):
        yield collate(examples[k:k + batch_size])
