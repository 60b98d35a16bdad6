"""Edge sets for graph attention, built from a PyG ``batch`` vector: which node may attend to which.

Notation: N nodes of a mini-batch of G graphs (``batch [N]``, sorted, as PyG collates), N_g nodes
in graph g, E edges j -> i (``edge_index[0]`` = source j / key, ``edge_index[1]`` = target i /
query), K edge types, V virtual nodes per graph, d expander degree.

Every builder returns a plain ``edge_index [2, E]`` over the batch's nodes (or, for virtual nodes,
over the enlarged node set) whose edges stay inside one graph; :func:`typed_union` merges named sets
into one :class:`~gnn_attention.graphs.TokenGraph` plus a per-edge type membership computed from
the graph's own (sorted) ``edge_index``, so attributes are aligned with the edges by construction.

    graph_edges       the input graph itself (validated: nothing crosses graphs)
    all_pairs         every (j, i) inside each graph (full attention, GraphGPS / Graphormer)
    k_hop             pairs at most k hops apart along the edges
    expander          a random near-d-regular graph per graph (Exphormer), from d/2 permutations
    virtual_nodes     V global nodes per graph, wired to every node of their graph and back
    pair_buckets      all pairs partitioned into size buckets: full attention without padding
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Optional, Tuple

import torch
from torch import Tensor

from gnn_attention.graph_models.encodings import reachable_pairs
from gnn_attention.graphs import TokenGraph, from_edge_index, full


def graph_sizes(batch: Tensor) -> Tensor:
    """``[G]`` nodes per graph of a sorted PyG ``batch`` vector (raises if it is not sorted)."""
    if batch.dim() != 1 or batch.dtype != torch.long:
        raise ValueError(f"batch must be int64 [N], got {batch.dtype} {list(batch.shape)}")
    if batch.numel() and (bool((batch[1:] < batch[:-1]).any()) or int(batch[0]) < 0):
        raise ValueError("batch must be sorted and non-negative (nodes of graph g contiguous), as "
                         "PyG's collate produces")
    return torch.bincount(batch) if batch.numel() else batch.new_zeros(0)


def _ptr(sizes: Tensor) -> Tensor:
    return torch.cat([sizes.new_zeros(1), sizes.cumsum(0)])


def graph_edges(edge_index: Tensor, batch: Tensor) -> Tensor:
    """The input graph's edges, checked to stay inside their graph. **Shapes:** ``[2, E]``."""
    graph_sizes(batch)
    if edge_index.numel() and bool((batch[edge_index[0]] != batch[edge_index[1]]).any()):
        raise ValueError("edge_index has an edge between two graphs of the batch")
    return edge_index


def all_pairs(batch: Tensor, self_loops: bool = True) -> Tensor:
    """Every pair (j, i) of nodes of the same graph: ``sum_g N_g^2`` edges (minus N without self
    loops), sorted by (target, source). **Shapes:** ``batch [N]`` -> ``[2, E]``."""
    sizes = graph_sizes(batch)
    ptr = _ptr(sizes)
    count = sizes[batch]  # in-degree of every target: its graph's size
    dst = torch.repeat_interleave(torch.arange(batch.numel(), device=batch.device), count)
    first = torch.repeat_interleave(_ptr(count)[:-1], count)
    src = ptr[batch][dst] + torch.arange(dst.numel(), device=batch.device) - first
    ei = torch.stack([src, dst])
    return ei if self_loops else ei[:, ei[0] != ei[1]]


def k_hop(edge_index: Tensor, batch: Tensor, k: int, self_loops: bool = True) -> Tensor:
    """Pairs (j, i) joined by a path j -> ... -> i of at most k edges (k = 1: the graph, plus self
    loops). **Shapes:** ``[2, E]`` -> ``[2, E_k]``."""
    graph_edges(edge_index, batch)
    pairs, dist = reachable_pairs(edge_index, batch.numel(), k)
    return pairs if self_loops else pairs[:, dist > 0]


