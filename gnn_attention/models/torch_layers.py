"""Drop-ins for ``nn.TransformerEncoderLayer``, ``nn.TransformerDecoderLayer``,
``nn.TransformerEncoder`` and ``nn.TransformerDecoder``: torch's constructors, dense forward
signatures and parameter names, attention as message passing underneath.

Notation: B batch, S source length, T target length, C = d_model, H heads.

Each dense call turns its masks into token graphs once (:func:`gnn_attention.graphs.masks_to_graph`:
bool True = blocked, float masks added to the scores, recognised masks cached), packs ``[B, T, C]``
into ``[B T, C]`` node features and runs the graph form (``graph_forward`` of the layers and stacks
in :mod:`gnn_attention.models.layers`), so a stack shares its graphs across all its layers. Padded
positions stay nodes: a padded key has no outgoing edge, a padded query still computes, as in
torch. ``*_is_causal=True`` builds the causal graph (top-left) even without a mask.
"""
from __future__ import annotations

import copy
from typing import Optional

import torch.nn.functional as F
from torch import Tensor, nn

from gnn_attention.graphs import masks_to_graph
from gnn_attention.models.layers import Decoder, DecoderLayer, Encoder, EncoderLayer
from gnn_attention.models.mha import InputShapeError, MultiheadAttention


def to_batch_first(x: Tensor, batch_first: bool, name: str = "src"):
    """``(x [B, T, C], unbatched)`` from ``[B, T, C]``, ``[T, B, C]`` or unbatched ``[T, C]``."""
    if x.dim() == 2:
        return x.unsqueeze(0), True
    if x.dim() != 3:
        raise InputShapeError(f"{name} must be 3-D (batched) or 2-D (unbatched), got "
                              f"{list(x.shape)}")
    return (x if batch_first else x.transpose(0, 1)), False


def from_batch_first(y: Tensor, batch_first: bool, unbatched: bool) -> Tensor:
    """The inverse of :func:`to_batch_first`."""
    if unbatched:
        return y.squeeze(0)
    return y if batch_first else y.transpose(0, 1)


def _padding(mask: Optional[Tensor], unbatched: bool) -> Optional[Tensor]:
    return mask.unsqueeze(0) if unbatched and mask is not None else mask


def _layer_args(layer) -> dict:
    """Constructor arguments of an encoder/decoder layer (torch's or ours), read off its modules."""
    p = next(layer.parameters())
    return dict(d_model=layer.self_attn.embed_dim, nhead=layer.self_attn.num_heads,
                dim_feedforward=layer.linear1.out_features, dropout=layer.dropout.p,
                activation=layer.activation, layer_norm_eps=layer.norm1.eps,
                batch_first=layer.self_attn.batch_first, norm_first=layer.norm_first,
                bias=layer.linear1.bias is not None, device=p.device, dtype=p.dtype)


def _copy_into(target: nn.Module, source: nn.Module) -> nn.Module:
    target.load_state_dict(source.state_dict())
    return target.train(source.training)


