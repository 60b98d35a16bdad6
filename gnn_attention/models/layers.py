"""Transformer layers and stacks on token graphs; every attention is a ``MultiheadAttentionConv``
(or its torch drop-in subclass, in :mod:`gnn_attention.models.torch_layers`).

Notation: N nodes (all tokens of a batch, packed: no padding), N_src memory (encoder) nodes,
N_dst decoder nodes, C = d_model, F = dim_feedforward, H heads, D = C / H; B sequences, L cached
positions per sequence, S_max padded memory length.

Encoder layer (post-norm, ``norm_first=False``; pre-norm moves each LayerNorm inside the residual):

    x = LN1(x + SelfAttn(x; G_self))          x = x + SelfAttn(LN1(x); G_self)
    x = LN2(x + FFN(x))                       x = x + FFN(LN2(x))          FFN = W2 act(W1 x)

Decoder layer: causal self-attention on G_self, cross-attention over the bipartite graph G_cross
(memory -> decoder), FFN. Stacks take the graphs once and hand the same objects to every layer.
Submodule names follow ``nn.TransformerEncoderLayer``/``nn.TransformerDecoderLayer`` (``self_attn``,
``multihead_attn``, ``linear1``, ``linear2``, ``norm1..3``) so state dicts line up with torch.
"""
from __future__ import annotations

import copy
from typing import List, Optional, Tuple

import torch
from torch import Tensor, nn

from gnn_attention.attention.conv import MultiheadAttentionConv
from gnn_attention.attention.positional import apply_rotary
from gnn_attention.graphs import TokenGraph
from gnn_attention.models.config import ActivationLike, activation_fn, activation_name

Rotary = Optional[Tuple[Tensor, Tensor]]  # (cos, sin) per node, see positional.rotary_tables


def self_attention(attn: MultiheadAttentionConv, x: Tensor, graph: TokenGraph,
                   edge_bias: Optional[Tensor], rotary: Rotary, need_weights: bool):
    """``attn`` over ``graph`` (queries and keys are the same nodes), rotating q and k first when
    ``rotary`` is given. Returns ``(out [N, C], alpha [E, H] or None)``. Only the layer's public
    seams are used, so ``attn`` may be the conv or the torch drop-in (whose ``forward`` is dense).
    """
    q, k, v = attn.project(x, x, x)
    if rotary is not None:
        q, k = apply_rotary(q, *rotary), apply_rotary(k, *rotary)
    res = attn.attend(q, k, v, graph, edge_bias, need_weights)
    return (attn.merge_heads(res[0]), res[1][1]) if need_weights else (attn.merge_heads(res), None)


class _FeedForward(nn.Module):
    """Shared pieces of both layers: the FFN and its checks (no state beyond parameters)."""

    # The attention module of every attention block; the torch drop-ins put their own here.
    attention = MultiheadAttentionConv

    def _init_ffn(self, d_model, dim_feedforward, dropout, activation, bias, kw):
        # A name or any callable, as torch's layers; a module stays a submodule ("activation").
        self.activation = activation_fn(activation)
        # torch's flag for its fused path (1 relu, 2 gelu, 0 other); read by to_torch/from_torch.
        self.activation_relu_or_gelu = {"relu": 1, "gelu": 2}.get(activation_name(activation), 0)
        self.linear1 = nn.Linear(d_model, dim_feedforward, bias=bias, **kw)
        self.dropout = nn.Dropout(dropout)
        self.linear2 = nn.Linear(dim_feedforward, d_model, bias=bias, **kw)

    def _ff_block(self, x: Tensor) -> Tensor:
        return self.linear2(self.dropout(self.activation(self.linear1(x))))


