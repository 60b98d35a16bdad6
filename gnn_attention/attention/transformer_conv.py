"""``TransformerConv``: a drop-in for ``torch_geometric.nn.TransformerConv`` on this library's kernels.

Notation: N_src source nodes, N_dst target nodes, E edges j -> i, H = ``heads``, C =
``out_channels`` (per head, PyG's channel model), F = ``edge_dim``.

The graph transformer operator of Shi et al. (2021), exactly as PyG computes it:

    q_i = W_Q x_i,  k_j = W_K x_j,  v_j = W_V x_j,  e_ij = W_E a_ij           (each [H, C])
    alpha^h_ij = softmax_{j -> i}( q^h_i . (k^h_j + e^h_ij) / sqrt(C) )
    m_i = concat_h or mean_h  sum_{j -> i} alpha^h_ij (v^h_j + e^h_ij)
    out_i = m_i + W_R x_i              (root_weight; with beta: b_i = sigmoid(w_b . [m_i, r_i,
                                         m_i - r_i]),  out_i = b_i r_i + (1 - b_i) m_i,  r_i = W_R x_i)

Parameters carry PyG's names (``lin_query``, ``lin_key``, ``lin_value``, ``lin_edge``, ``lin_skip``,
``lin_beta``; ``torch_geometric.nn.Linear``, so ``-1`` in_channels are lazy), which makes
:meth:`from_pyg` / :meth:`to_pyg` plain state-dict copies. Differences from PyG, on purpose:
``edge_attr`` with ``edge_dim=None`` raises (PyG adds the raw features to the values); the returned
weights in training are the ones the values saw (after dropout; PyG returns them before); the
layer stores nothing on itself (no ``_alpha``).
"""
from __future__ import annotations

import math
from typing import Optional, Tuple, Union

import torch
from torch import Tensor
from torch_geometric.nn import Linear
from torch_geometric.nn import TransformerConv as PyGTransformerConv

from gnn_attention.attention.kernels import BACKENDS
from gnn_attention.attention.pyg_layer import AttentionMessagePassing

Channels = Union[int, Tuple[int, int]]


