"""Interventions on graph models: a sequence of attention layers on node features, walked layer by
layer with edits on their attention edges and a cache of what every edge carried.

Notation: N nodes (a PyG mini-batch of G graphs is one disjoint union, ``batch [N]`` sorted),
C channels, E edges j -> i of a site's attention graph, H heads, D = C / H. A site is
``("graph", l, "self")``: the attention of entry ``l`` of the layer sequence over its own edge set.

Entries of the sequence and how the runner walks each (reading only their submodules, as
:mod:`gnn_attention.interpret.runner` does for Transformer layers; nothing is stored on a module):

    MultiheadAttentionConv  x = Attn(x; plan.graph, plan.edge_bias)
    GraphormerLayer         h = x + Drop(Attn(LN1(x); all pairs, SpatialBias(spd)))
                            x = h + FFN(LN2(h))
    ExphormerLayer          the same pre-norm block on x' = (x, virtual states) over graph ∪
                            expander ∪ virtual ∪ self edges, bias = edge_type @ type_bias; the
                            virtual states are threaded from one Exphormer layer to the next
    GPSLayer                x = Norm3(h + MLP(h)), h = Norm1(x + Conv(x)) + Norm2(x + Attn(x));
                            the site is the global attention (all pairs of each graph, or
                            ``plan.attn_graph``); the local conv runs untouched (not a site)
    any other module        x = module(x)   (Linear, activations, LayerNorm, Dropout in eval)

The per-edge bias of a site (spatial, edge-type or the caller's) is computed from the site's own
graph, so edits, biases and records are aligned with that graph's ``edge_index``. An untouched
site (no edit, not recording) runs the layer's own kernel, so an unedited run equals the layers'
own forward bitwise; an edited or recorded site runs the readable
:func:`~gnn_attention.interpret.cache.edited_attention` (equal to the kernels to rounding).
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import torch
from torch import Tensor, nn

from gnn_attention.attention import MultiheadAttentionConv
from gnn_attention.graph_models import (
    ExphormerLayer,
    GPSLayer,
    GraphormerLayer,
    all_pairs_attention,
)
from gnn_attention.graph_models.edge_sets import graph_sizes, pair_buckets
from gnn_attention.graph_models.exphormer import ExphormerInputs
from gnn_attention.graph_models.graphormer import GraphormerInputs
from gnn_attention.graphs import TokenGraph, full
from gnn_attention.interpret.edits import Edits, Site, check_edits
from gnn_attention.interpret.runner import RunResult, _Pass, attend_site

STACK = "graph"
ATTENTION_LAYERS = (MultiheadAttentionConv, GraphormerLayer, ExphormerLayer, GPSLayer)


@dataclass(frozen=True)
class GraphPlan:
    """The inputs of a layer sequence, built by :func:`prepare_graph` (which checks them).

    Attributes:
        layers: the entries walked in order (in eval mode, read only).
        x: node features ``[N, C_in]`` entering the first entry.
        graph, edge_bias: the attention graph of the ``MultiheadAttentionConv`` entries over the N
            nodes and its optional ``[E, H]`` bias (in ``graph.edge_index`` order).
        edge_index, batch, conv_kwargs: GPS inputs: the local conv's edges ``[2, E_in]`` and extra
            arguments (e.g. ``edge_attr``), the sorted ``batch [N]``.
        attn_graph, attn_bias: GPS's global edge set and bias; None: all pairs of each graph
            (``pairs``, built once here for the readable path).
        graphormer, exphormer: the edge programs of those layers, built once per batch.
    """

    layers: Tuple[nn.Module, ...]
    x: Tensor
    graph: Optional[TokenGraph] = None
    edge_bias: Optional[Tensor] = None
    edge_index: Optional[Tensor] = None
    batch: Optional[Tensor] = None
    conv_kwargs: Mapping = field(default_factory=dict)
    attn_graph: Optional[TokenGraph] = None
    attn_bias: Optional[Tensor] = None
    graphormer: Optional[GraphormerInputs] = None
    exphormer: Optional[ExphormerInputs] = None
    pairs: Optional[TokenGraph] = None


def prepare_graph(layers: Sequence[nn.Module], x: Tensor, *, graph: Optional[TokenGraph] = None,
                  edge_bias: Optional[Tensor] = None, edge_index: Optional[Tensor] = None,
                  batch: Optional[Tensor] = None, attn_graph: Optional[TokenGraph] = None,
                  attn_bias: Optional[Tensor] = None,
                  graphormer: Optional[GraphormerInputs] = None,
                  exphormer: Optional[ExphormerInputs] = None, **conv_kwargs) -> GraphPlan:
    """A :class:`GraphPlan`; raises (before any computation) when an entry is in training mode
    or lacks the inputs its kind needs. ``conv_kwargs`` go to every GPS local conv."""
    layers = tuple(layers)
    if any(m.training for m in layers):
        raise ValueError("interventions run in eval mode (no dropout): call model.eval() first")
    kinds = {type(m) for m in layers if isinstance(m, ATTENTION_LAYERS)}
    need = [(MultiheadAttentionConv, graph, "graph"), (GraphormerLayer, graphormer, "graphormer"),
            (ExphormerLayer, exphormer, "exphormer"), (GPSLayer, edge_index, "edge_index")]
    for kind, value, name in need:
        if any(issubclass(k, kind) for k in kinds) and value is None:
            raise ValueError(f"a {kind.__name__} entry needs {name}=...")
    if attn_bias is not None and attn_graph is None:
        raise ValueError("attn_bias needs the attn_graph its edges belong to")
    for m in layers:
        _check_attention(m)
    pairs = None
    if any(isinstance(m, GPSLayer) for m in layers):
        if batch is None:
            batch = x.new_zeros(x.size(0), dtype=torch.long)
        if batch.numel() > 1 and bool((batch[1:] < batch[:-1]).any()):
            raise ValueError("batch must be sorted (PyG's mini-batch order)")
        if attn_graph is None:
            pairs = full(graph_sizes(batch).cpu(), device=x.device)
    return GraphPlan(layers, x, graph, edge_bias, edge_index, batch, dict(conv_kwargs), attn_graph,
                     attn_bias, graphormer, exphormer, pairs)


def _check_attention(m: nn.Module) -> None:
    """The readable path has no edge features, adds no self loops and knows no per-type key/value
    offsets (an Exphormer ``typed_kv``): a layer with any of them would be edited wrongly, so it is
    refused."""
    attn = _attention(m)
    if attn is None:
        return
    if getattr(attn, "edge_dim", None) is not None or getattr(attn, "add_self_loops", False):
        raise ValueError(f"{type(m).__name__}: interventions do not support attention layers with "
                         f"edge features or added self loops")
    if getattr(m, "typed_kv", None) is not None:
        raise ValueError(f"{type(m).__name__}: interventions do not support per-type key/value "
                         f"offsets (typed_kv)")


def _attention(m: nn.Module) -> Optional[MultiheadAttentionConv]:
    if isinstance(m, MultiheadAttentionConv):
        return m
    return m.attn if isinstance(m, ATTENTION_LAYERS) else None


def site_graph(plan: GraphPlan, m: nn.Module) -> TokenGraph:
    """The attention graph of entry ``m`` (the graph its edits and records are aligned with)."""
    if isinstance(m, MultiheadAttentionConv):
        return plan.graph
    if isinstance(m, GraphormerLayer):
        return plan.graphormer.graph
    if isinstance(m, ExphormerLayer):
        return plan.exphormer.typed.graph
    return plan.attn_graph if plan.attn_graph is not None else plan.pairs


def graph_sites(plan: GraphPlan) -> Dict[Site, Tuple[TokenGraph, int, int]]:
    """Every attention site of the sequence: ``("graph", l, "self") -> (graph, H, D)``."""
    out = {}
    for i, m in enumerate(plan.layers):
        attn = _attention(m)
        if attn is not None:
            out[(STACK, i, "self")] = (site_graph(plan, m), attn.num_heads, attn.head_dim)
    return out


def execute_graph(plan: GraphPlan, edits: Optional[Edits] = None,
                  record: bool = False) -> RunResult:
    """Walk the planned sequence with ``edits`` (checked first); ``record`` caches every site.

    Returns a :class:`~gnn_attention.interpret.runner.RunResult`: ``output`` the last entry's
    node states ``[N, C_out]``, ``records`` site -> record, ``hidden["graph"]`` the input then
    the states after each entry, ``hidden["virtual"]`` the virtual states after each Exphormer
    entry (``[G V, C]``).
    """
    check_edits(edits, graph_sites(plan))
    ctx = _Pass(dict(edits or {}), record, {})
    x, virtual = plan.x, None
    hidden: Dict[str, List[Tensor]] = {STACK: [x], "virtual": []}
    for i, m in enumerate(plan.layers):
        site = (STACK, i, "self")
        if isinstance(m, MultiheadAttentionConv):
            x = _attend(m, x, plan.graph, plan.edge_bias, site, ctx)
        elif isinstance(m, GraphormerLayer):
            x = _graphormer(m, x, plan, site, ctx)
        elif isinstance(m, ExphormerLayer):
            x, virtual = _exphormer(m, x, virtual, plan, site, ctx)
            hidden["virtual"].append(virtual)
        elif isinstance(m, GPSLayer):
            x = _gps(m, x, plan, site, ctx)
        else:
            x = m(x)
        hidden[STACK].append(x)
    return RunResult(x, ctx.records, hidden)


def run_graph(layers: Sequence[nn.Module], x: Tensor, *, edits: Optional[Edits] = None,
              record: bool = False, **inputs) -> RunResult:
    """``execute_graph(prepare_graph(layers, x, **inputs), edits, record)``."""
    return execute_graph(prepare_graph(layers, x, **inputs), edits, record)


# ---------------------------------------------------------------------------------------------
# The walk


def _attend(attn: MultiheadAttentionConv, h: Tensor, graph: TokenGraph, bias: Optional[Tensor],
            site: Site, ctx: _Pass) -> Tensor:
    """Self-attention of ``h`` over ``graph``: the layer's kernel when the site is untouched, the
    readable edited path otherwise; then the output projection."""
    q, k, v = attn.project(h, h, h)
    return attend_site(attn, q, k, v, graph, bias, site, ctx)


def _graphormer(m: GraphormerLayer, x: Tensor, plan: GraphPlan, site: Site, ctx: _Pass) -> Tensor:
    g_in = plan.graphormer
    if g_in.graph.num_dst != x.size(0):
        raise ValueError(f"graphormer inputs were built for {g_in.graph.num_dst} nodes, x has "
                         f"{x.size(0)}")
    bias = m.spatial(g_in.distance)
    h = x + m.dropout(_attend(m.attn, m.norm1(x), g_in.graph, bias, site, ctx))
    return h + m.ffn(m.norm2(h))


def _exphormer(m: ExphormerLayer, x: Tensor, virtual: Optional[Tensor], plan: GraphPlan,
               site: Site, ctx: _Pass) -> Tuple[Tensor, Tensor]:
    vn, typed = plan.exphormer.virtual, plan.exphormer.typed
    G, V = vn.virtual.shape
    if V != m.num_virtual or vn.real.numel() != x.size(0):
        raise ValueError(f"exphormer inputs have {V} virtual nodes per graph and "
                         f"{vn.real.numel()} real nodes; the layer has {m.num_virtual}, x has "
                         f"{x.size(0)} rows")
    if virtual is None:
        virtual = m.virtual_init.repeat(G, 1)
    xa = x.new_empty(vn.batch.numel(), x.size(1))
    xa = xa.index_copy(0, vn.real, x).index_copy(0, vn.virtual.flatten(), virtual)
    bias = typed.edge_type.to(x.dtype) @ m.type_bias
    h = xa + m.dropout(_attend(m.attn, m.norm1(xa), typed.graph, bias, site, ctx))
    h = h + m.ffn(m.norm2(h))
    return h.index_select(0, vn.real), h.index_select(0, vn.virtual.flatten())


def _gps(m: GPSLayer, x: Tensor, plan: GraphPlan, site: Site, ctx: _Pass) -> Tensor:
    """GPS's eval-mode forward (dropout is the identity) with its global attention as the site."""
    batch, hs = plan.batch, []
    if m.conv is not None:
        hs.append(_norm(m.norm1, m.conv(x, plan.edge_index, **plan.conv_kwargs) + x, batch))
    touched = site in ctx.edits or ctx.record
    if plan.attn_graph is not None:
        h = _attend(m.attn, x, plan.attn_graph, plan.attn_bias, site, ctx)
    elif touched:  # the readable path on all pairs of each graph, in the nodes' own order
        h = _attend(m.attn, x, plan.pairs, None, site, ctx)
    else:  # the layer's own bucketed kernel: bitwise what GPSLayer.forward computes
        h = all_pairs_attention(m.attn, x, pair_buckets(batch, m.max_padding, m.max_pairs),
                                m.recompute)
    hs.append(_norm(m.norm2, h + x, batch))
    out = sum(hs)
    return _norm(m.norm3, out + m.mlp(out), batch)


def _norm(norm: Optional[nn.Module], h: Tensor, batch: Tensor) -> Tensor:
    """GPS's norm rule: none, a PyG norm that pools per graph (takes ``batch``), or a plain one."""
    if norm is None:
        return h
    takes_batch = "batch" in inspect.signature(norm.forward).parameters
    return norm(h, batch=batch) if takes_batch else norm(h)