class EncoderLayer(_FeedForward):
    """Self-attention on a token graph, then a position-wise feed-forward network.

    **Shapes:** ``x [N, C]``, ``graph`` over N nodes, ``edge_bias [E, H]`` (optional),
    ``rotary`` two ``[N, D/2]`` (optional) -> ``[N, C]``, or ``(x, alpha [E, H])`` with
    ``need_weights``.
    """

    def __init__(self, d_model: int, nhead: int, dim_feedforward: int = 2048, dropout: float = 0.1,
                 activation: ActivationLike = "relu", layer_norm_eps: float = 1e-5,
                 norm_first: bool = False,
                 bias: bool = True, device=None, dtype=None):
        super().__init__()
        kw = {"device": device, "dtype": dtype}
        self.self_attn = self.attention(d_model, nhead, dropout=dropout, bias=bias, **kw)
        self._init_ffn(d_model, dim_feedforward, dropout, activation, bias, kw)
        self.norm_first = norm_first
        self.norm1 = nn.LayerNorm(d_model, eps=layer_norm_eps, bias=bias, **kw)
        self.norm2 = nn.LayerNorm(d_model, eps=layer_norm_eps, bias=bias, **kw)
        self.dropout1, self.dropout2 = nn.Dropout(dropout), nn.Dropout(dropout)

    def graph_forward(self, x: Tensor, graph: TokenGraph, edge_bias: Optional[Tensor] = None,
                      rotary: Rotary = None, need_weights: bool = False):
        h = self.norm1(x) if self.norm_first else x
        a, alpha = self_attention(self.self_attn, h, graph, edge_bias, rotary, need_weights)
        x = x + self.dropout1(a) if self.norm_first else self.norm1(x + self.dropout1(a))
        if self.norm_first:
            x = x + self.dropout2(self._ff_block(self.norm2(x)))
        else:
            x = self.norm2(x + self.dropout2(self._ff_block(x)))
        return (x, alpha) if need_weights else x

    # The graph-level call; the torch drop-in subclass overrides ``forward`` with torch's dense
    # signature and stacks reach the graph form by this name.
    forward = graph_forward


class DecoderLayer(_FeedForward):
    """Causal self-attention, cross-attention over the memory -> decoder graph, feed-forward.

    **Shapes:** ``x [N_dst, C]``, ``memory [N_src, C]``, ``self_graph`` over N_dst nodes,
    ``cross_graph`` bipartite N_src -> N_dst -> ``[N_dst, C]``, or
    ``(x, alpha_self [E_self, H], alpha_cross [E_cross, H])`` with ``need_weights``.
    """

    def __init__(self, d_model: int, nhead: int, dim_feedforward: int = 2048, dropout: float = 0.1,
                 activation: ActivationLike = "relu", layer_norm_eps: float = 1e-5,
                 norm_first: bool = False,
                 bias: bool = True, device=None, dtype=None):
        super().__init__()
        kw = {"device": device, "dtype": dtype}
        self.self_attn = self.attention(d_model, nhead, dropout=dropout, bias=bias, **kw)
        self.multihead_attn = self.attention(d_model, nhead, dropout=dropout, bias=bias, **kw)
        self._init_ffn(d_model, dim_feedforward, dropout, activation, bias, kw)
        self.norm_first = norm_first
        self.norm1, self.norm2, self.norm3 = (
            nn.LayerNorm(d_model, eps=layer_norm_eps, bias=bias, **kw) for _ in range(3))
        self.dropout1, self.dropout2, self.dropout3 = (nn.Dropout(dropout) for _ in range(3))

    def _residual(self, x: Tensor, block, norm: nn.LayerNorm, drop: nn.Dropout):
        """Apply ``block`` with a residual connection in post- or pre-norm order."""
        if self.norm_first:
            out = block(norm(x))
            return x + drop(out[0]), out[1]
        out = block(x)
        return norm(x + drop(out[0])), out[1]

    def graph_forward(self, x: Tensor, memory: Tensor, self_graph: TokenGraph,
                      cross_graph: TokenGraph, self_bias: Optional[Tensor] = None,
                      cross_bias: Optional[Tensor] = None, need_weights: bool = False):
        def cross(h):
            a = self.multihead_attn
            q, k, v = a.project(memory, memory, h)
            res = a.attend(q, k, v, cross_graph, cross_bias, need_weights)
            return (a.merge_heads(res[0]), res[1][1]) if need_weights else (a.merge_heads(res), None)

        x, a_self = self._residual(x, lambda h: self_attention(self.self_attn, h, self_graph,
                                                               self_bias, None, need_weights),
                                   self.norm1, self.dropout1)
        x, a_cross = self._residual(x, cross, self.norm2, self.dropout2)
        x, _ = self._residual(x, lambda h: (self._ff_block(h), None), self.norm3, self.dropout3)
        return (x, a_self, a_cross) if need_weights else x

    forward = graph_forward  # see EncoderLayer

    def step(self, x: Tensor, memory_kv: Tuple[Tensor, Tensor], cross_graph: TokenGraph,
             past_kv: Tuple[Tensor, Tensor], self_graph: TokenGraph):
        """One incremental step: one new query per sequence attends to its cached keys plus its own.

        **Shapes:** ``x [B, C]``; ``memory_kv`` two ``[B * S_max, H, D]``; ``past_kv`` two
        ``[B, L, H, D]``; ``self_graph`` B targets over ``B * (L + 1)`` sources -> ``(x [B, C],
        (k, v) [B, L + 1, H, D])``. Costs O(L * C + C * F) per sequence, not O(L^2 * C).
        """
        new_kv = []

        def sa(h):
            q, k, v = self.self_attn.project(h, h, h)
            k = torch.cat([past_kv[0], k.unsqueeze(1)], 1)
            v = torch.cat([past_kv[1], v.unsqueeze(1)], 1)
            new_kv.append((k, v))
            flat = lambda t: t.reshape(-1, *t.shape[2:])  # noqa: E731
            return self.self_attn.merge_heads(self.self_attn.attend(q, flat(k), flat(v),
                                                                    self_graph)), None

        def cross(h):
            a = self.multihead_attn
            return a.merge_heads(a.attend(a.project_one(h, 0), *memory_kv, cross_graph)), None

        x, _ = self._residual(x, sa, self.norm1, self.dropout1)
        x, _ = self._residual(x, cross, self.norm2, self.dropout2)
        x, _ = self._residual(x, lambda h: (self._ff_block(h), None), self.norm3, self.dropout3)
        return x, new_kv[0]

    def memory_kv(self, memory: Tensor) -> Tuple[Tensor, Tensor]:
        """Keys and values of the memory for cross-attention, projected once per source sentence.
        **Shapes:** ``memory [M, C]`` -> two ``[M, H, D]``."""
        a = self.multihead_attn
        return a.project_one(memory, 1), a.project_one(memory, 2)


