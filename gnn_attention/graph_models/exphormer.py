"""``ExphormerLayer``: sparse global attention (Shirzad et al. 2023) over the union of the graph's
edges, a random expander and virtual nodes, with a learned bias per edge type and head.

Notation: N nodes of a mini-batch of G graphs (``batch [N]``), V virtual nodes per graph,
N' = N + G V nodes once they are appended, E' attention edges, K edge types, H heads, C channels.

    a^h_ij = q^h_i . k^h_j / sqrt(D) + sum_k [e_ij in set k] w^h_k
    (``typed_kv=True``: k_j -> k_j + sum_k [e_ij in set k] a_k and v_j -> v_j + sum_k [..] b_k,
    per-type key/value offsets, :mod:`~.typed`)
    h      = x' + Dropout(MHA(LN(x'); a))       x' = the nodes' states and the virtual nodes' states
    out    = h + FFN(LN(h))

The edge budget is linear: at most ``E + d N + 2 V N + G V^2 + N'`` edges, against
``sum_g N_g^2`` for full attention, yet every two nodes of a graph are at most two hops apart
(through a virtual node) and the expander mixes well in few hops.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Tuple

import torch
from torch import Tensor, nn

from gnn_attention.attention import MultiheadAttentionConv
from gnn_attention.graph_models.edge_sets import (
    TypedGraph,
    VirtualNodes,
    expander,
    graph_edges,
    typed_union,
    virtual_nodes,
)
from gnn_attention.graph_models.typed import TypedKeyValue

EDGE_TYPES = ("graph", "expander", "virtual", "self")


@dataclass(frozen=True)
class ExphormerInputs:
    """The edge program, built once per batch: ``typed`` the union graph over the N' nodes with its
    ``edge_type [E', 4]`` membership (graph, expander, virtual, self), ``virtual`` the layout."""

    typed: TypedGraph
    virtual: VirtualNodes


def exphormer_inputs(edge_index: Tensor, batch: Tensor, degree: int = 4, num_virtual: int = 1,
                     generator: Optional[torch.Generator] = None) -> ExphormerInputs:
    """Graph edges + a random ``degree``-expander per graph + ``num_virtual`` virtual nodes per
    graph + a self loop on every node, renumbered into the enlarged node set."""
    graph_edges(edge_index, batch)
    vn = virtual_nodes(batch, num_virtual)
    nodes = torch.arange(vn.batch.numel(), device=batch.device)
    sets = {"graph": vn.lift(edge_index), "expander": vn.lift(expander(batch, degree, generator)),
            "virtual": vn.edge_index, "self": torch.stack([nodes, nodes])}
    return ExphormerInputs(typed_union(sets, vn.batch), vn)


class ExphormerLayer(nn.Module):
    r"""One Exphormer layer (pre-LayerNorm) on :func:`exphormer_inputs`.

    Edge program: graph edges, expander edges, virtual <-> real edges of the same graph and self
    loops; edge attribute: the type membership, turned into ``edge_bias = edge_type @ W [K, H]``
    (an edge in two sets gets both biases). Virtual nodes start from a learned state per slot
    (``virtual_state=None``) or carry the state returned by the previous layer. ``typed_kv=True``
    also gives every edge type its own key and value offset per head
    (:class:`~.typed.TypedKeyValue`, zero at initialisation).

    **Shapes:** ``x [N, C]``, ``virtual_state [G V, C]`` or None -> ``(out [N, C],
    virtual_out [G V, C])``.
    """

    def __init__(self, channels: int, heads: int, num_virtual: int = 1,
                 ffn_channels: Optional[int] = None, dropout: float = 0.0,
                 attn_dropout: float = 0.0, typed_kv: bool = False):
        super().__init__()
        ffn = ffn_channels or channels
        self.channels, self.heads, self.num_virtual = channels, heads, num_virtual
        self.norm1 = nn.LayerNorm(channels)
        self.attn = MultiheadAttentionConv(channels, heads, dropout=attn_dropout)
        self.typed_kv = TypedKeyValue(len(EDGE_TYPES), heads, channels // heads) \
            if typed_kv else None
        self.type_bias = nn.Parameter(torch.empty(len(EDGE_TYPES), heads))
        self.virtual_init = nn.Parameter(torch.empty(num_virtual, channels))
        self.dropout = nn.Dropout(dropout)
        self.norm2 = nn.LayerNorm(channels)
        self.ffn = nn.Sequential(nn.Linear(channels, ffn), nn.GELU(), nn.Dropout(dropout),
                                 nn.Linear(ffn, channels), nn.Dropout(dropout))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for m in (self.norm1, self.attn, self.norm2, self.ffn[0], self.ffn[3]):
            m.reset_parameters()
        nn.init.zeros_(self.type_bias)
        nn.init.normal_(self.virtual_init, std=0.02)
        if self.typed_kv is not None:
            self.typed_kv.reset_parameters()

    def forward(self, x: Tensor, inputs: ExphormerInputs,
                virtual_state: Optional[Tensor] = None) -> Tuple[Tensor, Tensor]:
        vn, typed = inputs.virtual, inputs.typed
        G, V = vn.virtual.shape
        if V != self.num_virtual or vn.real.numel() != x.size(0):
            raise ValueError(f"inputs have {V} virtual nodes per graph and {vn.real.numel()} real "
                             f"nodes; the layer has {self.num_virtual}, x has {x.size(0)} rows")
        if virtual_state is None:
            virtual_state = self.virtual_init.repeat(G, 1)
        xa = x.new_empty(vn.batch.numel(), x.size(1))
        xa = xa.index_copy(0, vn.real, x).index_copy(0, vn.virtual.flatten(), virtual_state)
        bias = typed.edge_type.to(x.dtype) @ self.type_bias
        h = xa + self.dropout(self._attention(self.norm1(xa), typed, bias))
        h = h + self.ffn(self.norm2(h))
        return h.index_select(0, vn.real), h.index_select(0, vn.virtual.flatten())

    def _attention(self, xn: Tensor, typed: TypedGraph, bias: Tensor) -> Tensor:
        if self.typed_kv is None:
            return self.attn(xn, typed.graph, edge_bias=bias)
        # the typed path calls graph_attention itself (default backend, empty rows output zero)
        q, k, v = self.attn.project(xn, xn, xn)
        p = self.attn.dropout if self.training else 0.0
        out = self.typed_kv(q, k, v, typed.graph, typed.edge_type, bias, p)
        return self.attn.merge_heads(out)

    def __repr__(self) -> str:
        return (f"{self.__class__.__name__}({self.channels}, heads={self.heads}, "
                f"virtual={self.num_virtual})")
