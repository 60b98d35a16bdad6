"""``MultiheadAttentionConv``: exact Transformer multi-head attention as a PyG message-passing layer.

Notation: N_src source (key/value) nodes, N_dst target (query) nodes, E edges j -> i,
H heads, D = embed_dim // H per-head width, C = embed_dim.

    q_i = W_Q x_i + b_Q,   k_j = W_K x_j + b_K,   v_j = W_V x_j + b_V      (split into H heads)
    out_i = W_O concat_h( sum_{j -> i} alpha^h_ij v^h_j ) + b_O,  alpha^h = segment softmax of
    score(q^h_i, k^h_j) over the incoming edges of i.

Parameters carry ``nn.MultiheadAttention``'s names and layouts (``in_proj_weight [3C, C]`` or
``q_proj_weight``/``k_proj_weight``/``v_proj_weight`` when kdim/vdim differ, ``in_proj_bias [3C]``,
``out_proj``), so weights move both ways with ``load_state_dict``. ``embed_dim`` counts all heads
(as in torch), not PyG's per-head ``out_channels`` habit (that is :class:`TransformerConv`'s).

Edge features ``a_ij`` (``edge_dim``) enter either the scores, ``s^h_ij += w_h . a_ij`` (one bias
per head, ``edge_mode="score"``), or the keys and values, ``k_j + W_E a_ij`` and ``v_j + W_E a_ij``
(``edge_mode="key_value"``, TransformerConv's rule), both on the fast kernels without ``[E, H, D]``
temporaries (:mod:`gnn_attention.attention.edge_features`). The PyG side (every edge input form,
self-loops, explain and hooks) is :class:`~gnn_attention.attention.pyg_layer.AttentionMessagePassing`.
"""
from __future__ import annotations

import math
from dataclasses import replace
from typing import Optional, Tuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gnn_attention.attention.kernels import BACKENDS
from gnn_attention.attention.math import SCORES
from gnn_attention.attention.pyg_layer import AttentionMessagePassing
from gnn_attention.graphs import TokenGraph

NodeFeatures = Union[Tensor, Tuple[Union[Tensor, Tuple[Tensor, Tensor]], Tensor]]
# [2, E], EdgeIndex, torch.sparse adj_t, SparseTensor, or a TokenGraph
EdgeInput = Union[Tensor, TokenGraph, object]
EDGE_MODES = ("score", "key_value")


