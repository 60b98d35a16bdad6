"""PyG interop helpers: every adjacency form to ``[2, E]``, GAT's self-loop rule, token graphs
from a PyG ``batch`` vector (checked against per-graph builders and a mini-batch's ``ptr``), the
radix sort and the checked cache of sorted raw edges."""
import gc
import weakref

import numpy as np
import pytest
import torch
from torch_geometric import EdgeIndex
from torch_geometric.data import Batch, Data
from torch_geometric.typing import WITH_TORCH_SPARSE, SparseTensor
from torch_geometric.utils import (
    k_hop_subgraph,
    to_torch_coo_tensor,
    to_torch_csc_tensor,
    to_torch_csr_tensor,
)

from gnn_attention import graphs
from gnn_attention.graphs.pyg import (
    add_self_loops,
    batch_lengths,
    cached_sorted_graph,
    clear_sorted_cache,
    from_batch,
    is_sparse_adjacency,
    k_hop_graph,
    sorted_graph,
    stable_argsort,
    to_edge_index,
)

N_SRC, N_DST = 7, 5


def edges():
    g = torch.Generator().manual_seed(0)
    key = torch.randperm(N_SRC * N_DST, generator=g)[:13]
    return torch.stack([key % N_SRC, key // N_SRC])  # sources < 7, targets < 5, unsorted


def as_set(ei):
    return set(map(tuple, ei.t().tolist()))


@pytest.mark.parametrize("to_sparse", [to_torch_coo_tensor, to_torch_csr_tensor,
                                       to_torch_csc_tensor])
def test_sparse_adj_t_to_edge_index(to_sparse):
    ei = edges()
    adj_t = to_sparse(ei, size=(N_SRC, N_DST)).t()  # [N_dst, N_src]: entry (i, j) = edge j -> i
    assert is_sparse_adjacency(adj_t) and not is_sparse_adjacency(ei)
    out, size, values = to_edge_index(adj_t)
    assert size == (N_SRC, N_DST) and out.dtype == torch.int64
    assert as_set(out) == as_set(ei) and values.shape == (ei.size(1),)


def test_edge_index_forms():
    ei = edges()
    out, size, values = to_edge_index(ei)
    assert out is ei and size is None and values is None
    out, size, _ = to_edge_index(EdgeIndex(ei, sparse_size=(N_SRC, N_DST)))
    assert torch.equal(out, ei) and type(out) is torch.Tensor and size == (N_SRC, N_DST)
    with pytest.raises(TypeError, match="SparseTensor"):
        to_edge_index([[0], [1]])


@pytest.mark.skipif(not WITH_TORCH_SPARSE, reason="torch_sparse not installed")
def test_sparse_tensor():
    ei = edges()
    adj_t = SparseTensor.from_edge_index(ei, sparse_sizes=(N_SRC, N_DST)).t()
    out, size, _ = to_edge_index(adj_t)
    assert size == (N_SRC, N_DST) and as_set(out) == as_set(ei)


def test_add_self_loops_removes_then_appends():
    ei = torch.tensor([[0, 2, 1, 3], [1, 2, 0, 2]])  # one loop already (2 -> 2)
    attr = torch.tensor([[1.0], [5.0], [3.0], [7.0]])
    out, out_attr = add_self_loops(ei, 4, attr, fill_value="mean")
    assert out.tolist() == [[0, 1, 3, 0, 1, 2, 3], [1, 0, 2, 0, 1, 2, 3]]
    # loop features: mean of each node's incoming non-loop features (node 2: only 3 -> 2)
    assert out_attr.squeeze(1).tolist() == [1.0, 3.0, 7.0, 3.0, 1.0, 7.0, 0.0]


def test_from_batch_matches_builders_and_ptr():
    data = [Data(x=torch.randn(n, 3), num_nodes=n) for n in (3, 5, 2)]
    batch = Batch.from_data_list(data)
    for pattern, build in (("full", graphs.full), ("causal", graphs.causal)):
        g = from_batch(batch.batch, pattern=pattern)
        ref = build([3, 5, 2])
        assert torch.equal(g.edge_index, ref.edge_index) and g.batch_size == 3
        assert torch.equal(from_batch(ptr=batch.ptr, pattern=pattern).edge_index, ref.edge_index)
    g = from_batch(batch.batch, pattern="window", w=1)
    assert torch.equal(g.edge_index, graphs.window([3, 5, 2], 1).edge_index)
    # no edge crosses two graphs of the batch
    assert torch.equal(batch.batch[g.edge_index[0]], batch.batch[g.edge_index[1]])
    assert g.device == batch.batch.device


def test_batch_errors():
    assert batch_lengths(torch.tensor([0, 0, 2]), num_graphs=4).tolist() == [2, 0, 1, 0]
    with pytest.raises(ValueError, match="sorted"):
        batch_lengths(torch.tensor([0, 1, 0]))
    with pytest.raises(ValueError, match="exactly one"):
        batch_lengths()
    with pytest.raises(ValueError, match="needs w"):
        from_batch(torch.tensor([0, 0]), pattern="window")
    with pytest.raises(ValueError, match="pattern"):
        from_batch(torch.tensor([0, 0]), pattern="ring")


def test_sorted_graph_keeps_the_callers_order():
    ei = edges()
    g = sorted_graph(ei, N_SRC, N_DST)
    assert torch.equal(g.edge_index, ei[:, g.edge_perm])  # sorted k holds caller's edge_perm[k]
    key = g.edge_index[1] * N_SRC + g.edge_index[0]
    assert bool((key[1:] > key[:-1]).all()) and g.num_src == N_SRC and g.num_dst == N_DST
    assert torch.equal(g.rowptr.diff(), torch.bincount(ei[1], minlength=N_DST))
    s = g.edge_index
    assert sorted_graph(s, N_SRC, N_DST).edge_perm is None
    with pytest.raises(ValueError, match="coalesce"):
        sorted_graph(torch.cat([ei, ei[:, 3:4]], dim=1), N_SRC, N_DST)


@pytest.mark.parametrize("high", [1, 7, 2**16, 2**16 + 3, 2**40, 2**62])
def test_stable_argsort_is_numpys_stable_sort(high):
    """Radix passes over 16-bit digits (1 to 4 of them) equal numpy's stable sort, ties included."""
    rng = np.random.default_rng(high % 1000)
    for size in (0, 1, 2, 1000):
        key = rng.integers(0, high, size=size, dtype=np.int64)
        key[: size // 3] = key[size // 2: size // 2 + size // 3]  # many ties
        assert np.array_equal(stable_argsort(key), np.argsort(key, kind="stable"))


def shuffled_edges(n_src=N_SRC, n_dst=N_DST, count=13, seed=0):
    g = torch.Generator().manual_seed(seed)
    key = torch.randperm(n_src * n_dst, generator=g)[:count]
    return torch.stack([key % n_src, key // n_src])


def test_cached_sorted_graph_hits_only_equal_edges():
    clear_sorted_cache()
    ei = shuffled_edges()
    g = cached_sorted_graph(ei, N_SRC, N_DST)
    assert cached_sorted_graph(ei, N_SRC, N_DST) is g  # the same tensor: sorted once
    assert cached_sorted_graph(ei, N_SRC + 1, N_DST) is not g  # other sizes: another graph
    assert cached_sorted_graph(ei, N_SRC, N_DST) is g  # both kept (a few variants per tensor)
    # an in-place change that bumps no version counter (through numpy) is still seen: the
    # content is compared at every hit. Same edge set, other order: only edge_perm differs
    version = ei._version
    ei.numpy()[:] = ei.numpy()[:, ::-1].copy()
    assert ei._version == version
    g2 = cached_sorted_graph(ei, N_SRC, N_DST)
    assert g2 is not g and torch.equal(g2.edge_index, ei[:, g2.edge_perm])
    assert torch.equal(g2.edge_perm, sorted_graph(ei, N_SRC, N_DST).edge_perm)
    # keyed on the caller's tensor (owner), checked against the edges actually sorted
    other = shuffled_edges(seed=1)
    assert cached_sorted_graph(other, N_SRC, N_DST, owner=ei) is not g2
    assert torch.equal(cached_sorted_graph(other, N_SRC, N_DST, owner=ei).edge_index,
                       sorted_graph(other, N_SRC, N_DST).edge_index)
    clear_sorted_cache()
    assert cached_sorted_graph(ei, N_SRC, N_DST) is not g2


def test_cached_sorted_graph_lives_as_long_as_the_callers_tensor():
    ei = shuffled_edges()
    graph = weakref.ref(cached_sorted_graph(ei, N_SRC, N_DST))
    sorted_ei = graph().edge_index
    assert graph() is not None and cached_sorted_graph(sorted_ei, N_SRC, N_DST) is not graph()
    del ei
    gc.collect()
    assert graph() is None  # the graph never holds the caller's tensor


def test_cached_sorted_graph_keeps_inference_tensors_out_of_training():
    """A graph sorted under inference_mode would hold inference tensors, which autograd refuses to
    save: such calls get their own table, and a later training call sorts again."""
    ei = shuffled_edges()
    with torch.inference_mode():
        g_inf = cached_sorted_graph(ei, N_SRC, N_DST)
        assert cached_sorted_graph(ei, N_SRC, N_DST) is g_inf
    g = cached_sorted_graph(ei, N_SRC, N_DST)
    assert g is not g_inf and not g.edge_perm.is_inference()
    w = torch.randn(ei.size(1), requires_grad=True)
    w.index_select(0, g.edge_perm).sum().backward()  # saving edge_perm for backward is allowed


def ragged_batch(seed=0):
    """Graphs of 4, 7, 1, 0 and 6 nodes (one without edges, one empty), random directed edges with
    repeats and self-loops, collated by PyG."""
    g = torch.Generator().manual_seed(seed)
    data = []
    for n, e in ((4, 5), (7, 12), (1, 0), (0, 0), (6, 8)):
        ei = torch.randint(0, max(n, 1), (2, e), generator=g)
        data.append(Data(edge_index=ei, num_nodes=n))
    return Batch.from_data_list(data)


@pytest.mark.parametrize("k", [0, 1, 2, 3, 7])
def test_k_hop_graph_equals_pyg_k_hop_subgraph_per_node(k):
    batch = ragged_batch()
    g = k_hop_graph(batch.edge_index, k, batch.batch, num_graphs=batch.num_graphs)
    assert g.batch_size == 5 and g.num_src == g.num_dst == batch.num_nodes
    key = g.edge_index[1] * g.num_src + g.edge_index[0]
    assert bool((key[1:] > key[:-1]).all())  # sorted by (target, source), no duplicates
    assert torch.equal(g.rowptr.diff(), torch.bincount(g.edge_index[1], minlength=g.num_dst))
    assert torch.equal(batch.batch[g.edge_index[0]], batch.batch[g.edge_index[1]])  # no crossing
    for i in range(batch.num_nodes):
        subset, *_ = k_hop_subgraph(i, k, batch.edge_index, num_nodes=batch.num_nodes)
        sources = g.edge_index[0, g.edge_index[1] == i]
        assert sources.tolist() == subset.tolist(), f"node {i}"
    ptr_graph = from_batch(ptr=batch.ptr, pattern="khop", edge_index=batch.edge_index, k=k)
    assert torch.equal(ptr_graph.edge_index, g.edge_index) and g.device == batch.batch.device


def test_k_hop_graph_errors():
    batch = ragged_batch()
    with pytest.raises(ValueError, match="non-negative int"):
        k_hop_graph(batch.edge_index, -1, batch.batch)
    with pytest.raises(ValueError, match="two different sequences"):
        k_hop_graph(torch.tensor([[0], [5]]), 1, batch.batch)  # graph 0 -> graph 1
    with pytest.raises(ValueError, match="go with pattern='khop'"):
        from_batch(batch.batch, pattern="khop")
    with pytest.raises(ValueError, match="go with pattern='khop'"):
        from_batch(batch.batch, edge_index=batch.edge_index, k=1)
    with pytest.raises(IndexError, match="out of range"):
        k_hop_graph(torch.tensor([[0], [99]]), 1, batch.batch)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_k_hop_graph_and_sorted_memo_stay_on_the_device():
    batch = ragged_batch().to("cuda")
    g = k_hop_graph(batch.edge_index, 2, batch.batch, num_graphs=batch.num_graphs)
    cpu = k_hop_graph(batch.edge_index.cpu(), 2, batch.batch.cpu(), num_graphs=batch.num_graphs)
    assert g.edge_index.is_cuda and g.rowptr.is_cuda and g.src_ptr.is_cuda
    assert torch.equal(g.edge_index.cpu(), cpu.edge_index)
    ei = shuffled_edges().cuda()
    memo = cached_sorted_graph(ei, N_SRC, N_DST)
    assert memo.edge_index.is_cuda and cached_sorted_graph(ei, N_SRC, N_DST) is memo
    assert torch.equal(memo.edge_index.cpu(), sorted_graph(ei.cpu(), N_SRC, N_DST).edge_index)
