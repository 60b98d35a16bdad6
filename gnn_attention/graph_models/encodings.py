"""Structural encodings of graphs: node attributes (degrees, random walks, Laplacian eigenvectors)
and edge attributes (shortest-path distances, Graphormer's spatial bias).

Notation: N nodes of a PyG mini-batch (a disjoint union of G graphs, ``batch [N]`` the graph of
each node, sorted), E graph edges j -> i (``edge_index[0]`` = source j, ``edge_index[1]`` = target
i), P query/key pairs (the edges of an attention graph), H heads, K encoding width, L = max distance.

Everything is computed for the whole batch at once on the batch's device: shortest paths by
frontier expansion (one sparse product per distance, no per-pair Python loop), random-walk
return probabilities by sparse matrix powers, Laplacian eigenvectors by one batched ``eigh`` over
block-padded Laplacians. Edges never cross graphs, so block structure is kept by construction.
"""
from __future__ import annotations

import warnings
from typing import Tuple

import torch
from torch import Tensor, nn

# Padded rows of the batched Laplacian get this diagonal: the normalised Laplacian's spectrum lies
# in [0, 2], so the padding's eigenvalues sort after every real one and never mix with them.
_PAD_EIGENVALUE = 3.0
# Entries below this are rounding noise of eigh (float64), never the entry that fixes the sign.
_SIGN_TOL = 1e-6


def _adjacency(edge_index: Tensor, num_nodes: int, values: Tensor | None = None) -> Tensor:
    """Sparse ``[N, N]`` with ``A[j, i] = 1`` (or ``values``) for each edge j -> i, coalesced."""
    if values is None:
        values = torch.ones(edge_index.size(1), device=edge_index.device)
    return torch.sparse_coo_tensor(edge_index, values, (num_nodes, num_nodes),
                                   check_invariants=False).coalesce()  # indices checked once above