def _clones(layer: nn.Module, n: int) -> nn.ModuleList:
    return nn.ModuleList(copy.deepcopy(layer) for _ in range(n))


class Encoder(nn.Module):
    """A stack of :class:`EncoderLayer` sharing one graph (and its bias/rotary tables), plus an
    optional final LayerNorm (``norm``). Returns ``x [N, C]``; with ``need_weights``
    ``(x, hidden: list of L + 1 [N, C] (input, then each layer), alphas: list of L [E, H])``."""

    def __init__(self, layer: EncoderLayer, num_layers: int, norm: Optional[nn.LayerNorm] = None):
        super().__init__()
        self.layers, self.num_layers, self.norm = _clones(layer, num_layers), num_layers, norm

    def graph_forward(self, x: Tensor, graph: TokenGraph, edge_bias: Optional[Tensor] = None,
                      rotary: Rotary = None, need_weights: bool = False):
        hidden: List[Tensor] = [x]
        alphas: List[Tensor] = []
        for layer in self.layers:
            if need_weights:
                x, alpha = layer.graph_forward(x, graph, edge_bias, rotary, need_weights=True)
                hidden.append(x)
                alphas.append(alpha)
            else:
                x = layer.graph_forward(x, graph, edge_bias, rotary)
        if self.norm is not None:
            x = self.norm(x)
        return (x, hidden, alphas) if need_weights else x

    forward = graph_forward  # see EncoderLayer


class Decoder(nn.Module):
    """A stack of :class:`DecoderLayer` sharing the self and cross graphs, plus an optional final
    LayerNorm. Returns ``x [N_dst, C]``; with ``need_weights`` ``(x, self_alphas, cross_alphas)``
    (lists of ``[E, H]``, one per layer)."""

    def __init__(self, layer: DecoderLayer, num_layers: int, norm: Optional[nn.LayerNorm] = None):
        super().__init__()
        self.layers, self.num_layers, self.norm = _clones(layer, num_layers), num_layers, norm

    def graph_forward(self, x: Tensor, memory: Tensor, self_graph: TokenGraph,
                      cross_graph: TokenGraph, self_bias: Optional[Tensor] = None,
                      cross_bias: Optional[Tensor] = None, need_weights: bool = False):
        a_self: List[Tensor] = []
        a_cross: List[Tensor] = []
        for layer in self.layers:
            if need_weights:
                x, s, c = layer.graph_forward(x, memory, self_graph, cross_graph, self_bias,
                                              cross_bias, True)
                a_self.append(s)
                a_cross.append(c)
            else:
                x = layer.graph_forward(x, memory, self_graph, cross_graph, self_bias, cross_bias)
        if self.norm is not None:
            x = self.norm(x)
        return (x, a_self, a_cross) if need_weights else x

    forward = graph_forward  # see EncoderLayer


def encoder_stack(config, num_layers: int) -> Encoder:
    """L encoder layers shaped by a :class:`~gnn_attention.models.config.LayerConfig`; a final
    LayerNorm exactly when pre-norm (a post-norm stack already ends normalised)."""
    c = config
    layer = EncoderLayer(c.d_model, c.nhead, **c.layer_kwargs())
    norm = nn.LayerNorm(c.d_model, eps=c.layer_norm_eps, bias=c.bias) if c.norm_first else None
    return Encoder(layer, num_layers, norm)
