"""Token graphs: builders against hand-built dense masks, invariants, conversions, errors."""
import networkx as nx
import pytest
import torch

from gnn_attention import graphs as G

LENGTHS = [5, 1, 7, 0, 3]  # pairwise distinct, with an empty and a one-token sequence


def dense_blocks(lengths, block):
    """[B, T_max, T_max] mask from a per-sequence rule block(T) -> [T, T] bool (SDPA convention)."""
    T = max(lengths)
    out = torch.zeros(len(lengths), T, T, dtype=torch.bool)
    for b, n in enumerate(lengths):
        out[b, :n, :n] = block(n)
    return out


def positions(n, m=None):
    m = n if m is None else m
    return torch.arange(n).view(-1, 1), torch.arange(m).view(1, -1)


def test_causal_tiny_by_hand():
    g = G.causal([3, 2])
    assert g.edge_index.tolist() == [[0, 0, 1, 0, 1, 2, 3, 3, 4], [0, 1, 1, 2, 2, 2, 3, 4, 4]]
    assert g.rowptr.tolist() == [0, 1, 3, 6, 7, 9]
    assert g.src_ptr.tolist() == g.dst_ptr.tolist() == [0, 3, 5]


def test_window_dilated_tiny_by_hand():
    g = G.window([5], w=2, dilation=2)
    # target t attends to s with |t - s| <= 2 and even distance
    assert g.edge_index.tolist() == [[0, 2, 1, 3, 0, 2, 4, 1, 3, 2, 4], [0, 0, 1, 1, 2, 2, 2, 3, 3, 4, 4]]


@pytest.mark.parametrize("name, build, block", [
    ("full", lambda n: G.full(n), lambda T: torch.ones(T, T, dtype=torch.bool)),
    ("causal", lambda n: G.causal(n), lambda T: torch.ones(T, T, dtype=torch.bool).tril()),
    ("causal_br", lambda n: G.causal(n, align="bottom_right"),
     lambda T: torch.ones(T, T, dtype=torch.bool).tril()),
    ("window", lambda n: G.window(n, 2), lambda T: (lambda t, s: (t - s).abs() <= 2)(*positions(T))),
    ("window_causal", lambda n: G.window(n, 3, causal=True),
     lambda T: (lambda t, s: (t - s <= 3) & (s <= t))(*positions(T))),
    ("window_dilated", lambda n: G.window(n, 4, dilation=2),
     lambda T: (lambda t, s: ((t - s).abs() <= 4) & ((t - s) % 2 == 0))(*positions(T))),
    ("window_dilated_causal", lambda n: G.window(n, 5, causal=True, dilation=3),
     lambda T: (lambda t, s: (t - s <= 5) & (s <= t) & ((t - s) % 3 == 0))(*positions(T))),
])
def test_builder_edges_equal_dense_mask(name, build, block):
    g = build(LENGTHS)
    expected = dense_blocks(LENGTHS, block)
    assert torch.equal(G.to_dense_mask(g), expected)
    assert torch.equal(G.to_dense_mask(g, "mha"), ~expected)
    # the predicate the graph carries describes the same edges
    for b, n in enumerate(LENGTHS):
        t, s = positions(n)
        if n:
            allowed = g.pattern.allows(t, s, torch.tensor(n), torch.tensor(n)).expand(n, n)
            assert torch.equal(allowed, expected[b, :n, :n]), name


@pytest.mark.parametrize("causal, align", [(False, "top_left"), (True, "top_left"), (True, "bottom_right")])
def test_cross_and_rectangular_causal_equal_dense_mask(causal, align):
    src, dst = [7, 2, 4, 0], [3, 5, 4, 2]
    g = G.cross(src, dst, causal=causal, align=align)
    mask = G.to_dense_mask(g)
    assert g.bipartite and mask.shape == (4, 5, 7)
    for b, (S, T) in enumerate(zip(src, dst)):
        t, s = positions(T, S)
        if not causal:
            block = torch.ones(T, S, dtype=torch.bool)
        else:
            block = (s <= t + (S - T if align == "bottom_right" else 0)).expand(T, S)
        assert torch.equal(mask[b, :T, :S], block)
        assert not mask[b, T:].any() and not mask[b, :, S:].any()
    if causal:  # causal() with src_lengths builds the same rectangular pattern
        assert torch.equal(G.causal(dst, align=align, src_lengths=src).edge_index, g.edge_index)


