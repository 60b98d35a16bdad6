"""PyG interop: every adjacency form PyG layers accept, raw edges sorted once (memoised, checked),
GAT-style self-loops, and token graphs built from a PyG ``batch`` vector (global, causal, window or
k-hop attention inside each graph of a mini-batch).

Notation: N_src source (key/value) nodes, N_dst target (query) nodes, E edges j -> i,
F edge-feature width, B graphs in a PyG mini-batch, N = sum of their node counts.

Adjacency forms (PyG's ``adj_t`` convention: a sparse matrix ``[N_dst, N_src]`` whose entry (i, j)
is the edge j -> i, i.e. the transpose of the adjacency):

    [2, E] tensor              row 0 = source j, row 1 = target i (also ``torch_geometric.EdgeIndex``)
    torch.sparse COO/CSR/CSC   adj_t, ``adj_t[i, j]`` != 0 for every edge j -> i
    torch_sparse.SparseTensor  adj_t (only when torch_sparse is installed)
"""
from __future__ import annotations

import numpy as np
import torch
import torch.utils.weak
from torch import Tensor
from torch_geometric.typing import SparseTensor
from torch_geometric.utils import add_self_loops as pyg_add_self_loops
from torch_geometric.utils import remove_self_loops

from gnn_attention.graphs.builders import causal, full, window
from gnn_attention.graphs.core import Pattern, TokenGraph
from gnn_attention.graphs.sorting import stable_argsort
from gnn_attention.graphs.validate import check_edge_index, check_same_sequence

SPARSE_LAYOUTS = (torch.sparse_coo, torch.sparse_csr, torch.sparse_csc)
Size = tuple[int, int] | None


def is_sparse_adjacency(adj) -> bool:
    """True for a torch.sparse tensor or a ``torch_sparse.SparseTensor`` (an ``adj_t``)."""
    return (isinstance(adj, Tensor) and adj.layout in SPARSE_LAYOUTS) or \
        isinstance(adj, SparseTensor)


def to_edge_index(adj) -> tuple[Tensor, Size, Tensor | None]:
    r"""Any PyG adjacency as ``(edge_index [2, E] int64, size, values)``.

    ``size`` is ``(N_src, N_dst)`` when the input knows it (sparse matrices, ``EdgeIndex`` with a
    sparse size), else None; ``values`` are the sparse matrix's stored values (``[E]`` or
    ``[E, F]``) in the same edge order, or None for a ``[2, E]`` input. A COO matrix is coalesced
    first (duplicates summed, as PyG does), CSR edges come sorted by target, CSC by source.

    **Shapes:** ``adj``: ``[2, E]`` or sparse ``[N_dst, N_src]`` -> ``edge_index [2, E]``.
    """
    if isinstance(adj, Tensor) and adj.layout == torch.strided:
        size = None
        sparse_size = getattr(adj, "sparse_size", None)  # torch_geometric.EdgeIndex
        if callable(sparse_size):
            n_src, n_dst = sparse_size()
            size = None if n_src is None or n_dst is None else (int(n_src), int(n_dst))
            adj = adj.as_tensor()  # plain tensor: no EdgeIndex dispatch in the kernels
        return adj, size, None
    if isinstance(adj, Tensor) and adj.layout in SPARSE_LAYOUTS:
        n_dst, n_src = adj.shape[:2]
        if adj.layout == torch.sparse_coo:
            adj = adj.coalesce()
            dst, src = adj.indices()
        elif adj.layout == torch.sparse_csr:
            crow, src = adj.crow_indices(), adj.col_indices()
            dst = torch.repeat_interleave(torch.arange(n_dst, device=crow.device), crow.diff())
        else:
            ccol, dst = adj.ccol_indices(), adj.row_indices()
            src = torch.repeat_interleave(torch.arange(n_src, device=ccol.device), ccol.diff())
        return torch.stack([src, dst]).long(), (int(n_src), int(n_dst)), adj.values()
    if isinstance(adj, SparseTensor):  # a placeholder class when torch_sparse is missing
        dst, src, value = adj.coo()
        n_dst, n_src = adj.sparse_sizes()
        return torch.stack([src, dst]).long(), (int(n_src), int(n_dst)), value
    raise TypeError(f"edge_index must be a Tensor or TokenGraph, got {type(adj).__name__} (a "
                    f"[2, E] tensor, a torch.sparse adj_t or a SparseTensor)")


