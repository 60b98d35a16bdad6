"""``MultiheadAttention``: a drop-in for ``nn.MultiheadAttention`` that runs on a token graph.

Notation: B batch, T queries, S keys (S' = S + 1 per extra key: ``bias_k``, the zero key),
C = embed_dim, H heads, D = C / H.

Same constructor and forward contract as ``torch.nn.MultiheadAttention`` (and the same parameter
names, so ``load_state_dict`` works both ways). Its masks become a graph
(:func:`gnn_attention.graphs.masks.masks_to_graph`): one node per token, one edge per allowed (query,
key) pair; boolean masks follow the MHA convention (True = blocked) and float masks are added to
the scores, -inf meaning no edge. Recognised masks (none, causal, right padding, an additive bias)
map to cached structured graphs that the dense kernel runs as one SDPA call; attention weights are
computed only when ``need_weights``. ``add_bias_kv`` / ``add_zero_attn`` are extra key/value nodes:
one more source node per sequence, with an edge to every query, as torch's extra key column.

One difference, on purpose: a query whose keys are all masked outputs zeros instead of NaN.
"""
from __future__ import annotations

import contextlib
from typing import Optional

import torch
from torch import Tensor, nn

from gnn_attention.attention.conv import MultiheadAttentionConv
from gnn_attention.graphs import edges_to_dense
from gnn_attention.graphs.masks import masks_to_graph


class InputShapeError(ValueError, AssertionError):
    """Query/key/value of the wrong shape (torch asserts, so ``except AssertionError`` works)."""


def _pad_keys(mask: Optional[Tensor], extra: int) -> Optional[Tensor]:
    """Allow the extra key columns: ``[..., S] -> [..., S + extra]`` (False / 0 = allowed)."""
    if mask is None or not extra:
        return mask
    return torch.cat([mask, mask.new_zeros(*mask.shape[:-1], extra)], -1)