def expander(batch: Tensor, degree: int, generator: torch.Generator | None = None) -> Tensor:
    r"""A random expander per graph, as Exphormer builds it: the union of d/2 random permutations
    :math:`\sigma` of each graph's nodes, each giving edges ``i -> \sigma(i)`` and ``\sigma(i) ->
    i``. Self loops and repeated edges are dropped, so a node has at most d in-edges (exactly d for
    most nodes of a large graph). Random permutations of a graph's nodes are its nodes sorted by
    random keys: all graphs at once, one sort.

    **Shapes:** ``batch [N]`` -> ``[2, E]`` with ``E <= d N``, symmetric.
    """
    if degree < 2 or degree % 2:
        raise ValueError(f"degree must be an even number >= 2, got {degree}")
    graph_sizes(batch)
    n, dev = batch.numel(), batch.device
    nodes = torch.arange(n, device=dev)
    edges = []
    for _ in range(degree // 2):
        key = torch.rand(n, generator=generator, dtype=torch.float64).to(dev) + batch.double()
        sigma = torch.argsort(key)  # sigma[p] is a node of the same graph as node p
        edges += [torch.stack([nodes, sigma]), torch.stack([sigma, nodes])]
    ei = torch.cat(edges, 1)
    ei = ei[:, ei[0] != ei[1]]
    return _unique(ei, n)


def _unique(ei: Tensor, n: int) -> Tensor:
    key = torch.unique(ei[1] * max(n, 1) + ei[0])  # sorted by (target, source)
    return torch.stack([key % max(n, 1), key // max(n, 1)])


@dataclass(frozen=True)
class VirtualNodes:
    """Where V virtual nodes per graph sit once appended to each graph's block of nodes.

    ``batch [N + G V]``: the enlarged batch vector; ``real [N]``: the new index of each original
    node; ``virtual [G, V]``: the new indices of each graph's virtual nodes; ``edge_index [2, E_v]``:
    every real node -> its graph's virtual nodes, virtual -> every real node, and virtual ->
    virtual (self loops included) of the same graph.
    """

    batch: Tensor
    real: Tensor
    virtual: Tensor
    edge_index: Tensor

    def lift(self, edge_index: Tensor) -> Tensor:
        """Edges between original nodes, renumbered into the enlarged node set."""
        return self.real[edge_index]


def virtual_nodes(batch: Tensor, num_virtual: int = 1) -> VirtualNodes:
    """Append ``num_virtual`` global nodes to every graph (after its own nodes, so each graph
    stays one contiguous block) and wire them to all nodes of their graph in both directions."""
    if num_virtual < 1:
        raise ValueError(f"num_virtual must be >= 1, got {num_virtual}")
    sizes = graph_sizes(batch)
    G, V, dev = sizes.numel(), num_virtual, batch.device
    new_ptr = _ptr(sizes + V)
    real = torch.arange(batch.numel(), device=dev) + V * batch
    virtual = (new_ptr[1:] - V).view(G, 1) + torch.arange(V, device=dev).view(1, V)
    new_batch = torch.repeat_interleave(torch.arange(G, device=dev), sizes + V)
    vb = virtual[batch]  # [N, V]: the virtual nodes of each real node's graph
    r = real.view(-1, 1).expand_as(vb)
    vv_src = virtual.view(G, V, 1).expand(G, V, V).flatten()
    vv_dst = virtual.view(G, 1, V).expand(G, V, V).flatten()
    src = torch.cat([r.flatten(), vb.flatten(), vv_src])
    dst = torch.cat([vb.flatten(), r.flatten(), vv_dst])
    return VirtualNodes(new_batch, real, virtual, _unique(torch.stack([src, dst]), new_batch.numel()))


@dataclass(frozen=True)
class TypedGraph:
    """A union of named edge sets as one attention graph.

    ``graph``: the :class:`TokenGraph` (edges sorted by (target, source), one per pair);
    ``edge_type [E, K]`` bool: whether edge e belongs to set k (an edge may be in several: a graph
    edge that is also an expander edge), aligned with ``graph.edge_index``; ``names``: the K names.
    """

    graph: TokenGraph
    edge_type: Tensor
    names: Tuple[str, ...]


def typed_union(edge_sets: Dict[str, Tensor], batch: Tensor) -> TypedGraph:
    """Merge named edge sets over the nodes of ``batch`` into one graph with a type membership per
    edge. Raises if any edge crosses two graphs (the batch is a disjoint union).

    **Shapes:** each set ``[2, E_k]``, ``batch [N]`` -> a graph with ``E <= sum_k E_k`` edges and
    ``edge_type [E, K]``.
    """
    if not edge_sets:
        raise ValueError("typed_union needs at least one edge set")
    sizes, n = graph_sizes(batch), batch.numel()
    for name, ei in edge_sets.items():
        if ei.dim() != 2 or ei.size(0) != 2:
            raise ValueError(f"edge set {name!r} must have shape [2, E], got {list(ei.shape)}")
    union = _unique(torch.cat(list(edge_sets.values()), 1), n)
    graph = from_edge_index(union, sizes.cpu(), sizes.cpu(), device=batch.device)
    key = graph.edge_index[1] * max(n, 1) + graph.edge_index[0]  # after the builder's own sort
    member = [torch.isin(key, ei[1] * max(n, 1) + ei[0]) for ei in edge_sets.values()]
    return TypedGraph(graph, torch.stack(member, 1), tuple(edge_sets))


@dataclass(frozen=True)
class PairBuckets:
    """:func:`all_pairs` executed without padding the batch: graphs sorted by size and cut into
    buckets of similar sizes, each bucket one contiguous slice of the sorted nodes.

    ``perm [N]``: the node at each sorted position; ``inv [N]``: the sorted position of each node;
    ``parts``: ``(start, stop, graph)`` per bucket, ``graph`` the complete graph (``full``) of the
    bucket's graphs over sorted positions ``start:stop``.
    """

    perm: Tensor
    inv: Tensor
    parts: Tuple[Tuple[int, int, TokenGraph], ...]


def pair_buckets(batch: Tensor, max_padding: float = 0.1,
                 max_pairs: Optional[int] = None) -> PairBuckets:
    r"""Partition the all-pairs edge set into size buckets: a bucket of c graphs with largest size
    m and n nodes in all is attended as one padded ``[c, m]`` block, and buckets are cut so that
    :math:`c m \le (1 + \text{max\_padding}) n`. ``max_padding=0`` groups only graphs of equal size
    (no padding at all); ``float("inf")`` is one bucket (the whole batch padded, as
    ``to_dense_batch`` does). ``max_pairs`` also cuts a bucket before its padded block ``c m^2``
    exceeds it (a single larger graph still gets its own bucket), which bounds the per-pair memory
    of one bucket (see ``recompute`` in :func:`~.gps.all_pairs_attention`). Preprocessing: one sort
    of the G sizes and a loop over graphs.
    """
    if max_padding < 0:
        raise ValueError(f"max_padding must be >= 0, got {max_padding}")
    if max_pairs is not None and max_pairs < 1:
        raise ValueError(f"max_pairs must be >= 1, got {max_pairs}")
    cap = float("inf") if max_pairs is None else max_pairs
    sizes = graph_sizes(batch).cpu()
    order = torch.argsort(sizes, stable=True)
    sorted_sizes = sizes[order]
    ptr, sorted_ptr = _ptr(sizes), _ptr(sorted_sizes)
    seg = torch.repeat_interleave(torch.arange(sizes.numel()), sorted_sizes)
    perm = ptr[order][seg] + torch.arange(seg.numel()) - sorted_ptr[seg]
    inv = torch.empty_like(perm)
    inv[perm] = torch.arange(perm.numel())
    cuts, count, total = [0], 0, 0
    for g, m in enumerate(sorted_sizes.tolist()):
        if count and ((count + 1) * m > (1 + max_padding) * (total + m)
                      or (count + 1) * m * m > cap):
            cuts.append(g)
            count, total = 0, 0
        count, total = count + 1, total + m
    cuts.append(sizes.numel())
    dev = batch.device
    parts = tuple((int(sorted_ptr[a]), int(sorted_ptr[b]), full(sorted_sizes[a:b], device=dev))
                  for a, b in zip(cuts[:-1], cuts[1:]) if b > a)
    return PairBuckets(perm.to(dev), inv.to(dev), parts)