def sorted_graph(edge_index: Tensor, num_src: int, num_dst: int) -> TokenGraph:
    r"""One-sequence TokenGraph of already range-checked edges, sorted on the host with numpy.

    What a layer does with a raw ``[2, E]`` input so that the kernels see sorted edges and the CSR
    structure needs no second sort: numpy's single-threaded radix sort (:func:`stable_argsort`)
    instead of torch's parallel one, which stalls on busy shared cores (see ``kernels/csr.py``).
    Duplicates are rejected (naming ``torch_geometric.utils.coalesce``) by one O(E) pass over the
    sorted keys. ``graph.edge_perm[k]`` is the caller's index of sorted edge k (None when already
    sorted): per-edge tensors go in as ``t[edge_perm]`` and come back with ``index_copy(0,
    edge_perm, ...)``.

    **Shapes:** ``edge_index [2, E]`` int64 -> a graph with ``edge_index [2, E]``, ``edge_perm [E]``.
    """
    ei = edge_index.detach().cpu().numpy()
    key = ei[1] * max(num_src, 1) + ei[0]
    order = None
    if key.size > 1 and bool((key[1:] < key[:-1]).any()):
        order = stable_argsort(key)
        key, ei = key[order], np.take(ei, order, axis=1)  # take: ~10x faster than ei[:, order]
    same = np.flatnonzero(key[1:] == key[:-1])
    if same.size:
        j, i = int(ei[0, same[0]]), int(ei[1, same[0]])
        raise ValueError(f"edge_index has {same.size} duplicate edge(s), first j={j} -> i={i}; "
                         f"attention edges form a set (a repeated edge would count its key twice "
                         f"in the softmax): remove them, e.g. torch.unique(edge_index, dim=1); "
                         f"in PyG: torch_geometric.utils.coalesce(edge_index, edge_attr)")
    dev = edge_index.device
    rowptr = np.concatenate([[0], np.cumsum(np.bincount(ei[1], minlength=num_dst))])
    as_t = lambda a: torch.from_numpy(np.ascontiguousarray(a, dtype=np.int64)).to(dev)
    return TokenGraph(as_t(ei) if order is not None else edge_index, num_src, num_dst,
                      as_t([0, num_src]), as_t([0, num_dst]), as_t(rowptr), Pattern("custom"),
                      num_src != num_dst, edge_perm=None if order is None else as_t(order),
                      validate=False)


# The caller's edge tensor -> up to CACHE_VARIANTS (edges copy, sizes, sorted graph), most recent
# first. Weak keys: an entry lives as long as the caller's tensor. Inference mode has its own
# table, because its tensors cannot be saved for a later backward.
_SORTED = (torch.utils.weak.WeakTensorKeyDictionary(), torch.utils.weak.WeakTensorKeyDictionary())
CACHE_VARIANTS = 4


def cached_sorted_graph(edge_index: Tensor, num_src: int, num_dst: int,
                        owner: Tensor | None = None) -> TokenGraph:
    r""":func:`sorted_graph`, memoised on ``owner`` (the tensor the caller passed, by default
    ``edge_index``) and checked on every hit.

    A model that gives the same ``edge_index`` to several layers, or at every step of full-batch
    training, sorts it once: the graph returned is the same object, so the kernels' CSR structures
    cached on it (``graph.cache``) are reused too. A hit needs the same sizes and equal edges
    (``torch.equal`` with a private copy, O(E), one device sync off the CPU), so an edge tensor
    changed in place, by any route, is sorted again: the cache is never trusted blindly. The copy
    and the graph (about 40 bytes per edge: int64 copy, sorted edges and permutation) and the
    kernels' structures on it (about 24 H bytes per edge for the CSR kernel with H heads, and
    about 6 H more with edge features; 99 and 125 at H = 4, E = 5e4) are freed with the caller's
    tensor; :func:`clear_sorted_cache` frees them at once.

    **Shapes:** as :func:`sorted_graph`.
    """
    owner = edge_index if owner is None else owner
    table = _SORTED[int(torch.is_inference_mode_enabled())]
    entries = table.get(owner, ())
    for copy, sizes, graph in entries:
        if sizes == (num_src, num_dst) and copy.shape == edge_index.shape and \
                copy.device == edge_index.device and torch.equal(copy, edge_index):
            return graph
    # the graph is built on a copy, so that it never holds the caller's tensor (a strong reference
    # to a weak key would keep both alive)
    copy = edge_index.detach().clone()
    graph = sorted_graph(copy, num_src, num_dst)
    table[owner] = ((copy, (num_src, num_dst), graph),) + tuple(entries[:CACHE_VARIANTS - 1])
    return graph


