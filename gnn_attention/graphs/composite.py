"""Builders composed from the basic ones: BigBird, a padded cross graph, one decoding step.

Notation: B sequences, T tokens per sequence, S_max padded memory length, L decoded tokens,
w window reach, t, s local target / source positions.

    bigbird             |t - s| <= w  or  t, s global  or  (t // block, s // block) a random pair
    padded_cross        memory slot b * S_max + s -> query b, for every valid s < S_b
    incremental_causal  one new query per sequence over its L cached keys and itself
                        (causal, bottom-right aligned: the last query sees every key)
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from gnn_attention.graphs.builders import causal, check_int, from_predicate
from gnn_attention.graphs.core import Lengths, Pattern, TokenGraph, as_lengths, from_edge_index


def bigbird(lengths: Lengths, w: int = 1, global_tokens: Sequence[int] = (0,), block: int = 2,
            random_blocks: int = 1, seed: int = 0, device=None) -> TokenGraph:
    """A BigBird-like pattern in every sequence: the union of a sliding window (|t - s| <= w),
    global tokens (attend to and are attended by everyone) and, for every query block of
    ``block`` tokens, ``random_blocks`` random key blocks (drawn once from ``seed``, shared by the
    sequences). Global positions beyond a sequence's length are ignored."""
    n = as_lengths(lengths)
    w, block = check_int("bigbird w", w, 0), check_int("bigbird block", block, 1)
    random_blocks = check_int("bigbird random_blocks", random_blocks, 0)
    glob = torch.tensor([check_int("a global token", g, 0) for g in global_tokens], dtype=torch.long)
    nb = -(-int(n.max()) // block) if n.numel() else 0
    gen = torch.Generator().manual_seed(seed)
    rand = torch.zeros(nb, nb, dtype=torch.bool)
    for b in range(nb):
        rand[b, torch.randperm(nb, generator=gen)[:random_blocks]] = True

    def allows(t, s, T, S):
        g = torch.isin(t, glob) | torch.isin(s, glob)
        return g | ((t - s).abs() <= w) | rand[t // block, s // block]

    return from_predicate(n, allows, name="bigbird", device=device)


def padded_cross(src_lengths: Tensor, S_max: int, device=None) -> TokenGraph:
    """Edges ``b * S_max + s -> b`` for every valid memory position s < src_lengths[b]: one query
    per sequence over a padded memory (padded positions are nodes without edges)."""
    n = as_lengths(src_lengths, "src_lengths")
    S_max = check_int("S_max", S_max, 0)
    if n.numel() and int(n.max()) > S_max:
        raise ValueError(f"src_lengths {n.tolist()} exceed the memory length {S_max}")
    B = n.numel()
    dst = torch.repeat_interleave(torch.arange(B), n)
    start = torch.cat([n.new_zeros(1), n.cumsum(0)[:-1]])
    src = dst * S_max + torch.arange(dst.numel()) - start[dst]
    return from_edge_index(torch.stack([src, dst]), torch.full((B,), S_max),
                           torch.ones(B, dtype=torch.long), Pattern("cross_padded"),
                           bipartite=True, device=device)


def incremental_causal(B: int, L: int, device=None) -> TokenGraph:
    """The self-attention graph of decoding step L: B queries (one per sequence, at position L)
    over ``B * (L + 1)`` keys (the L cached tokens and the new one). Implicit, O(B)."""
    B, L = check_int("B", B, 0), check_int("L", L, 0)
    return causal(torch.ones(B, dtype=torch.long), align="bottom_right",
                  src_lengths=torch.full((B,), L + 1), device=device)
