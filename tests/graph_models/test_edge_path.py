"""Edge-path encoding against a slow reference: networkx BFS distances, the BFS-parent rule walked
back pair by pair in Python, and the bias summed edge by edge (forward and gradients)."""
import networkx as nx
import pytest
import torch
from test_encodings import all_pairs, random_batch

from gnn_attention.graph_models.edge_path import EdgePathBias, shortest_path_edges
from gnn_attention.graph_models.graphormer import GraphormerLayer, graphormer_inputs

F, H = 5, 3


def reference_paths(ei, n, pairs, L):
    """The rule, one pair at a time: the last edge of the path j -> i is the lowest-index edge
    u -> i with d(j, u) = d(j, i) - 1; repeat from u. Returns one list of edge ids per pair."""
    G = nx.DiGraph()
    G.add_nodes_from(range(n))
    G.add_edges_from(ei.T.tolist())
    src, dst = ei.tolist()
    out = []
    for j, i in pairs.T.tolist():
        dist = nx.single_source_shortest_path_length(G, j)
        path, cur = [], i
        while cur in dist and cur != j:
            e = min(e for e in range(len(src))
                    if dst[e] == cur and dist.get(src[e], -2) == dist[cur] - 1)
            path.insert(0, e)
            cur = src[e]
        out.append(path[:L])
    return out


def reference_bias(edge_attr, weight, paths):
    rows = []
    for path in paths:
        terms = [edge_attr[e] @ weight[n].t() for n, e in enumerate(path)]  # [H] each
        rows.append(torch.stack(terms).mean(0) if terms else edge_attr.new_zeros(weight.size(1)))
    return torch.stack(rows)


@pytest.mark.parametrize("directed", [False, True])
@pytest.mark.parametrize("L", [1, 2, 20])
def test_paths_follow_the_rule_and_are_shortest(directed, L):
    ei, batch = random_batch(directed=directed, seed=3 + int(directed))
    n = batch.numel()
    pairs = all_pairs(batch)
    pairs = pairs[:, torch.randperm(pairs.size(1), generator=torch.Generator().manual_seed(1))]
    got = shortest_path_edges(ei, n, pairs, L)
    want = reference_paths(ei, n, pairs, L)
    assert got.length.tolist() == [len(p) for p in want]
    assert [row[row >= 0].tolist() for row in got.edges] == want
    if L == 20:  # not truncated: every path is a walk j -> ... -> i of length d(j, i)
        assert (got.length >= 3).any() and (got.length == 0).sum() > n
        for (j, i), row in zip(pairs.T.tolist(), got.edges, strict=True):
            e = row[row >= 0]
            if e.numel():
                assert ei[0, e[0]] == j and ei[1, e[-1]] == i
                assert (ei[1, e[:-1]] == ei[0, e[1:]]).all()


def test_paths_with_duplicate_edges_take_the_lowest_index():
    ei = torch.tensor([[0, 0, 1, 1], [1, 1, 2, 2]])  # 0 -> 1 twice (ids 0, 1), 1 -> 2 twice (2, 3)
    got = shortest_path_edges(ei, 3, torch.tensor([[0, 0, 2], [2, 1, 0]]), 4)
    assert got.edges[:, :2].tolist() == [[0, 2], [0, -1], [-1, -1]]
    assert got.length.tolist() == [2, 1, 0]


def test_bias_matches_reference_forward_and_backward_float64():
    ei, batch = random_batch(seed=5)
    n, L = batch.numel(), 3
    pairs = all_pairs(batch)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(ei.size(1), F, generator=gen, dtype=torch.float64)
    mod = EdgePathBias(F, L, H).double()
    torch.nn.init.normal_(mod.weight)
    xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
    got = mod(xa, shortest_path_edges(ei, n, pairs, L))
    w_ref = mod.weight.detach().clone().requires_grad_()
    want = reference_bias(xb, w_ref, reference_paths(ei, n, pairs, L))
    assert got.shape == (pairs.size(1), H)
    assert (got - want).abs().max() <= 1e-12
    assert (got != 0).any(dim=1).sum() > n  # far pairs and truncated ones are exercised
    g = torch.randn(got.shape, generator=gen, dtype=torch.float64)
    (got * g).sum().backward()
    (want * g).sum().backward()
    assert (xa.grad - xb.grad).abs().max() <= 1e-12
    assert (mod.weight.grad - w_ref.grad).abs().max() <= 1e-12