@pytest.mark.parametrize("build", [
    lambda: G.full(LENGTHS), lambda: G.causal(LENGTHS), lambda: G.window(LENGTHS, 1, dilation=1),
    lambda: G.cross([4, 6, 1, 2, 2], LENGTHS), lambda: G.window(LENGTHS, 3, causal=True, dilation=2),
])
def test_invariants_sorted_csr_and_no_cross_sequence_edge(build):
    g = build()
    src, dst = g.edge_index
    assert g.edge_index.dtype == torch.int64 and g.edge_index.shape == (2, g.num_edges)
    key = dst * g.num_src + src
    assert torch.equal(key, key.sort().values) and key.unique().numel() == key.numel()
    assert torch.equal(g.rowptr, torch.cat([torch.zeros(1, dtype=torch.long),
                                            torch.bincount(dst, minlength=g.num_dst).cumsum(0)]))
    seq_s = torch.searchsorted(g.src_ptr, src, right=True) - 1
    seq_d = torch.searchsorted(g.dst_ptr, dst, right=True) - 1
    assert torch.equal(seq_s, seq_d)


def test_dense_mask_round_trip_both_conventions():
    gen = torch.Generator().manual_seed(0)
    mask = torch.rand(3, 5, 7, generator=gen) < 0.4
    for convention, m in (("sdpa", mask), ("mha", ~mask)):
        g = G.from_dense_mask(m, convention)
        assert (g.num_dst, g.num_src, g.batch_size) == (15, 21, 3)
        assert torch.equal(G.to_dense_mask(g), mask)
        assert torch.equal(g.rowptr.diff(), mask.sum(-1).flatten())
    g2 = G.from_dense_mask(mask[0], "sdpa")  # [T, S] is one sequence
    assert torch.equal(G.to_dense_mask(g2)[0], mask[0])


def test_intersection_and_union_follow_mask_logic():
    n = [9, 4]
    a, b = G.causal(n), G.window(n, 2)
    ma, mb = G.to_dense_mask(a), G.to_dense_mask(b)
    i, u = G.intersection(a, b), G.union(a, b)
    assert torch.equal(G.to_dense_mask(i), ma & mb)
    assert torch.equal(G.to_dense_mask(u), ma | mb)
    t, s = positions(9)
    assert torch.equal(i.pattern.allows(t, s, 9, 9), (s <= t) & ((t - s).abs() <= 2))
    with pytest.raises(ValueError, match="different sequences"):
        G.union(G.full([3]), G.full([4]))


def test_from_predicate_and_from_edge_index():
    global_tokens = lambda t, s, T, S: (s == 0) | (t == 0) | ((t - s).abs() <= 1)  # noqa: E731
    g = G.from_predicate([6, 3], global_tokens)
    t, s = positions(6)
    assert torch.equal(G.to_dense_mask(g)[0], global_tokens(t, s, 6, 6))
    shuffled = g.edge_index[:, torch.randperm(g.num_edges)]
    g2 = G.from_edge_index(shuffled, [6, 3], [6, 3])
    assert torch.equal(g2.edge_index, g.edge_index)
    with pytest.raises(ValueError, match="between two different sequences"):
        G.from_edge_index(torch.tensor([[0], [4]]), [3, 3], [3, 3])


def test_empty_graphs():
    for g in (G.full([]), G.causal([0, 0]), G.cross([0], [3])):
        assert g.edge_index.shape == (2, 0) and g.rowptr.numel() == g.num_dst + 1
    assert G.to_dense_mask(G.full([])).shape == (0, 0, 0)


def test_pyg_types_and_networkx():
    from torch_geometric import EdgeIndex

    g = G.causal([3, 2])
    ei = g.as_edge_index()
    assert isinstance(ei, EdgeIndex) and ei.sparse_size() == (5, 5) and ei.is_sorted_by_col
    assert g.to_pyg().num_nodes == 5
    h = G.cross([2], [3]).to_pyg()
    assert h["src", "attends", "dst"].edge_index.shape == (2, 6)
    w = torch.arange(9, dtype=torch.float)
    nxg = G.to_networkx(g, edge_weight=w, labels=list("abcde"))
    assert isinstance(nxg, nx.DiGraph) and nxg.number_of_nodes() == 5 and nxg.number_of_edges() == 9
    assert nxg.edges[0, 2]["weight"] == 3.0 and nxg.nodes[4]["label"] == "e"
    bip = G.to_networkx(G.cross([2], [3]))
    assert bip.has_edge(("src", 1), ("dst", 0)) and bip.nodes[("dst", 2)]["bipartite"] == 1


def test_graph_to_device_keeps_edges():
    g = G.window([4], 1)
    g.cache["plan"] = object()
    h = g.to("cpu")
    assert torch.equal(h.edge_index, g.edge_index) and h.cache == {}
    assert "window" in repr(g)