class TransformerEncoderLayer(EncoderLayer):
    """``nn.TransformerEncoderLayer`` on a token graph.

    ``forward(src, src_mask=None, src_key_padding_mask=None, is_causal=False)``.
    **Shapes:** ``src [B, S, C]`` (``[S, B, C]`` unless ``batch_first``; ``[S, C]`` unbatched),
    ``src_mask [S, S]`` or ``[B * H, S, S]``, ``src_key_padding_mask [B, S]`` -> like ``src``.
    """

    attention = MultiheadAttention

    def __init__(self, d_model: int, nhead: int, dim_feedforward: int = 2048, dropout: float = 0.1,
                 activation=F.relu, layer_norm_eps: float = 1e-5, batch_first: bool = False,
                 norm_first: bool = False, bias: bool = True, device=None, dtype=None):
        super().__init__(d_model, nhead, dim_feedforward, dropout, activation, layer_norm_eps,
                         norm_first, bias, device, dtype)
        self.self_attn.batch_first = batch_first

    def forward(self, src: Tensor, src_mask: Optional[Tensor] = None,
                src_key_padding_mask: Optional[Tensor] = None, is_causal: bool = False) -> Tensor:
        bf = self.self_attn.batch_first
        x, unbatched = to_batch_first(src, bf)
        (B, S, C), H = x.shape, self.self_attn.num_heads
        g, bias = masks_to_graph(B, S, S, H, _padding(src_key_padding_mask, unbatched), src_mask,
                                 bool(is_causal), x.dtype, x.device)
        y = self.graph_forward(x.reshape(B * S, C), g, bias).view(B, S, C)
        return from_batch_first(y, bf, unbatched)

    @classmethod
    def from_torch(cls, layer: nn.TransformerEncoderLayer) -> "TransformerEncoderLayer":
        """A copy of ``layer`` (configuration, weights, train/eval mode)."""
        return _copy_into(cls(**_layer_args(layer)), layer)

    def to_torch(self) -> nn.TransformerEncoderLayer:
        return _copy_into(nn.TransformerEncoderLayer(**_layer_args(self)), self)


class TransformerDecoderLayer(DecoderLayer):
    """``nn.TransformerDecoderLayer`` on token graphs (self graph over the target, cross graph
    from the memory).

    ``forward(tgt, memory, tgt_mask=None, memory_mask=None, tgt_key_padding_mask=None,
    memory_key_padding_mask=None, tgt_is_causal=False, memory_is_causal=False)``.
    **Shapes:** ``tgt [B, T, C]``, ``memory [B, S, C]`` (sequence-first unless ``batch_first``),
    ``tgt_mask [T, T]``, ``memory_mask [T, S]`` (or per head ``[B * H, ., .]``) -> like ``tgt``.
    """

    attention = MultiheadAttention

    def __init__(self, d_model: int, nhead: int, dim_feedforward: int = 2048, dropout: float = 0.1,
                 activation=F.relu, layer_norm_eps: float = 1e-5, batch_first: bool = False,
                 norm_first: bool = False, bias: bool = True, device=None, dtype=None):
        super().__init__(d_model, nhead, dim_feedforward, dropout, activation, layer_norm_eps,
                         norm_first, bias, device, dtype)
        self.self_attn.batch_first = self.multihead_attn.batch_first = batch_first

    def forward(self, tgt: Tensor, memory: Tensor, tgt_mask: Optional[Tensor] = None,
                memory_mask: Optional[Tensor] = None,
                tgt_key_padding_mask: Optional[Tensor] = None,
                memory_key_padding_mask: Optional[Tensor] = None, tgt_is_causal: bool = False,
                memory_is_causal: bool = False) -> Tensor:
        return decode(self.graph_forward, self.self_attn, tgt, memory, tgt_mask, memory_mask,
                      tgt_key_padding_mask, memory_key_padding_mask, tgt_is_causal,
                      memory_is_causal)

    @classmethod
    def from_torch(cls, layer: nn.TransformerDecoderLayer) -> "TransformerDecoderLayer":
        return _copy_into(cls(**_layer_args(layer)), layer)

    def to_torch(self) -> nn.TransformerDecoderLayer:
        return _copy_into(nn.TransformerDecoderLayer(**_layer_args(self)), self)


def decode(run, attn, tgt, memory, tgt_mask, memory_mask, tgt_key_padding_mask,
           memory_key_padding_mask, tgt_is_causal, memory_is_causal) -> Tensor:
    """The dense decoder call shared by the layer and the stack: layouts, the two graphs, then
    ``run(x [B T, C], memory [B S, C], self_graph, cross_graph, self_bias, cross_bias)``."""
    bf = attn.batch_first
    x, unbatched = to_batch_first(tgt, bf, "tgt")
    m, _ = to_batch_first(memory, bf, "memory")
    (B, T, C), S, H = x.shape, m.size(1), attn.num_heads
    if m.size(0) != B or m.size(-1) != C:
        raise InputShapeError(f"memory must be [B, S, {C}] with B={B}, got {list(m.shape)}")
    g_self, b_self = masks_to_graph(B, T, T, H, _padding(tgt_key_padding_mask, unbatched),
                                    tgt_mask, bool(tgt_is_causal), x.dtype, x.device)
    g_x, b_x = masks_to_graph(B, T, S, H, _padding(memory_key_padding_mask, unbatched),
                              memory_mask, bool(memory_is_causal), x.dtype, x.device)
    y = run(x.reshape(B * T, C), m.reshape(B * S, C), g_self, g_x, b_self, b_x).view(B, T, C)
    return from_batch_first(y, bf, unbatched)


