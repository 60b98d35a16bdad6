"""Masks in PyTorch's conventions -> a token graph and a per-edge bias.

Notation: B batch, T queries, S keys, H heads, E edges.

``nn.MultiheadAttention`` takes a ``key_padding_mask [B, S]``, an ``attn_mask [T, S]`` or
``[B * H, T, S]`` and ``is_causal``; boolean masks say True = blocked, float masks are added to the
scores (-inf = blocked). Here they become edges (a pair is an edge when at least one head may
attend) and, where a float mask or a per-head mask leaves something per edge, ``edge_bias [E, H]``.
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch
from torch import Tensor

from gnn_attention.graphs.convert import from_dense_mask
from gnn_attention.graphs.positions import edge_positions, edge_sequences


def _as_bias(mask: Optional[Tensor], dtype: torch.dtype) -> Optional[Tensor]:
    """A mask as an additive float bias (MHA convention: bool True = blocked = -inf)."""
    if mask is None:
        return None
    if mask.dtype == torch.bool:
        return torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill(mask, float("-inf"))
    if not mask.is_floating_point():
        raise TypeError(f"masks must be bool or float, got {mask.dtype}")
    return mask.to(dtype)


def masks_to_graph(B: int, T: int, S: int, H: int, key_padding_mask: Optional[Tensor],
                   attn_mask: Optional[Tensor], is_causal: bool, dtype: torch.dtype,
                   device) -> Tuple[object, Optional[Tensor]]:
    """Turn MHA-style masks into a :class:`TokenGraph` over ``B * T`` queries and ``B * S`` keys
    and an optional per-edge bias ``[E, H]`` (float masks' finite values, per head)."""
    if key_padding_mask is not None and key_padding_mask.shape != (B, S):
        raise ValueError(f"key_padding_mask must have shape [B, S] = {[B, S]}, got "
                         f"{list(key_padding_mask.shape)}")
    if attn_mask is not None and attn_mask.shape not in ((T, S), (B * H, T, S)):
        raise ValueError(f"attn_mask must have shape [T, S] = {[T, S]} or [B * H, T, S] = "
                         f"{[B * H, T, S]}, got {list(attn_mask.shape)}")
    bias = torch.zeros(B, 1, T, S, dtype=dtype, device=device)
    if key_padding_mask is not None:
        bias = bias + _as_bias(key_padding_mask, dtype).view(B, 1, 1, S)
    if attn_mask is not None:
        am = _as_bias(attn_mask, dtype)
        bias = bias + (am.view(1, 1, T, S) if am.dim() == 2 else am.view(B, H, T, S))
    if is_causal:
        future = torch.ones(T, S, dtype=torch.bool, device=device).triu(1)
        bias = bias.masked_fill(future, float("-inf"))
    allowed = (bias > float("-inf")).any(1)  # an edge where at least one head may attend
    graph = from_dense_mask(allowed, "sdpa")
    float_masks = any(m is not None and m.dtype != torch.bool for m in (key_padding_mask, attn_mask))
    if not float_masks and (attn_mask is None or attn_mask.dim() == 2):
        return graph, None  # a pure edge set, shared by every head: nothing left to carry
    b = edge_sequences(graph)
    t, s = edge_positions(graph)
    edge_bias = bias.expand(B, H, T, S)[b, :, t, s]  # [E, H]
    return graph, edge_bias