class MultiheadAttention(MultiheadAttentionConv):
    """Drop-in replacement for ``torch.nn.MultiheadAttention`` computed by message passing.

    ``forward(query, key, value, key_padding_mask=None, need_weights=True, attn_mask=None,
    average_attn_weights=True, is_causal=False)`` -> ``(attn_output, attn_weights or None)``.

    **Shapes:** query ``[B, T, C]`` (``[T, B, C]`` unless ``batch_first``; ``[T, C]`` unbatched),
    key ``[B, S, kdim]``, value ``[B, S, vdim]``; output ``[B, T, C]``; weights ``[B, T, S']``
    (averaged) or ``[B, H, T, S']``. ``is_causal=True`` builds the causal graph even without
    ``attn_mask`` (top-left aligned, as SDPA), where torch asks for the mask.
    """

    def __init__(self, embed_dim: int, num_heads: int, dropout: float = 0.0, bias: bool = True,
                 add_bias_kv: bool = False, add_zero_attn: bool = False, kdim: Optional[int] = None,
                 vdim: Optional[int] = None, batch_first: bool = False, device=None, dtype=None,
                 backend: str = "auto"):
        super().__init__(embed_dim, num_heads, dropout=dropout, bias=bias, kdim=kdim, vdim=vdim,
                         backend=backend, device=device, dtype=dtype)
        self.batch_first, self.add_zero_attn = batch_first, add_zero_attn
        if add_bias_kv:
            kw = {"device": device, "dtype": dtype}
            self.bias_k = nn.Parameter(torch.empty(1, 1, embed_dim, **kw))
            self.bias_v = nn.Parameter(torch.empty(1, 1, embed_dim, **kw))
            nn.init.xavier_normal_(self.bias_k)
            nn.init.xavier_normal_(self.bias_v)
        else:
            self.register_parameter("bias_k", None)
            self.register_parameter("bias_v", None)

    def reset_parameters(self) -> None:
        """As ``nn.MultiheadAttention``: the projections, then Xavier-normal ``bias_k``/``bias_v``."""
        super().reset_parameters()
        if getattr(self, "bias_k", None) is not None:  # absent while the base class is built
            nn.init.xavier_normal_(self.bias_k)
            nn.init.xavier_normal_(self.bias_v)

    @classmethod
    def from_torch(cls, mha: nn.MultiheadAttention, **kwargs) -> "MultiheadAttention":
        """A drop-in with ``mha``'s configuration, a copy of its weights and its train/eval mode."""
        p = next(mha.parameters())
        layer = cls(mha.embed_dim, mha.num_heads, dropout=mha.dropout,
                    bias=mha.in_proj_bias is not None, add_bias_kv=mha.bias_k is not None,
                    add_zero_attn=mha.add_zero_attn, kdim=mha.kdim, vdim=mha.vdim,
                    batch_first=mha.batch_first, device=p.device, dtype=p.dtype, **kwargs)
        layer.load_state_dict(mha.state_dict())
        return layer.train(mha.training)

    def to_torch(self, batch_first: Optional[bool] = None) -> nn.MultiheadAttention:
        """An ``nn.MultiheadAttention`` with this layer's configuration (``batch_first`` included,
        unless overridden), a copy of its weights and its train/eval mode."""
        if self.score != "scaled_dot":
            raise ValueError(f"nn.MultiheadAttention has only scaled dot-product scores, this layer "
                             f"uses {self.score!r}")
        p = self.out_proj.weight
        mha = nn.MultiheadAttention(
            self.embed_dim, self.num_heads, dropout=self.dropout,
            bias=self.in_proj_bias is not None, add_bias_kv=self.bias_k is not None,
            add_zero_attn=self.add_zero_attn, kdim=self.kdim, vdim=self.vdim,
            batch_first=self.batch_first if batch_first is None else batch_first,
            device=p.device, dtype=p.dtype)
        mha.load_state_dict(self.state_dict())
        return mha.train(self.training)

    def _batch_first(self, query: Tensor, key: Tensor, value: Tensor):
        """``(query [B, T, C], key [B, S, kdim], value [B, S, vdim], unbatched)``."""
        dims = (query.dim(), key.dim(), value.dim())
        if dims not in ((2, 2, 2), (3, 3, 3)):
            raise InputShapeError(f"query, key, value must be 3-D (batched) or 2-D (unbatched), "
                                  f"got {list(query.shape)}, {list(key.shape)}, {list(value.shape)}")
        if dims[0] == 2:
            return query.unsqueeze(0), key.unsqueeze(0), value.unsqueeze(0), True
        if self.batch_first:
            return query, key, value, False
        return query.transpose(0, 1), key.transpose(0, 1), value.transpose(0, 1), False

    def _check(self, query: Tensor, key: Tensor, value: Tensor) -> None:
        (B, _, C), (Bk, S, Ck), (Bv, Sv, Cv) = query.shape, key.shape, value.shape
        if (C, Ck, Cv) != (self.embed_dim, self.kdim, self.vdim):
            raise InputShapeError(f"expected feature widths (query, key, value) = "
                                  f"{(self.embed_dim, self.kdim, self.vdim)}, got {(C, Ck, Cv)}")
        if (Bk, Bv) != (B, B) or Sv != S:
            raise InputShapeError(f"key and value must have shape [B, S, *] with B={B}, got "
                                  f"{list(key.shape)} and {list(value.shape)}")

    def _extra_keys(self, k: Tensor, v: Tensor, B: int):
        """Append ``bias_k``/``bias_v`` and then the zero key/value to every sequence:
        ``[B * S, H, D] -> [B * S', H, D]``."""
        H, D = self.num_heads, self.head_dim
        ks, vs = [k.view(B, -1, H, D)], [v.view(B, -1, H, D)]
        if self.bias_k is not None:
            ks.append(self.bias_k.to(k.dtype).view(1, 1, H, D).expand(B, 1, H, D))
            vs.append(self.bias_v.to(v.dtype).view(1, 1, H, D).expand(B, 1, H, D))
        if self.add_zero_attn:
            ks.append(k.new_zeros(B, 1, H, D))
            vs.append(v.new_zeros(B, 1, H, D))
        return torch.cat(ks, 1).flatten(0, 1), torch.cat(vs, 1).flatten(0, 1)

    def forward(self, query: Tensor, key: Tensor, value: Tensor,
                key_padding_mask: Optional[Tensor] = None, need_weights: bool = True,
                attn_mask: Optional[Tensor] = None, average_attn_weights: bool = True,
                is_causal: bool = False):
        same = query is key and key is value  # self-attention: one fused input projection
        dtype = query.dtype
        query, key, value, unbatched = self._batch_first(query, key, value)
        if unbatched and key_padding_mask is not None:
            key_padding_mask = key_padding_mask.unsqueeze(0)
        self._check(query, key, value)
        (B, T, C), S = query.shape, key.size(1)
        extra = int(self.bias_k is not None) + int(self.add_zero_attn)
        if extra and is_causal:  # causal over the S keys; the extra keys stay visible to all
            attn_mask = attn_mask if attn_mask is not None else torch.ones(
                T, S, dtype=torch.bool, device=query.device).triu(1)
            is_causal = False
        # The masks are checked (and their graph built or found in the cache) before any work.
        graph, edge_bias = masks_to_graph(B, T, S + extra, self.num_heads,
                                          _pad_keys(key_padding_mask, extra),
                                          _pad_keys(attn_mask, extra), is_causal, dtype,
                                          query.device)
        flat = lambda x: x.reshape(-1, x.size(-1))  # noqa: E731
        xq = flat(query)
        q, k, v = self.project(xq, xq, xq) if same else self.project(flat(key), flat(value), xq)
        if extra:
            k, v = self._extra_keys(k, v, B)
        # q, k, v already have the autocast dtype; inside, the kernels keep their own precision
        # (the CSR kernel's sparse products have no bfloat16 form under autocast).
        autocast_on = torch.is_autocast_enabled(q.device.type)
        with torch.autocast(q.device.type, enabled=False) if autocast_on else \
                contextlib.nullcontext():
            res = self.attend(q, k, v, graph, edge_bias, need_weights)
        out = self.merge_heads(res[0] if need_weights else res).view(B, T, C)
        weights = None
        if need_weights:
            weights = edges_to_dense(graph, res[1][1], T, S + extra)
            weights = weights.mean(1) if average_attn_weights else weights
        if unbatched:
            return out.squeeze(0), None if weights is None else weights.squeeze(0)
        return (out if self.batch_first else out.transpose(0, 1)), weights