def test_tree_paths_do_not_depend_on_edge_order():
    """On a tree every shortest path is unique: permuting the edges (and their features) must not
    change the bias."""
    tree = nx.random_labeled_tree(12, seed=0) if hasattr(nx, "random_labeled_tree") else \
        nx.random_tree(12, seed=0)
    und = torch.tensor(list(tree.edges)).T
    ei = torch.cat([und, und.flip(0)], 1)
    n = 12
    pairs = torch.cartesian_prod(torch.arange(n), torch.arange(n)).T
    x = torch.randn(ei.size(1), F)
    mod = EdgePathBias(F, 4, H)
    a = mod(x, shortest_path_edges(ei, n, pairs, 4))
    perm = torch.randperm(ei.size(1), generator=torch.Generator().manual_seed(2))
    b = mod(x[perm], shortest_path_edges(ei[:, perm], n, pairs, 4))
    assert (a - b).abs().max() <= 1e-6


def test_graphormer_layer_adds_the_edge_path_bias():
    ei, batch = random_batch(seed=7)
    n, L, C = batch.numel(), 3, 12
    torch.manual_seed(0)
    layer = GraphormerLayer(C, H, max_distance=L, edge_dim=F)
    torch.nn.init.normal_(layer.edge_path.weight)
    inputs = graphormer_inputs(ei, batch, L, edge_paths=True)
    x, e = torch.randn(n, C), torch.randn(ei.size(1), F)
    want_bias = reference_bias(e, layer.edge_path.weight,
                               reference_paths(ei, n, inputs.graph.edge_index, L))
    got = layer(x, inputs, edge_attr=e)
    layer.edge_path = None  # the same layer without its path bias, given the reference bias
    want = layer(x, inputs, edge_bias=want_bias)
    assert (got - want).abs().max() <= 1e-5
    assert (got - layer(x, inputs)).abs().max() > 1e-3  # the bias matters


def test_bad_inputs_raise_before_work():
    ei, batch = random_batch()
    n = batch.numel()
    with pytest.raises(ValueError, match="max_hops"):
        shortest_path_edges(ei, n, ei, 0)
    with pytest.raises(IndexError):
        shortest_path_edges(ei, n, ei + n, 2)
    with pytest.raises(ValueError, match="pairs"):
        shortest_path_edges(ei, n, ei[0], 2)
    paths = shortest_path_edges(ei, n, ei, 2)
    with pytest.raises(ValueError, match="edge_attr"):
        EdgePathBias(F, 2, H)(torch.randn(ei.size(1), F + 1), paths)
    layer = GraphormerLayer(8, 2, max_distance=2, edge_dim=F)
    with pytest.raises(ValueError, match="edge_paths"):
        layer(torch.randn(n, 8), graphormer_inputs(ei, batch, 2),
              edge_attr=torch.randn(ei.size(1), F))
    with pytest.raises(ValueError, match="edge_attr"):
        layer(torch.randn(n, 8), graphormer_inputs(ei, batch, 2, edge_paths=True))


def test_no_edges_gives_zero_bias():
    paths = shortest_path_edges(torch.zeros(2, 0, dtype=torch.long), 4,
                                torch.tensor([[0, 1], [1, 1]]), 3)
    assert paths.length.tolist() == [0, 0]
    assert EdgePathBias(F, 3, H)(torch.zeros(0, F), paths).abs().max() == 0
