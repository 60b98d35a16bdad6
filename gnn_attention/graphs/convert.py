"""Set operations on graphs, dense masks in both PyTorch conventions, and networkx export."""
from __future__ import annotations

import torch
from torch import Tensor

from gnn_attention.graphs.core import CONVENTIONS, Pattern, TokenGraph, _ptr, from_edge_index
from gnn_attention.graphs.dense import edges_to_dense


def _keys(g: TokenGraph) -> Tensor:
    return g.edge_index[1] * max(g.num_src, 1) + g.edge_index[0]


def _combine(a: TokenGraph, b: TokenGraph, keep: Tensor, name: str, op) -> TokenGraph:
    if (a.num_src, a.num_dst) != (b.num_src, b.num_dst) or not (
            torch.equal(a.src_ptr, b.src_ptr) and torch.equal(a.dst_ptr, b.dst_ptr)):
        raise ValueError(f"cannot {name} graphs over different sequences: {a} and {b}")
    n = max(a.num_src, 1)
    ei = torch.stack([keep % n, keep // n])
    allows = None
    if a.pattern.allows is not None and b.pattern.allows is not None:
        fa, fb = a.pattern.allows, b.pattern.allows
        allows = lambda t, s, T, S: op(fa(t, s, T, S), fb(t, s, T, S))
    return from_edge_index(ei, a.src_lengths, a.dst_lengths,
                           Pattern(name, (a.pattern, b.pattern), allows), a.bipartite or b.bipartite)


def intersection(a: TokenGraph, b: TokenGraph) -> TokenGraph:
    """Edges present in both graphs (e.g. ``intersection(causal(n), window(n, 64))``)."""
    ka, kb = _keys(a), _keys(b)
    return _combine(a, b, ka[torch.isin(ka, kb)], "intersection", torch.logical_and)


def union(a: TokenGraph, b: TokenGraph) -> TokenGraph:
    """Edges present in either graph (e.g. a window plus global tokens)."""
    return _combine(a, b, torch.unique(torch.cat([_keys(a), _keys(b)])), "union", torch.logical_or)


def _check_convention(convention: str) -> None:
    if convention not in CONVENTIONS:
        raise ValueError(f"convention must be 'sdpa' (True = allowed) or 'mha' (True = blocked), "
                         f"got {convention!r}")


def from_dense_mask(mask: Tensor, convention: str, device=None) -> TokenGraph:
    """A graph from a boolean mask ``[T, S]`` or ``[B, T, S]``.

    ``convention="sdpa"``: True = attention allowed (``F.scaled_dot_product_attention``).
    ``convention="mha"``: True = blocked (``nn.MultiheadAttention`` boolean masks).
    Node ``b * T + t`` is query t of sequence b and node ``b * S + s`` its key s.
    """
    _check_convention(convention)
    if not isinstance(mask, Tensor) or mask.dtype != torch.bool:
        raise TypeError(f"mask must be a bool tensor, got "
                        f"{mask.dtype if isinstance(mask, Tensor) else type(mask).__name__}")
    if mask.dim() not in (2, 3):
        raise ValueError(f"mask must have shape [T, S] or [B, T, S], got {tuple(mask.shape)}")
    allowed = mask if convention == "sdpa" else ~mask
    allowed = allowed.unsqueeze(0) if allowed.dim() == 2 else allowed
    B, T, S = allowed.shape
    b, t, s = allowed.nonzero(as_tuple=True)  # row-major: sorted by (b, t, s) = (target, source)
    ei = torch.stack([b * S + s, b * T + t]).to(device or mask.device)
    m, n = torch.full((B,), S), torch.full((B,), T)
    rowptr = _ptr(allowed.sum(-1).flatten().cpu())
    device = device or mask.device
    # nonzero() lists (b, t, s) in row-major order: sorted, distinct, inside their sequence
    return TokenGraph(ei, B * S, B * T, _ptr(m).to(device), _ptr(n).to(device), rowptr.to(device),
                      Pattern("dense_mask"), bipartite=T != S, validate=False)


def to_dense_mask(g: TokenGraph, convention: str = "sdpa") -> Tensor:
    """The graph as a boolean mask ``[B, T_max, S_max]`` in the given convention.

    Positions beyond a sequence's lengths (padding) have no edges, so they are blocked.
    """
    _check_convention(convention)
    edge = torch.ones(g.num_edges, dtype=torch.bool, device=g.device)
    allowed = edges_to_dense(g, edge, fill=False)
    return allowed if convention == "sdpa" else ~allowed


def to_networkx(g: TokenGraph, edge_weight: Tensor | None = None, labels=None):
    """A ``networkx.DiGraph`` with an edge j -> i per attention edge.

    Self-attention graphs have nodes ``0..N-1``; bipartite graphs have nodes ``("src", j)`` and
    ``("dst", i)`` with attribute ``bipartite`` 0/1. ``edge_weight`` (``[E]`` or ``[E, H]``) becomes
    the edge attribute ``weight`` (a list per head when 2-D); ``labels`` (a sequence of token
    strings per node, ``(src_labels, dst_labels)`` when bipartite) become the node attribute ``label``.
    """
    import networkx as nx

    G = nx.DiGraph()
    if g.bipartite:
        src_lab, dst_lab = labels if labels is not None else (None, None)
        G.add_nodes_from((("src", j), {"bipartite": 0, **({"label": src_lab[j]} if src_lab else {})})
                         for j in range(g.num_src))
        G.add_nodes_from((("dst", i), {"bipartite": 1, **({"label": dst_lab[i]} if dst_lab else {})})
                         for i in range(g.num_dst))
        name_s, name_d = (lambda j: ("src", j)), (lambda i: ("dst", i))
    else:
        G.add_nodes_from((i, {"label": labels[i]} if labels is not None else {})
                         for i in range(g.num_dst))
        name_s = name_d = lambda i: i
    src, dst = g.edge_index.tolist()
    if edge_weight is None:
        G.add_edges_from((name_s(j), name_d(i)) for j, i in zip(src, dst))
    else:
        w = edge_weight.detach().cpu().tolist()
        G.add_edges_from((name_s(j), name_d(i), {"weight": wt}) for j, i, wt in zip(src, dst, w))
    return G