class MultiheadAttentionConv(AttentionMessagePassing):
    r"""Multi-head attention on the edges of a graph; equal to ``nn.MultiheadAttention`` when the
    graph is the (masked) complete graph of each sequence.

    Args:
        embed_dim: total width C of queries and outputs (all heads together).
        num_heads: H; C must be divisible by H.
        dropout: dropout on the attention weights (training only).
        bias: biases in the input and output projections.
        kdim, vdim: widths of key and value node features (default C).
        score: ``"scaled_dot"`` (default), ``"dot"``, ``"general"`` or ``"additive"``; the last two
            add per-head score weights (``score_weight`` or ``score_q``/``score_k``/``score_v``).
        backend: kernel passed to :func:`graph_attention`; ``"message_passing"`` runs PyG's own
            ``edge_updater`` + ``propagate`` machinery instead (the textbook form, slowest).
        strict: raise when a target node has no incoming edge (default: it outputs ``b_O``,
            i.e. zero attention output, as SDPA's safe softmax).
        edge_dim: width F of ``edge_attr``; None: the layer takes no edge features.
        edge_mode: ``"score"`` (``lin_edge: F -> H``) or ``"key_value"`` (``lin_edge: F -> C``).
        add_self_loops: GAT's rule on a ``[2, E]`` input: remove loops, append one per node;
            ``fill_value`` gives the loops' edge features (a number or ``"mean"``, ...).

    **Shapes:** ``x``: ``[N, C]`` (self-attention) or a pair ``(x_src, x_dst)`` with ``x_src``
    ``[N_src, kdim]`` (or a pair ``(x_key [N_src, kdim], x_value [N_src, vdim])``) and ``x_dst``
    ``[N_dst, C]``; ``edge_index``: ``[2, E]``, ``EdgeIndex``, a torch.sparse ``adj_t [N_dst,
    N_src]``, a ``SparseTensor`` or a :class:`~gnn_attention.graphs.TokenGraph`; ``edge_attr``:
    ``[E, F]``; ``edge_bias``: optional ``[E, H]`` (keyword). Output: ``[N_dst, C]``, or
    ``(out, (edge_index [2, E], alpha [E, H]))`` when ``return_attention_weights`` is true, alpha
    in the order of the returned edge_index. Per-edge inputs follow the order of the edges given
    (a TokenGraph's own order; a reordered graph refuses them, see ``graphs.from_edge_index``).
    """

    def __init__(self, embed_dim: int, num_heads: int, dropout: float = 0.0, bias: bool = True,
                 kdim: Optional[int] = None, vdim: Optional[int] = None, score: str = "scaled_dot",
                 backend: str = "auto", strict: bool = False, edge_dim: Optional[int] = None,
                 edge_mode: str = "score", add_self_loops: bool = False,
                 fill_value: Union[float, Tensor, str] = "mean", device=None, dtype=None):
        super().__init__(aggr="sum", node_dim=0)
        if embed_dim <= 0 or num_heads <= 0 or embed_dim % num_heads:
            raise ValueError(f"embed_dim ({embed_dim}) must be a positive multiple of "
                             f"num_heads ({num_heads})")
        if score not in SCORES:
            raise ValueError(f"score must be one of {SCORES}, got {score!r}")
        if backend not in BACKENDS + ("message_passing",):
            raise ValueError(f"backend must be one of {BACKENDS + ('message_passing',)}, "
                             f"got {backend!r}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        if edge_mode not in EDGE_MODES:
            raise ValueError(f"edge_mode must be one of {EDGE_MODES}, got {edge_mode!r}")
        if edge_dim is not None and edge_mode == "key_value" and score not in ("scaled_dot", "dot"):
            raise ValueError(f"edge_mode='key_value' adds edge features to the keys, which needs a "
                             f"dot-product score; got score={score!r} (use edge_mode='score')")
        kw = {"device": device, "dtype": dtype}
        self.edge_dim, self.edge_mode = edge_dim, edge_mode
        self.add_self_loops, self.fill_value = add_self_loops, fill_value
        self.embed_dim, self.num_heads, self.head_dim = embed_dim, num_heads, embed_dim // num_heads
        self.kdim, self.vdim = kdim or embed_dim, vdim or embed_dim
        self._qkv_same_embed_dim = self.kdim == embed_dim and self.vdim == embed_dim
        self.dropout, self.score, self.backend, self.strict = dropout, score, backend, strict
        if self._qkv_same_embed_dim:
            self.in_proj_weight = nn.Parameter(torch.empty(3 * embed_dim, embed_dim, **kw))
            self.register_parameter("q_proj_weight", None)
            self.register_parameter("k_proj_weight", None)
            self.register_parameter("v_proj_weight", None)
        else:
            self.q_proj_weight = nn.Parameter(torch.empty(embed_dim, embed_dim, **kw))
            self.k_proj_weight = nn.Parameter(torch.empty(embed_dim, self.kdim, **kw))
            self.v_proj_weight = nn.Parameter(torch.empty(embed_dim, self.vdim, **kw))
            self.register_parameter("in_proj_weight", None)
        self.in_proj_bias = nn.Parameter(torch.empty(3 * embed_dim, **kw)) if bias else None
        self.out_proj = nn.Linear(embed_dim, embed_dim, bias=bias, **kw)
        H, D = num_heads, self.head_dim
        if score == "general":
            self.score_weight = nn.Parameter(torch.empty(H, D, D, **kw))
        elif score == "additive":
            self.score_q = nn.Parameter(torch.empty(H, D, D, **kw))
            self.score_k = nn.Parameter(torch.empty(H, D, D, **kw))
            self.score_v = nn.Parameter(torch.empty(H, D, **kw))
        # edge features -> one score bias per head ("score") or added to keys and values
        width = H if edge_mode == "score" else embed_dim
        self.lin_edge = None if edge_dim is None else nn.Linear(edge_dim, width, bias=False, **kw)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Initialise as ``nn.MultiheadAttention`` does (Xavier-uniform projections, zero biases)."""
        if self._qkv_same_embed_dim:
            nn.init.xavier_uniform_(self.in_proj_weight)
        else:
            for w in (self.q_proj_weight, self.k_proj_weight, self.v_proj_weight):
                nn.init.xavier_uniform_(w)
        self.out_proj.reset_parameters()
        if self.lin_edge is not None:
            self.lin_edge.reset_parameters()
        if self.in_proj_bias is not None:
            nn.init.zeros_(self.in_proj_bias)
            nn.init.zeros_(self.out_proj.bias)
        if self.score == "general":
            # Identity per head: starts as the plain dot product, learns a bilinear form.
            with torch.no_grad():
                self.score_weight.copy_(torch.eye(self.head_dim).expand_as(self.score_weight))
        elif self.score == "additive":
            for w in (self.score_q, self.score_k):
                nn.init.xavier_uniform_(w)
            nn.init.uniform_(self.score_v, -1 / math.sqrt(self.head_dim), 1 / math.sqrt(self.head_dim))

    # -- parameters -------------------------------------------------------------------------

    def score_weights(self):
        """The score's own weights in the form :func:`graph_attention` takes (None for dot)."""
        if self.score == "general":
            return self.score_weight
        if self.score == "additive":
            return self.score_q, self.score_k, self.score_v
        return None

    def projection(self, i: int) -> Tuple[Tensor, Optional[Tensor]]:
        """``(weight [C, C_in], bias [C] or None)`` of input projection ``i`` (0 = query, 1 = key,
        2 = value), views into ``in_proj_weight`` when q, k, v share the input width."""
        if i not in (0, 1, 2):
            raise ValueError(f"projection index must be 0 (query), 1 (key) or 2 (value), got {i}")
        C = self.embed_dim
        w = self.in_proj_weight[i * C:(i + 1) * C] if self._qkv_same_embed_dim else \
            (self.q_proj_weight, self.k_proj_weight, self.v_proj_weight)[i]
        b = None if self.in_proj_bias is None else self.in_proj_bias[i * C:(i + 1) * C]
        return w, b

    def project(self, x_key: Tensor, x_value: Tensor, x_query: Tensor):
        """Input projections split into heads: ``q [N_dst, H, D]``, ``k, v [N_src, H, D]``."""
        H, D = self.num_heads, self.head_dim
        if x_key is x_value and x_key is x_query and self._qkv_same_embed_dim:
            q, k, v = F.linear(x_query, self.in_proj_weight, self.in_proj_bias).chunk(3, dim=-1)
        else:
            q, k, v = (F.linear(x, *self.projection(i)) for i, x in
                       enumerate((x_query, x_key, x_value)))
        return q.reshape(-1, H, D), k.reshape(-1, H, D), v.reshape(-1, H, D)

    def project_one(self, x: Tensor, i: int) -> Tensor:
        """One input projection split into heads: ``x [N, C_in]`` -> ``[N, H, D]`` (``i`` as in
        :meth:`projection`); e.g. only the query of a decoding step, or only the memory's keys."""
        return F.linear(x, *self.projection(i)).reshape(-1, self.num_heads, self.head_dim)

    def merge_heads(self, out: Tensor) -> Tensor:
        """The output projection: ``[N_dst, H, D]`` -> ``[N_dst, C]``."""
        return self.out_proj(out.reshape(-1, self.embed_dim))

    # -- forward ----------------------------------------------------------------------------

    def _split(self, x: NodeFeatures):
        if isinstance(x, Tensor):
            return x, x, x
        if not (isinstance(x, (tuple, list)) and len(x) == 2):
            raise TypeError("x must be a tensor [N, C] or a pair (x_src, x_dst)")
        x_src, x_dst = x
        x_key, x_value = (x_src, x_src) if isinstance(x_src, Tensor) else x_src
        return x_key, x_value, x_dst

    def _check_widths(self, x_key: Tensor, x_value: Tensor, x_query: Tensor) -> None:
        for name, t, width in (("query/target", x_query, self.embed_dim),
                               ("key/source", x_key, self.kdim), ("value/source", x_value, self.vdim)):
            if t.dim() != 2 or t.size(-1) != width:
                raise ValueError(f"{name} features must have shape [N, {width}], got {list(t.shape)}")
        if x_key.size(0) != x_value.size(0):
            raise ValueError(f"keys and values need one row per source node, got {x_key.size(0)} "
                             f"and {x_value.size(0)}")

    def forward(self, x: NodeFeatures, edge_index: EdgeInput, edge_attr: Optional[Tensor] = None,
                *, return_attention_weights: Optional[bool] = None,
                edge_bias: Optional[Tensor] = None):
        x_key, x_value, x_query = self._split(x)
        self._check_widths(x_key, x_value, x_query)
        q, k, v = self.project(x_key, x_value, x_query)
        res = self.attend(q, k, v, edge_index, edge_bias, return_attention_weights, edge_attr)
        if not return_attention_weights:
            return self.merge_heads(res)
        out, returned = res
        return self.merge_heads(out), returned

    def attend(self, q: Tensor, k: Tensor, v: Tensor, edge_index: EdgeInput,
               edge_bias: Optional[Tensor] = None, return_attention_weights: Optional[bool] = False,
               edge_attr: Optional[Tensor] = None):
        """Attention of already projected heads with this layer's score, edge features, dropout
        (in training), strictness and backend (``"message_passing"`` included); no output
        projection. For callers that touch q/k/v first (rotary embeddings, cached keys and values).

        **Shapes:** ``q [N_dst, H, D]``, ``k, v [N_src, H, D]``, ``edge_attr [E, edge_dim]``,
        ``edge_bias [E, H]`` -> ``out [N_dst, H, D]``, or ``(out, (edge_index [2, E], alpha [E, H]))``.
        """
        edges = self.edges(edge_index, edge_attr, edge_bias, k.size(0), q.size(0))
        edge_kv = None
        if edges.edge_attr is not None and self.edge_mode == "score":
            b = self.lin_edge(edges.edge_attr.to(q.dtype))  # [E, H]: one learned bias per head
            edges = replace(edges, edge_bias=b if edges.edge_bias is None else b + edges.edge_bias)
        elif edges.edge_attr is not None:
            edge_kv = (edges.edge_attr, self.lin_edge.weight.view(self.num_heads, self.head_dim, -1))
        p = self.dropout if self.training else 0.0
        scale = 1.0 if self.score == "dot" else 1.0 / math.sqrt(self.head_dim)
        out, alpha = self.attend_edges(q, k, v, edges, edge_kv, p,
                                       bool(return_attention_weights), scale)
        return (out, self.returned_edges(edges, alpha)) if return_attention_weights else out

    # -- torch interop -------------------------------------------------------------------------

    @classmethod
    def from_torch(cls, mha: nn.MultiheadAttention, **kwargs) -> "MultiheadAttentionConv":
        """A layer with ``mha``'s configuration and a copy of its weights."""
        if mha.bias_k is not None or mha.add_zero_attn:
            raise ValueError("add_bias_kv and add_zero_attn have no graph form here; build the "
                             "extra key/value node explicitly instead")
        p = next(mha.parameters())
        layer = cls(mha.embed_dim, mha.num_heads, dropout=mha.dropout,
                    bias=mha.in_proj_bias is not None, kdim=mha.kdim, vdim=mha.vdim,
                    device=p.device, dtype=p.dtype, **kwargs)
        layer.load_state_dict(mha.state_dict())
        return layer

    def to_torch(self, batch_first: bool = True) -> nn.MultiheadAttention:
        """An ``nn.MultiheadAttention`` with a copy of this layer's weights."""
        if self.score != "scaled_dot":
            raise ValueError(f"nn.MultiheadAttention has only scaled dot-product scores, this layer "
                             f"uses {self.score!r}")
        p = self.out_proj.weight
        mha = nn.MultiheadAttention(self.embed_dim, self.num_heads, dropout=self.dropout,
                                    bias=self.in_proj_bias is not None, kdim=self.kdim,
                                    vdim=self.vdim, batch_first=batch_first, device=p.device,
                                    dtype=p.dtype)
        mha.load_state_dict(self.state_dict())
        return mha

    def __repr__(self) -> str:
        extra = "" if self.score == "scaled_dot" else f", score={self.score!r}"
        return f"{self.__class__.__name__}({self.embed_dim}, heads={self.num_heads}{extra})"
