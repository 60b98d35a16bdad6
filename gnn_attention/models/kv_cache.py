"""Incremental decoding on a growing causal graph: the key/value cache and one decoder step.

Notation: B sequences decoded in lock-step, L tokens already decoded per sequence, S_max padded
memory (encoder) length, C = d_model, H heads, D = C / H.

At step L every sequence adds one node (its newest token). The new node is the only query; its
incoming edges come from the L cached nodes and itself (``graphs.causal(1, align="bottom_right",
src_lengths=L + 1)``: the last query sees every key), and from every valid memory node (the
bipartite cross graph, built once). Keys and values of old nodes never change (causality), so each
layer keeps them: a step projects one token and attends over L + 1 keys, O(L * C) per layer, instead
of recomputing all L + 1 tokens, O(L^2 * C).

The cache is a value returned by each step and passed back in, never state stored on a module.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Tuple

import torch
from torch import Tensor

from gnn_attention.graphs import TokenGraph
from gnn_attention.graphs.composite import incremental_causal, padded_cross
from gnn_attention.models.layers import Decoder


@dataclass(frozen=True)
class KVCache:
    """Per-layer keys/values of the decoded tokens and of the memory.

    Attributes:
        keys, values: one ``[B, L, H, D]`` per decoder layer (self-attention).
        memory_keys, memory_values: one ``[B, S_max, H, D]`` per layer (cross-attention), padded:
            a padded memory position is a node without edges.
        src_lengths: ``[B]`` valid memory lengths (CPU int64).
        cross_graph: bipartite graph ``B * S_max`` memory nodes -> B query nodes.
        length: L.
    """

    keys: Tuple[Tensor, ...]
    values: Tuple[Tensor, ...]
    memory_keys: Tuple[Tensor, ...]
    memory_values: Tuple[Tensor, ...]
    src_lengths: Tensor
    cross_graph: TokenGraph
    length: int

    @property
    def batch_size(self) -> int:
        return self.src_lengths.numel()

    def reorder(self, index: Tensor) -> "KVCache":
        """Keep sequence ``index[b]`` as new sequence b (beam search: follow each beam's parent).

        **Shapes:** ``index [B']`` (int64) -> a cache of B' sequences."""
        sel = lambda ts: tuple(t.index_select(0, index.to(t.device)) for t in ts)  # noqa: E731
        src_lengths = self.src_lengths.index_select(0, index.cpu())
        S = self.memory_keys[0].size(1) if self.memory_keys else 0
        return replace(self, keys=sel(self.keys), values=sel(self.values),
                       memory_keys=sel(self.memory_keys), memory_values=sel(self.memory_values),
                       src_lengths=src_lengths,
                       cross_graph=padded_cross(src_lengths, S, self.cross_graph.device))


def init_cache(decoder: Decoder, memory: Tensor, src_lengths: Tensor) -> KVCache:
    """An empty cache (L = 0) with each layer's memory keys/values projected once.

    **Shapes:** ``memory [B, S_max, C]`` (padded), ``src_lengths [B]``."""
    if memory.dim() != 3 or src_lengths.dim() != 1 or src_lengths.numel() != memory.size(0):
        raise ValueError(f"init_cache needs memory [B, S, C] and src_lengths [B], got "
                         f"{list(memory.shape)} and {list(src_lengths.shape)}")
    B, S, C = memory.shape
    mk, mv, ks = [], [], []
    for layer in decoder.layers:
        k, v = layer.memory_kv(memory.reshape(B * S, C))
        mk.append(k.view(B, S, *k.shape[1:]))
        mv.append(v.view(B, S, *v.shape[1:]))
        a = layer.self_attn
        ks.append(memory.new_zeros(B, 0, a.num_heads, a.head_dim))
    lengths = src_lengths.detach().to("cpu", torch.long)
    return KVCache(tuple(ks), tuple(ks), tuple(mk), tuple(mv), lengths,
                   padded_cross(lengths, S, memory.device), 0)


def decoder_step(decoder: Decoder, x: Tensor, cache: KVCache) -> Tuple[Tensor, KVCache]:
    """Run one new token per sequence through every decoder layer (and the final norm).

    **Shapes:** ``x [B, C]`` (embedded token at position L) -> ``(y [B, C], cache with L + 1)``.
    """
    B, L = x.size(0), cache.length
    if B != cache.batch_size:
        raise ValueError(f"x has {B} sequences, the cache holds {cache.batch_size}")
    # The growing causal graph of this step, shared by every layer.
    self_graph = incremental_causal(B, L, device=x.device)
    keys, values = [], []
    for i, layer in enumerate(decoder.layers):
        mem = (cache.memory_keys[i].flatten(0, 1), cache.memory_values[i].flatten(0, 1))
        x, (k, v) = layer.step(x, mem, cache.cross_graph, (cache.keys[i], cache.values[i]),
                               self_graph)
        keys.append(k)
        values.append(v)
    if decoder.norm is not None:
        x = decoder.norm(x)
    return x, replace(cache, keys=tuple(keys), values=tuple(values), length=L + 1)