def clear_sorted_cache() -> None:
    """Forget every graph :func:`cached_sorted_graph` holds (they are rebuilt on the next call)."""
    for table in _SORTED:
        table.clear()


def add_self_loops(edge_index: Tensor, num_nodes: int, edge_attr: Tensor | None = None,
                   fill_value: float | Tensor | str = "mean"):
    r"""GAT's self-loop rule: remove every loop i -> i, then append one loop per node
    ``i < num_nodes`` at the end (so a graph that already has loops keeps exactly one each).

    The appended loops' edge features are ``fill_value``: a number, a ``[F]`` tensor, or a
    reduction (``"mean"``, ``"sum"``, ``"max"``, ...) of the features of each node's incoming edges,
    as :func:`torch_geometric.utils.add_self_loops`. This order (non-loops first, loops last) is the
    one PyG's explain machinery expects (``edge_mask[loop_mask]`` followed by ones).

    **Shapes:** ``edge_index [2, E]``, ``edge_attr [E, F]`` -> ``[2, E' + num_nodes]``, ``[E' +
    num_nodes, F]`` with E' the non-loop edges.
    """
    edge_index, edge_attr = remove_self_loops(edge_index, edge_attr)
    return pyg_add_self_loops(edge_index, edge_attr, fill_value=fill_value, num_nodes=num_nodes)


def batch_lengths(batch: Tensor | None = None, ptr: Tensor | None = None,
                  num_graphs: int | None = None) -> Tensor:
    """Node count of each graph in a PyG mini-batch, from ``batch [N]`` or ``ptr [B + 1]``.

    PyG's ``batch`` vector is sorted (graphs are concatenated); an unsorted one would put one
    sequence's nodes in several places, which a disjoint union of sequences cannot express.
    """
    if (batch is None) == (ptr is None):
        raise ValueError("give exactly one of batch ([N] graph id per node) or ptr ([B + 1])")
    if ptr is not None:
        return ptr.diff().cpu()
    if batch.dim() != 1 or batch.dtype not in (torch.int64, torch.int32):
        raise ValueError(f"batch must be a 1-D integer tensor [N], got {batch.dtype} "
                         f"{list(batch.shape)}")
    if batch.numel() > 1 and bool((batch[1:] < batch[:-1]).any()):
        raise ValueError("batch must be sorted (nodes of graph 0 first, then graph 1, ...), as "
                         "torch_geometric.data.Batch produces it")
    n = int(batch.max()) + 1 if batch.numel() else 0
    return torch.bincount(batch.cpu(), minlength=max(n, num_graphs or 0))


def from_batch(batch: Tensor | None = None, *, ptr: Tensor | None = None,
               pattern: str = "full", w: int | None = None, num_graphs: int | None = None,
               edge_index: Tensor | None = None, k: int | None = None) -> TokenGraph:
    r"""Attention inside each graph of a PyG mini-batch: a token graph whose sequence b is graph b.

    ``pattern``: ``"full"`` (global attention, as in GPS), ``"causal"`` (node order inside each
    graph, top-left aligned), ``"window"`` (``|t - s| <= w`` in node order) or ``"khop"`` (the
    k-hop neighbourhoods of the batch's ``edge_index``, see :func:`k_hop_graph`). Built on the
    device of ``batch``/``ptr``. Because a mini-batch is rebuilt by every ``DataLoader`` step,
    build the graph after collation (``from_batch(data.batch)``) rather than storing a TokenGraph
    in ``Data``.

    **Shapes:** ``batch [N]`` or ``ptr [B + 1]`` -> a graph with N source and N target nodes.
    """
    if (edge_index is not None or k is not None) != (pattern == "khop"):
        raise ValueError("edge_index and k go with pattern='khop' (and it needs both)")
    if pattern == "khop":
        return k_hop_graph(edge_index, k, batch, ptr=ptr, num_graphs=num_graphs)
    lengths = batch_lengths(batch, ptr, num_graphs)
    device = (batch if batch is not None else ptr).device
    if pattern == "full":
        return full(lengths, device=device)
    if pattern == "causal":
        return causal(lengths, device=device)
    if pattern == "window":
        if w is None:
            raise ValueError("pattern='window' needs w (the window reach)")
        return window(lengths, w, device=device)
    raise ValueError(f"pattern must be 'full', 'causal', 'window' or 'khop', got {pattern!r}")


