"""``GPSLayer``: the GraphGPS layer (Rampasek et al. 2022) as two edge programs, without padding.

Notation: N nodes of a mini-batch of G graphs (``batch [N]``), E graph edges j -> i, C channels,
H heads, D = C / H.

    h_local  = Norm1(x + Dropout(MPNN(x, edge_index)))          edges: the input graph
    h_global = Norm2(x + Dropout(MHA(x)))                       edges: all pairs of each graph
    out      = Norm3(h + MLP(h)),   h = h_local + h_global

PyG's ``GPSConv`` computes the global branch with ``to_dense_batch`` and ``nn.MultiheadAttention``
on ``[G, N_max, C]``: every graph padded to the largest one. Here the global branch is attention on
the all-pairs edge set, executed bucket by bucket (:func:`~.edge_sets.pair_buckets`): graphs sorted
by size, each bucket of similar sizes one dense SDPA call over a contiguous slice of the sorted
nodes. The result is the same function; only the padding is gone.
"""
from __future__ import annotations

import copy
import inspect
from typing import Any, Dict, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint
from torch_geometric.nn.resolver import activation_resolver, normalization_resolver

from gnn_attention.attention import MultiheadAttentionConv
from gnn_attention.graph_models.edge_sets import PairBuckets, pair_buckets
from gnn_attention.graphs import TokenGraph


def all_pairs_attention(attn: MultiheadAttentionConv, x: Tensor, buckets: PairBuckets,
                        recompute: bool = False) -> Tensor:
    r"""Self-attention of every node over all nodes of its graph, bucket by bucket:
    ``out_i = W_O \sum_{j \in g(i)} \alpha_{ij} v_j``. Nodes are permuted once into size order, so
    each bucket's queries, keys and values are views (no copy) handed to ``attn.attend``.

    ``recompute=True`` keeps no per-pair tensor of any bucket for the backward pass: each bucket's
    attention is recomputed there (``torch.utils.checkpoint``, with the same dropout mask, so the
    gradients are the same), and only one bucket's ``[c, H, m, m]`` weights exist at a time.

    **Shapes:** ``x [N, C]`` -> ``[N, C]``.
    """
    xs = x.index_select(0, buckets.perm)
    q, k, v = attn.project(xs, xs, xs)
    if recompute and torch.is_grad_enabled():
        outs = [checkpoint(attn.attend, q[a:b], k[a:b], v[a:b], graph, use_reentrant=False)
                for a, b, graph in buckets.parts]
    else:
        outs = [attn.attend(q[a:b], k[a:b], v[a:b], graph) for a, b, graph in buckets.parts]
    out = torch.cat(outs) if len(outs) != 1 else outs[0]
    return attn.merge_heads(out).index_select(0, buckets.inv)