class TransformerEncoder(Encoder):
    """``nn.TransformerEncoder``: ``num_layers`` copies of ``encoder_layer`` sharing one graph.

    ``forward(src, mask=None, src_key_padding_mask=None, is_causal=None)``; shapes as
    :class:`TransformerEncoderLayer` (``batch_first`` is the first layer's). ``enable_nested_tensor``
    and ``mask_check`` are accepted and have nothing to switch: padding is already structural.
    """

    def __init__(self, encoder_layer: EncoderLayer, num_layers: int,
                 norm: Optional[nn.Module] = None, enable_nested_tensor: bool = True,
                 mask_check: bool = True):
        super().__init__(encoder_layer, num_layers, norm)
        self.enable_nested_tensor, self.mask_check = enable_nested_tensor, mask_check

    def forward(self, src: Tensor, mask: Optional[Tensor] = None,
                src_key_padding_mask: Optional[Tensor] = None,
                is_causal: Optional[bool] = None) -> Tensor:
        attn = self.layers[0].self_attn
        bf = getattr(attn, "batch_first", False)
        x, unbatched = to_batch_first(src, bf)
        (B, S, C), H = x.shape, attn.num_heads
        g, bias = masks_to_graph(B, S, S, H, _padding(src_key_padding_mask, unbatched), mask,
                                 bool(is_causal), x.dtype, x.device)
        y = self.graph_forward(x.reshape(B * S, C), g, bias).view(B, S, C)
        return from_batch_first(y, bf, unbatched)

    @classmethod
    def from_torch(cls, enc: nn.TransformerEncoder) -> "TransformerEncoder":
        layer = TransformerEncoderLayer.from_torch(enc.layers[0])
        return _copy_into(cls(layer, len(enc.layers), copy.deepcopy(enc.norm)), enc)

    def to_torch(self) -> nn.TransformerEncoder:
        layer = self.layers[0].to_torch()
        t = nn.TransformerEncoder(layer, self.num_layers, copy.deepcopy(self.norm),
                                  enable_nested_tensor=False)
        return _copy_into(t, self)


class TransformerDecoder(Decoder):
    """``nn.TransformerDecoder``: ``num_layers`` copies of ``decoder_layer`` sharing the self and
    cross graphs; forward signature and shapes as :class:`TransformerDecoderLayer`."""

    def forward(self, tgt: Tensor, memory: Tensor, tgt_mask: Optional[Tensor] = None,
                memory_mask: Optional[Tensor] = None,
                tgt_key_padding_mask: Optional[Tensor] = None,
                memory_key_padding_mask: Optional[Tensor] = None,
                tgt_is_causal: Optional[bool] = None, memory_is_causal: bool = False) -> Tensor:
        return decode(self.graph_forward, self.layers[0].self_attn, tgt, memory, tgt_mask,
                      memory_mask, tgt_key_padding_mask, memory_key_padding_mask, tgt_is_causal,
                      memory_is_causal)

    @classmethod
    def from_torch(cls, dec: nn.TransformerDecoder) -> "TransformerDecoder":
        layer = TransformerDecoderLayer.from_torch(dec.layers[0])
        return _copy_into(cls(layer, len(dec.layers), copy.deepcopy(dec.norm)), dec)

    def to_torch(self) -> nn.TransformerDecoder:
        layer = self.layers[0].to_torch()
        return _copy_into(nn.TransformerDecoder(layer, self.num_layers, copy.deepcopy(self.norm)),
                          self)
