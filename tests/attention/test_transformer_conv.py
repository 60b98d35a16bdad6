"""``TransformerConv`` against ``torch_geometric.nn.TransformerConv`` with copied weights: the
behaviours PyG's own tests check (output sizes, every adjacency form, bipartite input, returned
attention weights, nothing stored on the layer), restated here, plus exact agreement of outputs
(1e-5), gradients (1e-4) and weights, unsorted edges, lazy widths and ``to_hetero``.

Sizes are distinct primes (N=7 sources, 5 targets, in 11 / 13, C=5 per head, H=3, F=2) so that a
swapped axis fails.
"""
import pytest
import torch
import torch_geometric.nn as pyg_nn
from torch_geometric import EdgeIndex
from torch_geometric.utils import to_torch_coo_tensor, to_torch_csc_tensor, to_torch_csr_tensor

from gnn_attention.attention.transformer_conv import TransformerConv
from gnn_attention.graphs import from_edge_index

N, IN, C, H, F = 7, 11, 5, 3, 2


def unsorted_edges(n_src=N, n_dst=N, seed=0, count=23):
    g = torch.Generator().manual_seed(seed)
    key = torch.randperm(n_src * n_dst, generator=g)[:count]  # distinct, in random order
    return torch.stack([key % n_src, key // n_src])


def pair(edge_dim=None, concat=True, beta=True, seed=0, **kwargs):
    torch.manual_seed(seed)
    ref = pyg_nn.TransformerConv(IN, C, heads=H, concat=concat, beta=beta, edge_dim=edge_dim,
                                 **kwargs)
    return ref, TransformerConv.from_pyg(ref)


@pytest.mark.parametrize("edge_dim", [None, F])
@pytest.mark.parametrize("concat", [True, False])
def test_sizes_and_every_adjacency_form(edge_dim, concat):
    ref, conv = pair(edge_dim, concat)
    x, ei = torch.randn(N, IN), unsorted_edges()
    a = torch.randn(ei.size(1), F) if edge_dim else None
    out = conv(x, ei, a)
    assert out.shape == (N, H * C if concat else C)
    torch.testing.assert_close(out, ref(x, ei, a), atol=1e-5, rtol=0)
    if edge_dim is None:  # PyG's adj_t convention: entry (i, j) is the edge j -> i
        for to_sparse in (to_torch_coo_tensor, to_torch_csr_tensor, to_torch_csc_tensor):
            adj = to_sparse(ei, size=(N, N))
            torch.testing.assert_close(conv(x, adj.t()), out, atol=1e-6, rtol=0)
    ei_sized = EdgeIndex(ei, sparse_size=(N, N))
    torch.testing.assert_close(conv(x, ei_sized, a), out, atol=1e-6, rtol=0)


def test_sparse_feature_values_are_edge_attr():
    """A sparse adjacency whose values are [E, F] vectors carries the edge features (PyG)."""
    ref, conv = pair(edge_dim=F)
    x, ei = torch.randn(N, IN), unsorted_edges()
    a = torch.randn(ei.size(1), F)
    adj_t = torch.sparse_coo_tensor(ei.flip(0), a, (N, N, F))
    torch.testing.assert_close(conv(x, adj_t), ref(x, ei, a), atol=1e-5, rtol=0)


@pytest.mark.parametrize("edge_dim", [None, F])
def test_sparse_tensor_equals_edge_index(edge_dim):
    """A torch_sparse ``SparseTensor`` adj_t (feature vectors as its values) gives the [2, E]
    form's output, and the weights come back as its values (PyG's form), each at its own edge.
    Skipped where torch_sparse is not installed (it has no wheel for every torch version)."""
    torch_sparse = pytest.importorskip("torch_sparse")
    ref, conv = pair(edge_dim)
    x, ei = torch.randn(N, IN), unsorted_edges()
    a = torch.randn(ei.size(1), F) if edge_dim else None
    adj_t = torch_sparse.SparseTensor(row=ei[1], col=ei[0], value=a, sparse_sizes=(N, N))
    out, adj_alpha = conv(x, adj_t, return_attention_weights=True)
    expected, (_, alpha) = ref(x, ei, a, return_attention_weights=True)
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=0)
    row, col, alpha_t = adj_alpha.coo()
    by_pair = torch.zeros(N, N, H)
    by_pair[ei[1], ei[0]] = alpha
    torch.testing.assert_close(alpha_t, by_pair[row, col], atol=1e-6, rtol=0)


@pytest.mark.parametrize("edge_dim", [None, F])
def test_return_attention_weights_as_pyg(edge_dim):
    ref, conv = pair(edge_dim)
    x, ei = torch.randn(N, IN), unsorted_edges()
    a = torch.randn(ei.size(1), F) if edge_dim else None
    out = conv(x, ei, a)
    for flag in (True, False):  # PyG: any bool asks for the weights
        res, (ei_ret, alpha) = conv(x, ei, a, return_attention_weights=flag)
        torch.testing.assert_close(res, out)
        assert ei_ret.shape == (2, ei.size(1)) and alpha.shape == (ei.size(1), H)
        assert torch.equal(ei_ret, ei)  # the caller's order, not the sorted one
        _, (_, alpha_pyg) = ref(x, ei, a, return_attention_weights=True)
        torch.testing.assert_close(alpha, alpha_pyg, atol=1e-6, rtol=0)
        assert float(alpha.detach().min()) >= 0 and float(alpha.detach().max()) <= 1
    assert not hasattr(conv, "_alpha")  # nothing stored on the layer


def test_bipartite():
    torch.manual_seed(0)
    ref = pyg_nn.TransformerConv((IN, 13), C, heads=H, beta=True)
    conv = TransformerConv.from_pyg(ref)
    assert str(conv) == "TransformerConv((11, 13), 5, heads=3)"
    x_src, x_dst = torch.randn(N, IN), torch.randn(5, 13)
    ei = unsorted_edges(N, 5, count=17)
    out = conv((x_src, x_dst), ei)
    assert out.shape == (5, H * C)
    torch.testing.assert_close(out, ref((x_src, x_dst), ei), atol=1e-5, rtol=0)
    adj = to_torch_csc_tensor(ei, size=(N, 5))
    torch.testing.assert_close(conv((x_src, x_dst), adj.t()), out, atol=1e-6, rtol=0)
    with pytest.raises(ValueError, match="size"):  # a sparse matrix of the wrong shape
        conv((x_src, x_dst), to_torch_csc_tensor(ei, size=(N, 6)).t())


@pytest.mark.parametrize("beta,root_weight,edge_dim", [(True, True, F), (False, True, None),
                                                        (False, False, F)])
def test_gradients_match_pyg(beta, root_weight, edge_dim):
    torch.manual_seed(1)
    ref = pyg_nn.TransformerConv(IN, C, heads=H, beta=beta, root_weight=root_weight,
                                 edge_dim=edge_dim)
    conv = TransformerConv.from_pyg(ref)
    x, ei = torch.randn(N, IN), unsorted_edges(seed=2)
    a = torch.randn(ei.size(1), F) if edge_dim else None
    grads = []
    for layer in (ref, conv):
        xr = x.clone().requires_grad_()
        (layer(xr, ei, a) * torch.linspace(-1, 1, H * C)).sum().backward()
        grads.append([xr.grad] + [p.grad for p in layer.parameters()])
    for g_ref, g in zip(*grads):
        torch.testing.assert_close(g, g_ref, atol=1e-4, rtol=0)


def test_token_graph_input_and_alignment():
    """A graph built from unsorted edges with their features gives PyG's numbers; features given
    separately for such a reordered graph are refused (never paired with the wrong edge)."""
    ref, conv = pair(edge_dim=F)
    x, ei = torch.randn(N, IN), unsorted_edges()
    a = torch.randn(ei.size(1), F)
    g = from_edge_index(ei, [N], [N], edge_attr=a)
    assert g.edge_perm is not None
    expected = ref(x, ei, a)
    torch.testing.assert_close(conv(x, g), expected, atol=1e-5, rtol=0)
    torch.testing.assert_close(conv(x, g, g.edge_attr), expected, atol=1e-5, rtol=0)
    _, (ei_ret, alpha) = conv(x, g, return_attention_weights=True)
    _, (_, alpha_ref) = ref(x, ei, a, return_attention_weights=True)
    assert torch.equal(ei_ret, g.edge_index)
    torch.testing.assert_close(alpha, alpha_ref[g.edge_perm], atol=1e-6, rtol=0)
    with pytest.raises(ValueError, match="edge_perm"):
        conv(x, g, a)


def test_lazy_widths_and_to_pyg():
    torch.manual_seed(3)
    conv = TransformerConv(-1, C, heads=H, edge_dim=F)
    x, ei = torch.randn(N, IN), unsorted_edges()
    a = torch.randn(ei.size(1), F)
    out = conv(x, ei, a)
    assert conv.lin_query.weight.shape == (H * C, IN)
    ref = conv.to_pyg()
    torch.testing.assert_close(ref(x, ei, a), out, atol=1e-5, rtol=0)
    back = TransformerConv.from_pyg(ref)
    torch.testing.assert_close(back(x, ei, a), out, atol=1e-6, rtol=0)


def test_clear_errors():
    _, conv = pair(edge_dim=None)
    x, ei = torch.randn(N, IN), unsorted_edges()
    with pytest.raises(ValueError, match="edge_dim=None"):
        conv(x, ei, torch.randn(ei.size(1), F))
    _, conv = pair(edge_dim=F)
    with pytest.raises(ValueError, match="pass edge_attr"):
        conv(x, ei)
    with pytest.raises(ValueError, match=r"\[23, 2\]"):
        conv(x, ei, torch.randn(ei.size(1), F + 1))
    dup = torch.cat([ei, ei[:, :1]], dim=1)
    with pytest.raises(ValueError, match="coalesce"):
        conv(x, dup, torch.randn(dup.size(1), F))


def test_to_hetero_with_different_widths():
    """Node types of different widths: lazy in_channels resolve per edge type."""
    from torch_geometric.data import HeteroData
    from torch_geometric.nn import to_hetero

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = TransformerConv((-1, -1), C, heads=H)

        def forward(self, x, edge_index):
            return self.conv(x, edge_index)

    data = HeteroData()
    data["paper"].x, data["author"].x = torch.randn(N, IN), torch.randn(5, 13)
    data["author", "writes", "paper"].edge_index = unsorted_edges(5, N, count=19)
    data["paper", "cites", "paper"].edge_index = unsorted_edges(N, N, count=17)
    model = to_hetero(Net(), data.metadata(), aggr="sum")
    out = model(data.x_dict, data.edge_index_dict)
    assert out["paper"].shape == (N, H * C)
    # the same sum computed with PyG's TransformerConv, weights copied edge type by edge type
    expected = 0
    for key, conv in model.conv.items():
        src, rel, dst = key.split("__")
        assert dst == "paper"
        ref = conv.to_pyg()
        expected = expected + ref((data[src].x, data[dst].x), data[src, rel, dst].edge_index)
    torch.testing.assert_close(out["paper"], expected, atol=1e-5, rtol=0)


@pytest.mark.slow
def test_compiles():
    """PyG tests its convs under torch.compile; ours compiles to the reference form."""
    ref, conv = pair(edge_dim=F)
    x, ei = torch.randn(N, IN), unsorted_edges()
    a = torch.randn(ei.size(1), F)
    compiled = torch.compile(conv, backend="aot_eager")
    torch.testing.assert_close(compiled(x, ei, a), ref(x, ei, a), atol=1e-5, rtol=0)


def test_raw_edge_index_sorted_once_and_rechecked(monkeypatch):
    """Two layers given the same [2, E] tensor sort it once (the graph and its CSR structure are
    memoised on the tensor); edges changed in place are sorted again, and every output still
    equals PyG's with per-edge features in the caller's order."""
    import gnn_attention.graphs.pyg as pyg_graphs

    calls = []
    sort = pyg_graphs.sorted_graph
    monkeypatch.setattr(pyg_graphs, "sorted_graph", lambda *a: calls.append(1) or sort(*a))
    (ref1, conv1), (ref2, conv2) = pair(edge_dim=F, seed=1), pair(edge_dim=F, seed=2)
    x, ei = torch.randn(N, IN), unsorted_edges(seed=5)
    a = torch.randn(ei.size(1), F)
    for step in range(3):
        if step == 2:  # the same edge set in another order, written in place
            ei.copy_(ei.flip(1))
        out, (ei1, alpha1) = conv1(x, ei, a, return_attention_weights=True)
        out2 = conv2(x, ei, a)
        ref_out, (_, ref_alpha) = ref1(x, ei, a, return_attention_weights=True)
        torch.testing.assert_close(out, ref_out, atol=1e-5, rtol=0)
        torch.testing.assert_close(alpha1, ref_alpha, atol=1e-6, rtol=0)
        torch.testing.assert_close(out2, ref2(x, ei, a), atol=1e-5, rtol=0)
        assert ei1 is ei
    assert len(calls) == 2  # once for the first order, once after the in-place change


def test_graphs_built_per_mini_batch_equal_per_graph_attention():
    """docs/pyg.md's batching rule with a real DataLoader: the TokenGraph is built after collation
    (global attention from ``batch.batch``, k-hop attention from ``batch.edge_index``), and each
    graph's rows equal PyG's TransformerConv on that graph alone (the same edges, listed)."""
    from torch_geometric.data import Data
    from torch_geometric.loader import DataLoader

    from gnn_attention.graphs.pyg import from_batch, k_hop_graph

    g = torch.Generator().manual_seed(7)
    dataset = [Data(x=torch.randn(n, IN, generator=g), num_nodes=n,
                    edge_index=torch.randint(0, n, (2, 2 * n), generator=g))
               for n in (3, 5, 2, 4, 6, 1, 7)]
    ref, conv = pair(edge_dim=None)
    seen = 0
    for batch in DataLoader(dataset, batch_size=3, shuffle=False):
        full = from_batch(batch.batch, num_graphs=batch.num_graphs)
        khop = from_batch(batch.batch, pattern="khop", edge_index=batch.edge_index, k=2)
        out_full, out_khop = conv(batch.x, full), conv(batch.x, khop)
        for b in range(batch.num_graphs):
            data, lo, hi = dataset[seen], int(batch.ptr[b]), int(batch.ptr[b + 1])
            n, seen = data.num_nodes, seen + 1
            all_pairs = torch.cartesian_prod(torch.arange(n), torch.arange(n)).t()
            torch.testing.assert_close(out_full[lo:hi], ref(data.x, all_pairs), atol=1e-5, rtol=0)
            own = k_hop_graph(data.edge_index, 2, ptr=torch.tensor([0, n])).edge_index
            torch.testing.assert_close(out_khop[lo:hi], ref(data.x, own), atol=1e-5, rtol=0)
    assert seen == len(dataset)