def k_hop_graph(edge_index: Tensor, k: int, batch: Tensor | None = None, *,
                ptr: Tensor | None = None, num_graphs: int | None = None) -> TokenGraph:
    r"""Attention on the k-hop neighbourhoods of a PyG mini-batch's graphs: target i attends to
    every node j with a directed path j -> ... -> i of at most k edges of ``edge_index`` (j = i
    included), the nodes ``torch_geometric.utils.k_hop_subgraph(i, k, edge_index)`` returns.

    With ``A [N, N]``, ``A[i, j] = 1`` for each edge j -> i, the reach is ``R_0 = I``, ``R_{h+1} =
    1[(A + I) R_h > 0]``: k sparse products on the device of ``batch``/``ptr``, stopped early once
    the set no longer grows, no loop over nodes. The coalesced result is sorted by (target,
    source), the TokenGraph order, so no sort follows. Duplicate input edges change nothing (a
    reachable pair is a set member); an edge between two graphs of the batch is an error, so no
    neighbourhood crosses graphs. The graph holds up to ``sum_b n_b^2`` edges (graph b's nodes all
    reach each other).

    **Shapes:** ``edge_index [2, E]``, ``batch [N]`` or ``ptr [B + 1]`` -> a graph with N source and
    N target nodes and ``sum_i |khop(i)|`` edges.
    """
    if isinstance(k, bool) or not isinstance(k, int) or k < 0:
        raise ValueError(f"k must be a non-negative int (hops), got {k!r}")
    lengths = batch_lengths(batch, ptr, num_graphs)
    device = (batch if batch is not None else ptr).device
    if not isinstance(edge_index, Tensor) or edge_index.device != device:
        raise ValueError(f"edge_index must be a tensor on the batch's device ({device}), got "
                         f"{getattr(edge_index, 'device', type(edge_index).__name__)}")
    N = int(lengths.sum())
    node_ptr = torch.cat([lengths.new_zeros(1), lengths.cumsum(0)]).to(device)
    ei = check_edge_index(edge_index, N, N, check_duplicates=False)
    check_same_sequence(ei, node_ptr, node_ptr)
    nodes = torch.arange(N, device=device)
    step = _pattern_matrix(torch.cat([ei[1], nodes]), torch.cat([ei[0], nodes]), N)  # A + I
    reach = _pattern_matrix(nodes, nodes, N)
    for _ in range(k):
        grown = torch.sparse.mm(step, reach).coalesce()
        done = grown._nnz() == reach._nnz()  # R_h is inside R_{h+1} (A + I holds I): equal size,
        reach = _pattern_matrix(*grown.indices(), N)  # equal set: later hops add nothing
        if done:
            break
    dst, src = reach.indices()
    rowptr = torch.cat([nodes.new_zeros(1), torch.bincount(dst, minlength=N).cumsum(0)])
    return TokenGraph(torch.stack([src, dst]), N, N, node_ptr, node_ptr, rowptr,
                      Pattern("custom"), False, validate=False)


def _pattern_matrix(rows: Tensor, cols: Tensor, n: int) -> Tensor:
    """``[n, n]`` coalesced COO matrix with value 1 at every (row, col) (repeats merged)."""
    m = torch.sparse_coo_tensor(torch.stack([rows, cols]), torch.ones(rows.numel(),
                                device=rows.device), (n, n)).coalesce()
    return torch.sparse_coo_tensor(m.indices(), torch.ones_like(m.values()), (n, n),
                                   is_coalesced=True)
