"""``MultiheadAttention``: a drop-in for ``nn.MultiheadAttention`` that runs on a token graph.

Notation: B batch, T queries, S keys, C = embed_dim, H heads.

Same constructor and forward contract as ``torch.nn.MultiheadAttention`` (and the same parameter
names, so ``load_state_dict`` works both ways). Its masks become a graph: one node per token, one edge
per allowed (query, key) pair; boolean masks follow the MHA convention (True = blocked) and float
masks are added to the scores, -inf meaning no edge. One difference, on purpose: a query whose keys
are all masked outputs zeros instead of NaN.
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch
from torch import Tensor

from .conv import MultiheadAttentionConv
from .graphs import from_dense_mask


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
    src, dst = graph.edge_index
    b, t, s = dst // T, dst % T, src % S
    edge_bias = bias.expand(B, H, T, S)[b, :, t, s]  # [E, H]
    return graph, edge_bias


class MultiheadAttention(MultiheadAttentionConv):
    """Drop-in replacement for ``torch.nn.MultiheadAttention`` computed by message passing.

    ``forward(query, key, value, key_padding_mask=None, need_weights=True, attn_mask=None,
    average_attn_weights=True, is_causal=False)`` -> ``(attn_output, attn_weights)``.

    **Shapes:** query ``[B, T, C]`` (``[T, B, C]`` unless ``batch_first``; ``[T, C]`` unbatched),
    key ``[B, S, kdim]``, value ``[B, S, vdim]``; output ``[B, T, C]``; weights ``[B, T, S]``
    (averaged) or ``[B, H, T, S]``. ``is_causal=True`` builds the causal graph even without
    ``attn_mask`` (top-left aligned, as SDPA).
    """

    def __init__(self, embed_dim: int, num_heads: int, dropout: float = 0.0, bias: bool = True,
                 add_bias_kv: bool = False, add_zero_attn: bool = False, kdim: Optional[int] = None,
                 vdim: Optional[int] = None, batch_first: bool = False, device=None, dtype=None,
                 backend: str = "auto"):
        if add_bias_kv or add_zero_attn:
            raise ValueError("add_bias_kv and add_zero_attn have no graph form here; build the "
                             "extra key/value node explicitly instead")
        super().__init__(embed_dim, num_heads, dropout=dropout, bias=bias, kdim=kdim, vdim=vdim,
                         backend=backend, device=device, dtype=dtype)
        self.batch_first = batch_first

    @classmethod
    def from_torch(cls, mha: torch.nn.MultiheadAttention, **kwargs) -> "MultiheadAttention":
        return super().from_torch(mha, batch_first=mha.batch_first, **kwargs)

    def forward(self, query: Tensor, key: Tensor, value: Tensor,
                key_padding_mask: Optional[Tensor] = None, need_weights: bool = True,
                attn_mask: Optional[Tensor] = None, average_attn_weights: bool = True,
                is_causal: bool = False):
        unbatched = query.dim() == 2
        if unbatched:
            query, key, value = query.unsqueeze(0), key.unsqueeze(0), value.unsqueeze(0)
            key_padding_mask = None if key_padding_mask is None else key_padding_mask.unsqueeze(0)
        elif not self.batch_first:
            query, key, value = (x.transpose(0, 1) for x in (query, key, value))
        if query.dim() != 3 or key.dim() != 3 or value.dim() != 3:
            raise ValueError(f"query, key, value must be 3-D (batched) or 2-D (unbatched), got "
                             f"{list(query.shape)}, {list(key.shape)}, {list(value.shape)}")
        (B, T, _), S = query.shape, key.size(1)
        if key.size(0) != B or value.shape[:2] != key.shape[:2]:
            raise ValueError(f"key and value must have shape [B, S, *] with B={B}, got "
                             f"{list(key.shape)} and {list(value.shape)}")
        graph, edge_bias = masks_to_graph(B, T, S, self.num_heads, key_padding_mask, attn_mask,
                                          is_causal, query.dtype, query.device)
        flat = lambda x: x.reshape(B * x.size(1), x.size(2))  # noqa: E731
        x = flat(query) if (query is key and key is value) else ((flat(key), flat(value)), flat(query))
        out, (_, alpha) = super().forward(x, graph, return_attention_weights=True,
                                          edge_bias=edge_bias)
        out = out.view(B, T, self.embed_dim)
        weights = None
        if need_weights:
            src, dst = graph.edge_index
            weights = alpha.new_zeros(B, T, S, self.num_heads)
            weights[dst // T, dst % T, src % S] = alpha
            weights = weights.permute(0, 3, 1, 2)
            weights = weights.mean(1) if average_attn_weights else weights
        if unbatched:
            return out.squeeze(0), None if weights is None else weights.squeeze(0)
        return (out if self.batch_first else out.transpose(0, 1)), weights
