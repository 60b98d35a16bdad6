"""Graphormer's edge-path encoding (Ying et al. 2021): a per-head bias for a pair (j, i) from the
features of the edges on one shortest path j -> ... -> i.

Notation: N nodes of a mini-batch, E graph edges j -> i (``edge_index[0]`` = source j,
``edge_index[1]`` = target i), F edge-feature width, P query/key pairs (edges of an attention
graph), H heads, L the number of hop weights.

For a pair (j, i) whose chosen shortest path is (e_1, ..., e_N) (e_1 leaves j, e_N enters i):

    c^h_ji = 1 / M  sum_{n=1..M}  x_{e_n} . w^h_n,      M = min(N, L)

one learned vector w^h_n ``[F]`` per hop position n and head h. Paths longer than L keep their
first L edges (Graphormer's ``multi_hop_max_dist``); pairs (i, i), unreachable pairs and pairs in
two graphs have no edge and get c = 0.

Which shortest path (the BFS-parent rule, deterministic): the path to i is the path to the source
u of its *last* edge followed by that edge, where the last edge is the lowest-index edge u -> i
(index into ``edge_index``) with d(j, u) = d(j, i) - 1. Applied recursively, this fixes every edge
of the path; the rule depends on edge order, as any tie-break must (on a tree, where shortest paths
are unique, it does not).

Computation: one breadth-first search from all sources at once (a loop over distances, never over
pairs): every frontier pair (s, u) is joined with the out-edges of u, new pairs keep the
lowest-index candidate edge (``scatter_reduce`` amin). Paths are then read backwards for all
queried pairs at once, one parent look-up (binary search) per hop. The search keeps every
reachable pair (``sum_g N_g^2`` at most, as many as the all-pairs graph itself) and runs to the
largest distance in the batch, because a path longer than L still contributes its first L edges. The bias gathers one ``[E, H]``
table per hop position: memory ``[P, H]`` and ``[P, L]`` ids, never ``[P, L, F]``.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from gnn_attention.graph_models.encodings import _check_edges


@dataclass(frozen=True)
class EdgePaths:
    """The chosen shortest paths of P pairs: ``edges [P, L]`` ids into the graph's ``edge_index``
    (hop n in column n - 1, -1 past the path's end), ``length [P]`` = min(d, L) kept hops (0: no
    path), ``num_edges`` E (the rows ``edge_attr`` must have)."""

    edges: Tensor
    length: Tensor
    num_edges: int


def _parent_edges(edge_index: Tensor, n: int):
    """BFS from every node at once. Returns sorted keys ``s n + v`` of every reachable pair with
    d(s, v) >= 1, their distance and their parent edge (the BFS-parent rule)."""
    dev = edge_index.device
    src, dst = edge_index
    E = src.numel()
    by_src = torch.argsort(src, stable=True)  # edge ids grouped by source, ascending inside
    out_deg = torch.bincount(src, minlength=n)
    out_ptr = torch.cat([out_deg.new_zeros(1), out_deg.cumsum(0)])
    nodes = torch.arange(n, device=dev)
    fs, fu = nodes, nodes  # frontier pairs (s, u) at distance d - 1
    visited = nodes * n + nodes  # sorted
    keys, dists, parents = [], [], []
    d = 0
    while fs.numel() and E:
        d += 1
        deg = out_deg[fu]
        owner = torch.repeat_interleave(torch.arange(fs.numel(), device=dev), deg)
        first = torch.repeat_interleave(torch.cumsum(deg, 0) - deg, deg)
        e = by_src[out_ptr[fu][owner] + torch.arange(owner.numel(), device=dev) - first]
        key = fs[owner] * n + dst[e]
        new = ~torch.isin(key, visited)
        key, e = key[new], e[new]
        if key.numel() == 0:
            break
        uniq, inv = torch.unique(key, return_inverse=True)  # sorted
        parent = torch.full_like(uniq, E).scatter_reduce(0, inv, e, reduce="amin")
        keys.append(uniq)
        dists.append(torch.full_like(uniq, d))
        parents.append(parent)
        visited = torch.sort(torch.cat([visited, uniq])).values
        fs, fu = uniq // n, uniq % n
    if not keys:
        empty = torch.zeros(0, dtype=torch.long, device=dev)
        return empty, empty, empty
    key, order = torch.sort(torch.cat(keys))
    return key, torch.cat(dists)[order], torch.cat(parents)[order]


def _lookup(keys: Tensor, query: Tensor):
    """``(found [Q] bool, position [Q])`` of ``query`` in the sorted ``keys``."""
    if keys.numel() == 0:
        return torch.zeros_like(query, dtype=torch.bool), torch.zeros_like(query)
    pos = torch.searchsorted(keys, query).clamp_max(keys.numel() - 1)
    return keys[pos] == query, pos


def shortest_path_edges(edge_index: Tensor, num_nodes: int, pairs: Tensor,
                        max_hops: int) -> EdgePaths:
    r"""The first ``min(d, L)`` edges of the chosen shortest path j -> ... -> i of every pair (the
    BFS-parent rule of the module docstring), aligned with ``pairs`` whatever their order.

    **Shapes:** ``edge_index [2, E]``, ``pairs [2, P]`` (row 0 = source j, row 1 = target i)
    -> :class:`EdgePaths` with ``edges [P, L]``, ``length [P]``.
    """
    _check_edges(edge_index, num_nodes)
    if max_hops < 1:
        raise ValueError(f"max_hops must be >= 1, got {max_hops}")
    if pairs.dim() != 2 or pairs.size(0) != 2 or pairs.dtype != torch.long:
        raise ValueError(f"pairs must be int64 [2, P], got {pairs.dtype} {list(pairs.shape)}")
    if pairs.numel() and (int(pairs.min()) < 0 or int(pairs.max()) >= num_nodes):
        raise IndexError(f"pairs has nodes outside [0, {num_nodes})")
    n, L, P = num_nodes, max_hops, pairs.size(1)
    keys, dist, parent = _parent_edges(edge_index, n)
    s, cur = pairs[0], pairs[1]
    found, pos = _lookup(keys, s * n + cur)
    d = torch.where(found, dist[pos] if keys.numel() else pos, torch.zeros_like(pos))
    edges = torch.full((P, L), -1, dtype=torch.long, device=pairs.device)
    rows = torch.arange(P, device=pairs.device)
    for k in range(int(d.max()) if P else 0):  # step k reads hop d - k, backwards from i
        act = d > k
        r, c = rows[act], cur[act]
        _, p = _lookup(keys, s[act] * n + c)  # found by construction: c lies on a path from s
        e = parent[p]
        hop = d[act] - k - 1  # 0-based hop position of e
        keep = hop < L
        edges[r[keep], hop[keep]] = e[keep]
        cur = cur.clone()
        cur[r] = edge_index[0][e]
    return EdgePaths(edges, d.clamp_max(L), edge_index.size(1))


class EdgePathBias(nn.Module):
    r"""``c^h_ji = 1/M sum_{n <= M} x_{e_n} . w^h_n`` per pair and head: Graphormer's edge
    encoding as an ``edge_bias`` of the attention graph the paths were computed for.

    ``weight [L, H, F]``: one vector per hop position and head. Edge features are float; embed
    categorical ones first (Graphormer embeds and averages them per edge).

    **Shapes:** ``edge_attr [E, F]`` (aligned with the graph's ``edge_index``), ``paths`` from
    :func:`shortest_path_edges` -> ``[P, H]``.
    """

    def __init__(self, edge_dim: int, max_hops: int, num_heads: int):
        super().__init__()
        if edge_dim < 1 or max_hops < 1 or num_heads < 1:
            raise ValueError(f"edge_dim, max_hops and num_heads must be >= 1, got {edge_dim}, "
                             f"{max_hops}, {num_heads}")
        self.edge_dim, self.max_hops, self.num_heads = edge_dim, max_hops, num_heads
        self.weight = nn.Parameter(torch.empty(max_hops, num_heads, edge_dim))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.normal_(self.weight, std=0.02)

    def forward(self, edge_attr: Tensor, paths: EdgePaths) -> Tensor:
        if edge_attr.dim() != 2 or edge_attr.shape != (paths.num_edges, self.edge_dim):
            raise ValueError(f"edge_attr must have shape [E, F] = [{paths.num_edges}, "
                             f"{self.edge_dim}], got {list(edge_attr.shape)}")
        if paths.edges.size(1) > self.max_hops:
            raise ValueError(f"paths keep {paths.edges.size(1)} hops, this bias has weights for "
                             f"{self.max_hops}")
        P = paths.edges.size(0)
        out = edge_attr.new_zeros(P, self.num_heads)
        if paths.num_edges == 0:  # no edge, no path: every pair gets 0 (and nothing to gather)
            return out
        for n in range(paths.edges.size(1)):  # loop over hop positions, each one [E, H] table
            ids = paths.edges[:, n]
            valid = ids >= 0
            table = edge_attr @ self.weight[n].t()  # [E, H]: x_e . w^h_n for every edge
            out = out + table.index_select(0, ids.clamp_min(0)) * valid.unsqueeze(1)
        return out / paths.length.clamp_min(1).unsqueeze(1).to(out.dtype)

    def __repr__(self) -> str:
        return (f"EdgePathBias(edge_dim={self.edge_dim}, max_hops={self.max_hops}, "
                f"heads={self.num_heads})")
