"""``MultiheadAttention``: a drop-in for ``nn.MultiheadAttention`` that runs on a token graph.

Notation: B batch, T queries, S keys, C = embed_dim, H heads.

Same constructor and forward contract as ``torch.nn.MultiheadAttention`` (and the same parameter
names, so ``load_state_dict`` works both ways). Its masks become a graph: one node per token, one edge
per allowed (query, key) pair; boolean masks follow the MHA convention (True = blocked) and float
masks are added to the scores, -inf meaning no edge. One difference, on purpose: a query whose keys
are all masked outputs zeros instead of NaN.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from gnn_attention.attention.conv import MultiheadAttentionConv
from gnn_attention.graphs import edges_to_dense, masks_to_graph


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
            weights = edges_to_dense(graph, alpha, T, S)
            weights = weights.mean(1) if average_attn_weights else weights
        if unbatched:
            return out.squeeze(0), None if weights is None else weights.squeeze(0)
        return (out if self.batch_first else out.transpose(0, 1)), weights