class GPSLayer(nn.Module):
    r"""PyG's ``GPSConv`` (``attn_type="multihead"``) with the global attention on edge sets.

    Edge program: the local branch runs ``conv`` on the input graph's edges; the global branch
    attends over all pairs of each graph (default), or over ``attn_graph`` when given (e.g. an
    expander plus virtual nodes, or BigBird-style sets), with an optional per-edge ``edge_bias``.

    Args mirror ``GPSConv``: ``channels``, ``conv`` (any MessagePassing or None), ``heads``,
    ``dropout`` (on the branch outputs and in the MLP), ``act``/``act_kwargs``, ``norm``/
    ``norm_kwargs`` (resolved by PyG, so ``"batch_norm"``, ``"layer_norm"``, ``"graph_norm"``...
    behave as there); ``attn_dropout`` is ``nn.MultiheadAttention``'s dropout (GPSConv's
    ``attn_kwargs={"dropout": p}``); ``max_padding`` and ``max_pairs`` bound the buckets
    (:func:`pair_buckets`); ``recompute`` trades time for memory in the global branch
    (:func:`all_pairs_attention`).

    **Shapes:** ``x [N, C]``, ``edge_index [2, E]``, ``batch [N]`` (None: one graph) -> ``[N, C]``;
    ``attn_graph`` a :class:`TokenGraph` over the N nodes with ``edge_bias [E_attn, H]``.
    """

    def __init__(self, channels: int, conv: Optional[nn.Module], heads: int = 1,
                 dropout: float = 0.0, act: str = "relu", act_kwargs: Optional[Dict[str, Any]] = None,
                 norm: Optional[str] = "batch_norm", norm_kwargs: Optional[Dict[str, Any]] = None,
                 attn_dropout: float = 0.0, max_padding: float = 0.1,
                 max_pairs: Optional[int] = None, recompute: bool = False):
        super().__init__()
        self.channels, self.conv, self.heads, self.dropout = channels, conv, heads, dropout
        self.max_padding, self.max_pairs, self.recompute = max_padding, max_pairs, recompute
        self.attn = MultiheadAttentionConv(channels, heads, dropout=attn_dropout)
        self.mlp = nn.Sequential(nn.Linear(channels, 2 * channels),
                                 activation_resolver(act, **(act_kwargs or {})), nn.Dropout(dropout),
                                 nn.Linear(2 * channels, channels), nn.Dropout(dropout))
        norm_kwargs = norm_kwargs or {}
        self.norm1 = normalization_resolver(norm, channels, **norm_kwargs)
        self.norm2 = normalization_resolver(norm, channels, **norm_kwargs)
        self.norm3 = normalization_resolver(norm, channels, **norm_kwargs)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        if self.conv is not None:
            self.conv.reset_parameters()
        self.attn.reset_parameters()
        for m in self.mlp:
            if isinstance(m, nn.Linear):
                m.reset_parameters()
        for norm in (self.norm1, self.norm2, self.norm3):
            if norm is not None:
                norm.reset_parameters()

    def _norm(self, norm: Optional[nn.Module], h: Tensor, batch: Tensor) -> Tensor:
        if norm is None:
            return h
        # PyG norms that pool per graph (GraphNorm, InstanceNorm...) take the batch vector.
        return norm(h, batch=batch) if _takes_batch(norm) else norm(h)

    def forward(self, x: Tensor, edge_index: Tensor, batch: Optional[Tensor] = None, *,
                buckets: Optional[PairBuckets] = None, attn_graph: Optional[TokenGraph] = None,
                edge_bias: Optional[Tensor] = None, **kwargs) -> Tensor:
        """``kwargs`` go to ``conv`` (e.g. ``edge_attr``). ``buckets`` (from :func:`pair_buckets`)
        can be built once per batch and shared by every layer; it is built here otherwise."""
        if batch is None:
            batch = x.new_zeros(x.size(0), dtype=torch.long)
        hs = []
        if self.conv is not None:
            h = F.dropout(self.conv(x, edge_index, **kwargs), p=self.dropout, training=self.training)
            hs.append(self._norm(self.norm1, h + x, batch))
        if attn_graph is not None:
            h = self.attn(x, attn_graph, edge_bias=edge_bias)
        else:
            if edge_bias is not None:
                raise ValueError("edge_bias needs the attn_graph its edges belong to")
            buckets = buckets or pair_buckets(batch, self.max_padding, self.max_pairs)
            h = all_pairs_attention(self.attn, x, buckets, self.recompute)
        h = F.dropout(h, p=self.dropout, training=self.training)
        hs.append(self._norm(self.norm2, h + x, batch))
        out = sum(hs)
        return self._norm(self.norm3, out + self.mlp(out), batch)

    @classmethod
    def from_pyg(cls, gps, **kwargs) -> "GPSLayer":
        """A layer computing what ``gps`` (a ``torch_geometric.nn.GPSConv``) computes, with copies
        of its local conv, attention weights, MLP and norms; ``kwargs``: ``max_padding``,
        ``max_pairs``, ``recompute``."""
        if not isinstance(gps.attn, nn.MultiheadAttention):
            raise ValueError(f"only attn_type='multihead' has an edge program here, got "
                             f"{gps.attn_type!r}")
        layer = cls(gps.channels, None, heads=gps.heads, dropout=gps.dropout, norm=None,
                    attn_dropout=gps.attn.dropout, **kwargs)
        layer.conv = copy.deepcopy(gps.conv)
        layer.attn.load_state_dict(gps.attn.state_dict())
        layer.mlp = copy.deepcopy(gps.mlp)
        layer.norm1, layer.norm2, layer.norm3 = (copy.deepcopy(n) for n in
                                                 (gps.norm1, gps.norm2, gps.norm3))
        p = next(gps.attn.parameters())
        return layer.to(device=p.device, dtype=p.dtype).train(gps.training)

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}({self.channels}, conv={self.conv}, heads={self.heads})"


def _takes_batch(norm: nn.Module) -> bool:
    return "batch" in inspect.signature(norm.forward).parameters