@pytest.mark.parametrize("call, error, match", [
    (lambda: G.full([3, -1]), ValueError, "non-negative"),
    (lambda: G.full([2.5]), TypeError, "integers"),
    (lambda: G.full([[1, 2]]), ValueError, "1-D"),
    (lambda: G.causal([3], align="middle"), ValueError, "align"),
    (lambda: G.causal([3], src_lengths=[3, 4]), ValueError, "sequences"),
    (lambda: G.window([3], -1), ValueError, "w >= 0"),
    (lambda: G.window([3], 2, dilation=0), ValueError, "dilation >= 1"),
    (lambda: G.cross([3], [3, 4]), ValueError, "sequences"),
    (lambda: G.from_dense_mask(torch.ones(2, 2), "sdpa"), TypeError, "bool"),
    (lambda: G.from_dense_mask(torch.ones(2, 2, 2, 2, dtype=torch.bool), "sdpa"), ValueError, "shape"),
    (lambda: G.from_dense_mask(torch.ones(2, 2, dtype=torch.bool), "pytorch"), ValueError, "convention"),
    (lambda: G.check_edge_index(torch.zeros(2, 3), 4, 4), TypeError, "integer dtype"),
    (lambda: G.check_edge_index(torch.zeros(3, 3, dtype=torch.long), 4, 4), ValueError, r"\[2, E\]"),
    (lambda: G.check_edge_index(torch.tensor([[0, 4], [0, 0]]), 4, 4), IndexError, "out of range"),
    (lambda: G.check_edge_index(torch.tensor([[0, -1], [0, 0]]), 4, 4), IndexError, "out of range"),
    # degenerate arguments: rejected, never rounded or taken by truthiness
    (lambda: G.window([3], 2, dilation=1.5), TypeError, "window dilation must be an integer"),
    (lambda: G.window([3], 2.5), TypeError, "window w must be an integer"),
    (lambda: G.window([3], True), TypeError, "window w must be an integer"),
    (lambda: G.window([3], 2, causal="no"), TypeError, "window causal must be True or False"),
    (lambda: G.window([3], 2, causal=1), TypeError, "True or False"),
    (lambda: G.cross([3], [3], causal="yes"), TypeError, "cross causal must be True or False"),
    (lambda: G.cross([3], [3], align="middle"), ValueError, "align"),
    (lambda: G.from_predicate([3], lambda t, s, T, S: (t - s).abs()), TypeError, "bool tensor"),
    (lambda: G.from_predicate([3], lambda t, s, T, S: (s <= t).float()), TypeError, "float32"),
    (lambda: G.from_predicate([3], lambda t, s, T, S: torch.ones(2, 2, dtype=torch.bool)),
     ValueError, r"broadcast to \[3, 3\]"),
    (lambda: G.from_predicate([3], lambda t, s, T, S: s <= t, src_lengths=[3, 3]), ValueError,
     "sequences"),
    (lambda: G.bigbird([5], w=1.5), TypeError, "bigbird w must be an integer"),
    (lambda: G.bigbird([5], block=0), ValueError, "bigbird block must be >= 1"),
    (lambda: G.bigbird([5], global_tokens=(0.5,)), TypeError, "global token"),
    (lambda: G.padded_cross(torch.tensor([2]), 2.0), TypeError, "S_max must be an integer"),
    (lambda: G.incremental_causal(2, -1), ValueError, "L must be >= 0"),
])
def test_bad_input_gets_a_clear_error(call, error, match):
    with pytest.raises(error, match=match):
        call()


def test_from_predicate_in_row_blocks_equals_one_block(monkeypatch):
    from gnn_attention.graphs import builders

    rule = lambda t, s, T, S: ((t - s) % 3 == 0) | (s == S - 1)  # noqa: E731
    whole = G.from_predicate([7, 0, 5], rule, src_lengths=[4, 2, 6])
    monkeypatch.setattr(builders, "PREDICATE_PAIRS", 5)  # 1-row blocks
    blocks = G.from_predicate([7, 0, 5], rule, src_lengths=[4, 2, 6])
    assert torch.equal(blocks.edge_index, whole.edge_index) and blocks.edge_perm is None


def test_from_predicate_stops_at_the_memory_limit(monkeypatch):
    monkeypatch.setenv("GNN_ATTENTION_MEMORY_LIMIT", "1KiB")
    with pytest.raises(G.MemoryLimitError, match="from_predicate"):
        G.from_predicate([10], lambda t, s, T, S: s <= t)  # 55 edges x 64 bytes > 1 KiB
    with pytest.raises(G.MemoryLimitError, match="sorting 100 edges"):
        G.from_edge_index(torch.zeros(2, 100, dtype=torch.long), [1], [1])