class TransformerConv(AttentionMessagePassing):
    r"""PyG's ``TransformerConv`` (same arguments, parameters and outputs) running on the fast
    attention kernels; PyG's explain machinery and hooks switch it to the message-passing form.

    Args:
        in_channels: width of the node features, or ``(source, target)`` widths; ``-1``: lazy.
        out_channels: C, the width of each head.
        heads: H. concat: concatenate the heads (``[N, H C]``) or average them (``[N, C]``).
        beta: learned gate between the attention output and the root (skip) term.
        dropout: dropout on the attention weights (training only).
        edge_dim: F, the width of ``edge_attr`` (projected into keys and values), or None.
        bias: biases of the query/key/value/skip projections. root_weight: add ``W_R x_i``.
        backend: ``"auto"``, a kernel name, or ``"message_passing"``. strict: raise on a target
            without incoming edge (default: its attention part is zero).

    **Shapes:** ``x [N, C_in]`` or ``(x_src [N_src, C_src], x_dst [N_dst, C_dst])``; ``edge_index``
    any PyG form or a TokenGraph; ``edge_attr [E, F]`` -> ``[N_dst, H C]`` (``concat``) or ``[N_dst,
    C]``; with ``return_attention_weights`` a bool (PyG's rule: True or False), also
    ``(edge_index [2, E], alpha [E, H])`` (a SparseTensor input gets alpha as its values).
    """

    def __init__(self, in_channels: Channels, out_channels: int, heads: int = 1,
                 concat: bool = True, beta: bool = False, dropout: float = 0.0,
                 edge_dim: Optional[int] = None, bias: bool = True, root_weight: bool = True,
                 backend: str = "auto", strict: bool = False):
        super().__init__(aggr="sum", node_dim=0)
        if out_channels <= 0 or heads <= 0:
            raise ValueError(f"out_channels ({out_channels}) and heads ({heads}) must be positive")
        if backend not in BACKENDS + ("message_passing",):
            raise ValueError(f"backend must be one of {BACKENDS + ('message_passing',)}, "
                             f"got {backend!r}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        self.in_channels, self.out_channels, self.heads = in_channels, out_channels, heads
        self.concat, self.beta, self.root_weight = concat, beta and root_weight, root_weight
        self.dropout, self.edge_dim, self.backend, self.strict = dropout, edge_dim, backend, strict
        self.score, self.add_self_loops, self.fill_value = "scaled_dot", False, None
        c_src, c_dst = (in_channels, in_channels) if isinstance(in_channels, int) else in_channels
        HC = heads * out_channels
        self.lin_key = Linear(c_src, HC, bias=bias)
        self.lin_query = Linear(c_dst, HC, bias=bias)
        self.lin_value = Linear(c_src, HC, bias=bias)
        self.lin_edge = None if edge_dim is None else Linear(edge_dim, HC, bias=False)
        width = HC if concat else out_channels
        # PyG creates lin_skip even without root_weight (unused then): kept for state-dict parity
        self.lin_skip = Linear(c_dst, width, bias=bias)
        self.lin_beta = Linear(3 * width, 1, bias=False) if self.beta else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """PyG's initialisation (``torch_geometric.nn.Linear`` defaults: Kaiming-uniform)."""
        super().reset_parameters()
        for lin in (self.lin_key, self.lin_query, self.lin_value, self.lin_edge, self.lin_skip,
                    self.lin_beta):
            if lin is not None:
                lin.reset_parameters()

    def forward(self, x: Union[Tensor, Tuple[Tensor, Tensor]], edge_index,
                edge_attr: Optional[Tensor] = None,
                return_attention_weights: Optional[bool] = None):
        x_src, x_dst = (x, x) if isinstance(x, Tensor) else x
        if not (isinstance(x_src, Tensor) and isinstance(x_dst, Tensor)):
            raise TypeError("x must be a tensor [N, C_in] or a pair (x_src, x_dst) of tensors")
        H, C = self.heads, self.out_channels
        q = self.lin_query(x_dst).view(-1, H, C)
        k = self.lin_key(x_src).view(-1, H, C)
        v = self.lin_value(x_src).view(-1, H, C)
        edges = self.edges(edge_index, edge_attr, None, x_src.size(0), x_dst.size(0))
        edge_kv = None
        if self.lin_edge is not None:
            a = edges.edge_attr.to(q.dtype)
            edge_kv = (a, self.lin_edge.weight.view(H, C, -1))  # W_E per head: [H, C, F]
        p = self.dropout if self.training else 0.0
        want = isinstance(return_attention_weights, bool)
        out, alpha = self.attend_edges(q, k, v, edges, edge_kv, p, want, 1.0 / math.sqrt(C))
        out = out.reshape(-1, H * C) if self.concat else out.mean(dim=1)
        if self.root_weight:
            r = self.lin_skip(x_dst)
            if self.lin_beta is not None:
                b = self.lin_beta(torch.cat([out, r, out - r], dim=-1)).sigmoid()
                out = b * r + (1 - b) * out
            else:
                out = out + r
        return (out, self.returned_edges(edges, alpha)) if want else out

    # -- PyG interop ---------------------------------------------------------------------------

    @classmethod
    def from_pyg(cls, conv, **kwargs) -> "TransformerConv":
        """A layer with ``conv``'s configuration (a ``torch_geometric.nn.TransformerConv``) and a
        copy of its weights; ``kwargs`` (``backend``, ``strict``) go to the constructor."""
        layer = cls(conv.in_channels, conv.out_channels, heads=conv.heads, concat=conv.concat,
                    beta=conv.beta, dropout=conv.dropout, edge_dim=conv.edge_dim,
                    bias=conv.lin_key.bias is not None, root_weight=conv.root_weight, **kwargs)
        layer.load_state_dict(conv.state_dict())
        return layer.to(next(conv.parameters()).device)

    def to_pyg(self):
        """A ``torch_geometric.nn.TransformerConv`` with this layer's configuration and weights."""
        conv = PyGTransformerConv(self.in_channels, self.out_channels, heads=self.heads,
                                  concat=self.concat, beta=self.beta, dropout=self.dropout,
                                  edge_dim=self.edge_dim, bias=self.lin_key.bias is not None,
                                  root_weight=self.root_weight)
        conv.load_state_dict(self.state_dict())
        return conv.to(self.lin_key.weight.device)

    def __repr__(self) -> str:
        return (f"{self.__class__.__name__}({self.in_channels}, {self.out_channels}, "
                f"heads={self.heads})")