def _sparse_mm(a: Tensor, b: Tensor) -> Tensor:
    """Sparse @ sparse, coalesced. torch runs it through CSR and warns that CSR is beta at every
    first call; the product is what is documented, so that warning is not the caller's concern."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
        return torch.sparse.mm(a, b).coalesce()


def _check_edges(edge_index: Tensor, num_nodes: int) -> None:
    if edge_index.dim() != 2 or edge_index.size(0) != 2 or edge_index.dtype != torch.long:
        raise ValueError(f"edge_index must be int64 [2, E], got {edge_index.dtype} "
                         f"{list(edge_index.shape)}")
    if edge_index.numel() and (int(edge_index.min()) < 0 or int(edge_index.max()) >= num_nodes):
        raise IndexError(f"edge_index has nodes outside [0, {num_nodes})")


def reachable_pairs(edge_index: Tensor, num_nodes: int, max_distance: int) -> Tuple[Tensor, Tensor]:
    r"""Every pair (j, i) joined by a path j -> ... -> i of at most L edges, with its hop distance.

    Breadth-first search from all sources at once: the frontier ``F_d`` (pairs at distance exactly
    d, a sparse 0/1 matrix) advances by one sparse product, ``F_{d+1} = (F_d A) \setminus
    \text{visited}``; the loop runs over distances (at most L), never over pairs. No edge crosses
    graphs, so no pair does either.

    **Shapes:** ``edge_index [2, E]`` -> ``(pairs [2, P], distance [P])``, sorted by
    ``j N + i`` (distance 0 for the N pairs (i, i)).
    """
    _check_edges(edge_index, num_nodes)
    if max_distance < 0:
        raise ValueError(f"max_distance must be >= 0, got {max_distance}")
    dev, n = edge_index.device, num_nodes
    adj = _adjacency(edge_index, n)
    nodes = torch.arange(n, device=dev)
    keys, dists = [nodes * n + nodes], [torch.zeros(n, dtype=torch.long, device=dev)]
    frontier = _adjacency(torch.stack([nodes, nodes]), n)
    visited = keys[0]  # sorted: node * (n + 1)
    for d in range(1, max_distance + 1):
        step = _sparse_mm(frontier, adj).indices()
        key = step[0] * n + step[1]  # coalesced: sorted and unique
        new = ~torch.isin(key, visited, assume_unique=True)
        key, step = key[new], step[:, new]
        if key.numel() == 0:  # every reachable pair is found: later frontiers are empty too
            break
        keys.append(key)
        dists.append(torch.full_like(key, d))
        visited = torch.sort(torch.cat([visited, key])).values
        frontier = _adjacency(step, n)
    key, order = torch.sort(torch.cat(keys))
    return torch.stack([key // max(n, 1), key % max(n, 1)]), torch.cat(dists)[order]


def shortest_path_distance(edge_index: Tensor, num_nodes: int, pairs: Tensor,
                           max_distance: int) -> Tensor:
    r"""Hop distance ``d(j, i)`` along the edges (j -> ... -> i) for every pair, capped at L + 1.

    Returns ``d`` in ``0..L`` where the shortest path has at most L edges and ``L + 1`` otherwise
    (longer or unreachable: Graphormer gives both one embedding). Pairs across two graphs are never
    reachable. Found by :func:`reachable_pairs`, then looked up per pair by binary search, so the
    result is aligned with ``pairs`` whatever their order.

    **Shapes:** ``edge_index [2, E]``, ``pairs [2, P]`` (row 0 = source j, row 1 = target i)
    -> ``[P]`` int64.
    """
    found_pairs, dist = reachable_pairs(edge_index, num_nodes, max_distance)
    n = num_nodes
    key = found_pairs[0] * n + found_pairs[1]
    query = pairs[0] * n + pairs[1]
    pos = torch.searchsorted(key, query).clamp_max(max(key.numel() - 1, 0))
    found = key[pos] == query if key.numel() else torch.zeros_like(query, dtype=torch.bool)
    return torch.where(found, dist[pos] if key.numel() else query, torch.full_like(query, max_distance + 1))


def degrees(edge_index: Tensor, num_nodes: int) -> Tuple[Tensor, Tensor]:
    """``(in_degree, out_degree)`` of each node (edges j -> i: i gains one in, j one out).

    **Shapes:** ``edge_index [2, E]`` -> two ``[N]`` int64."""
    _check_edges(edge_index, num_nodes)
    return (torch.bincount(edge_index[1], minlength=num_nodes),
            torch.bincount(edge_index[0], minlength=num_nodes))


def random_walk_encoding(edge_index: Tensor, num_nodes: int, steps: int) -> Tensor:
    r"""RWSE (Dwivedi et al. 2022): the probability that a random walk from node i is back at i
    after k steps, ``[P^k]_{ii}`` for k = 1..K, with ``P = D_{out}^{-1} A`` (a walk follows the
    edges j -> i; a node without out-edges stops its walks).

    Computed by sparse powers ``P^{k+1} = P^k P``; ``P^k`` stays block-diagonal (one block per
    graph), so its size is at most ``sum_g N_g^2``.

    **Shapes:** ``edge_index [2, E]`` -> ``[N, K]`` float32.
    """
    _check_edges(edge_index, num_nodes)
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    out_deg = torch.bincount(edge_index[0], minlength=num_nodes).float()
    p = _adjacency(edge_index, num_nodes, 1.0 / out_deg[edge_index[0]])
    power, cols = p, []
    for k in range(steps):
        idx, val = power.indices(), power.values()
        on_diag = idx[0] == idx[1]
        cols.append(torch.zeros(num_nodes, device=val.device, dtype=val.dtype)
                    .index_add_(0, idx[0][on_diag], val[on_diag]))
        if k + 1 < steps:
            power = _sparse_mm(power, p)
    return torch.stack(cols, dim=1)


def laplacian_eigenvectors(edge_index: Tensor, batch: Tensor, k: int) -> Tuple[Tensor, Tensor]:
    r"""Laplacian eigenvector PE: the k eigenvectors after the trivial one of each graph's
    normalised Laplacian ``L = I - D^{-1/2} A D^{-1/2}`` (A symmetrised, isolated nodes have
    ``L_ii = 1``), smallest eigenvalues first, as node features.

    One batched ``torch.linalg.eigh`` over the graphs padded to the largest one; padded rows are
    decoupled with diagonal 3 (> 2, the spectrum's bound), so they never enter the first N_g pairs.
    Signs are fixed by a convention (the first entry that is not ~0 is positive); training usually
    flips them at random (:func:`random_sign_flip`). Graphs with fewer than k + 1 nodes get zero
    columns (eigenvalue 0) at the end, as PyG's ``AddLaplacianEigenvectorPE`` pads.

    **Shapes:** ``edge_index [2, E]``, ``batch [N]`` -> ``(pe [N, k], eigenvalues [N, k])`` (the
    eigenvalues of the node's graph, repeated on its nodes).
    """
    n = batch.numel()
    _check_edges(edge_index, n)
    dev = batch.device
    counts = torch.bincount(batch, minlength=int(batch.max()) + 1 if n else 0)
    G, M = counts.numel(), int(counts.max()) if n else 0
    ptr = torch.cat([counts.new_zeros(1), counts.cumsum(0)])
    local = torch.arange(n, device=dev) - ptr[batch]
    adj = torch.zeros(G, M, M, dtype=torch.float64, device=dev)
    src, dst = edge_index
    adj[batch[dst], local[dst], local[src]] = 1.0
    adj = torch.maximum(adj, adj.transpose(1, 2)).diagonal_scatter(
        torch.zeros(G, M, dtype=torch.float64, device=dev), dim1=1, dim2=2)  # no self loops
    deg = adj.sum(-1)
    inv_sqrt = torch.where(deg > 0, deg.clamp_min(1).rsqrt(), torch.zeros_like(deg))
    real = torch.arange(M, device=dev).view(1, M) < counts.view(G, 1)
    diag = torch.where(real, 1.0, _PAD_EIGENVALUE).to(torch.float64)
    lap = torch.diag_embed(diag) - inv_sqrt.unsqueeze(-1) * adj * inv_sqrt.unsqueeze(-2)
    evals, evecs = torch.linalg.eigh(lap)  # ascending; columns are eigenvectors
    evals, evecs = evals[:, 1:k + 1], evecs[:, :, 1:k + 1]
    width = evals.size(1)
    keep = torch.arange(width, device=dev).view(1, -1) < (counts - 1).view(G, 1)  # real pairs
    evecs = evecs * keep.unsqueeze(1)
    evals = evals * keep
    # Sign convention: the first entry (in node order) that is not ~0 is positive. Not the largest
    # entry: symmetric graphs have eigenvectors with ties in magnitude (+-1/sqrt 2).
    first = (evecs.abs() > _SIGN_TOL).to(torch.int8).argmax(dim=1, keepdim=True)
    sign = torch.sign(evecs.gather(1, first))
    evecs = evecs * torch.where(sign == 0, 1.0, sign)
    pe = evecs[batch, local]  # [N, width]
    ev = evals[batch]
    pad = k - width
    if pad > 0:
        pe, ev = (torch.cat([t, t.new_zeros(n, pad)], dim=1) for t in (pe, ev))
    return pe.float(), ev.float()


def random_sign_flip(pe: Tensor, batch: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """Flip each eigenvector of each graph by an independent random sign (the standard training
    augmentation: a model must not depend on the arbitrary sign of an eigenvector).

    **Shapes:** ``pe [N, k]``, ``batch [N]`` -> ``[N, k]``."""
    G = int(batch.max()) + 1 if batch.numel() else 0
    sign = torch.randint(0, 2, (G, pe.size(1)), generator=generator, device="cpu") * 2 - 1
    return pe * sign.to(pe.device, pe.dtype)[batch]


class SpatialBias(nn.Module):
    r"""Graphormer's spatial encoding: a learned scalar per head for each shortest-path distance,
    ``b^h_{ij} = W[\min(d(j, i), L + 1), h]``, added to the attention score of edge j -> i.

    **Shapes:** ``distance [P]`` (from :func:`shortest_path_distance`, in 0..L+1) -> ``[P, H]``,
    the ``edge_bias`` of the attention graph whose edges the distances were computed for.
    """

    def __init__(self, max_distance: int, num_heads: int):
        super().__init__()
        self.max_distance, self.num_heads = max_distance, num_heads
        self.embedding = nn.Embedding(max_distance + 2, num_heads)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.normal_(self.embedding.weight, std=0.02)

    def forward(self, distance: Tensor) -> Tensor:
        if distance.numel() and (int(distance.min()) < 0 or int(distance.max()) > self.max_distance + 1):
            raise ValueError(f"distances must lie in [0, {self.max_distance + 1}]")
        return self.embedding(distance)

    def __repr__(self) -> str:
        return f"SpatialBias(max_distance={self.max_distance}, heads={self.num_heads})"


class CentralityEncoding(nn.Module):
    r"""Graphormer's centrality encoding: ``h_i = x_i + z^-_{deg^-(i)} + z^+_{deg^+(i)}``, learned
    vectors for the in- and out-degree (clamped to ``max_degree``).

    **Shapes:** ``x [N, C]``, ``edge_index [2, E]`` -> ``[N, C]``.
    """

    def __init__(self, max_degree: int, channels: int):
        super().__init__()
        self.max_degree = max_degree
        self.in_embedding = nn.Embedding(max_degree + 1, channels)
        self.out_embedding = nn.Embedding(max_degree + 1, channels)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.normal_(self.in_embedding.weight, std=0.02)
        nn.init.normal_(self.out_embedding.weight, std=0.02)

    def forward(self, x: Tensor, edge_index: Tensor) -> Tensor:
        d_in, d_out = degrees(edge_index, x.size(0))
        return (x + self.in_embedding(d_in.clamp_max(self.max_degree))
                + self.out_embedding(d_out.clamp_max(self.max_degree)))
