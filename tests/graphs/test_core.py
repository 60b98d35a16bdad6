"""TokenGraph and from_edge_index: per-edge inputs follow their edges, labels are checked against
the edges, hand-built graphs are validated, bad inputs fail before anything is computed."""
import pytest
import torch

from gnn_attention import graphs as G
from gnn_attention.graphs.core import TokenGraph, from_edge_index, structured_graph
from gnn_attention.graphs.validate import check_edge_attr, check_pattern

# two sequences of 3 and 4 tokens, edges given out of (target, source) order
EDGES = torch.tensor([[4, 0, 2, 1, 5, 0, 6], [6, 2, 1, 0, 3, 0, 5]])


def test_edge_attr_is_permuted_with_the_edges():
    attr = torch.arange(7 * 3, dtype=torch.float).view(7, 3)  # row e belongs to EDGES[:, e]
    g = from_edge_index(EDGES, [3, 4], [3, 4], edge_attr=attr)
    key = g.edge_index[1] * 7 + g.edge_index[0]
    assert torch.equal(key, key.sort().values)
    # each stored row is still the row of the same edge (j, i)
    owner = {(int(j), int(i)): e for e, (j, i) in enumerate(EDGES.t())}
    for k, (j, i) in enumerate(g.edge_index.t().tolist()):
        assert torch.equal(g.edge_attr[k], attr[owner[(j, i)]])
        assert int(g.edge_perm[k]) == owner[(j, i)]
    assert torch.equal(g.edge_index, EDGES[:, g.edge_perm])
    assert g.edge_perm.dtype == torch.int64


def test_tuple_and_dict_edge_attr():
    a, b = torch.randn(7), torch.randn(7, 2, 5)
    g = from_edge_index(EDGES, [3, 4], [3, 4], edge_attr=(a, b))
    assert torch.equal(g.edge_attr[0], a[g.edge_perm]) and torch.equal(g.edge_attr[1], b[g.edge_perm])
    g = from_edge_index(EDGES, [3, 4], [3, 4], edge_attr={"bias": a, "feat": b})
    assert torch.equal(g.edge_attr["feat"], b[g.edge_perm])
    assert torch.equal(g.to("cpu").edge_attr["bias"], a[g.edge_perm])


def test_edge_perm_is_none_exactly_when_already_sorted():
    g = from_edge_index(EDGES, [3, 4], [3, 4])
    assert g.edge_perm is not None and g.edge_attr is None
    attr = torch.randn(7, 2)
    sorted_graph = from_edge_index(g.edge_index, [3, 4], [3, 4], edge_attr=attr)
    assert sorted_graph.edge_perm is None and sorted_graph.edge_attr is attr
    # one swapped pair is a reordering
    swapped = g.edge_index[:, [1, 0, 2, 3, 4, 5, 6]]
    assert from_edge_index(swapped, [3, 4], [3, 4]).edge_perm.tolist()[:2] == [1, 0]
    assert from_edge_index(torch.zeros(2, 0, dtype=torch.long), [2], [2]).edge_perm is None


@pytest.mark.parametrize("attr, error, match", [
    (torch.randn(6, 2), ValueError, "6 rows but edge_index has 7 edges"),
    ((torch.randn(7), torch.randn(5)), ValueError, "5 rows"),
    ({"a": [1.0] * 7}, TypeError, "one row per edge"),
    (torch.tensor(1.0), TypeError, "one row per edge"),
])
def test_bad_edge_attr(attr, error, match):
    with pytest.raises(error, match=match):
        from_edge_index(EDGES, [3, 4], [3, 4], edge_attr=attr)
    check_edge_attr(torch.randn(7, 1), 7)


def test_sequence_counts_must_match():
    with pytest.raises(ValueError, match="src_lengths has 2 sequences, dst_lengths has 1"):
        from_edge_index(torch.tensor([[0], [0]]), [2, 2], [4])


@pytest.mark.parametrize("label, build", [
    (G.Pattern("full"), lambda: G.full([3, 4])),
    (G.Pattern("causal", ("top_left",)), lambda: G.causal([3, 4])),
    (G.Pattern("causal"), lambda: G.causal([3, 4])),  # default alignment, as the kernels read it
    (G.Pattern("causal", ("bottom_right",)), lambda: G.causal([3, 2], "bottom_right", [5, 4])),
    (G.Pattern("window", (2, True, 1)), lambda: G.window([7, 5], 2, causal=True)),
    (G.Pattern("window", (4, False, 2)), lambda: G.window([7, 5], 4, dilation=2)),
    (G.Pattern("cross"), lambda: G.cross([2, 5], [3, 1])),
    (G.Pattern("cross_causal", ("bottom_right",)),
     lambda: G.cross([2, 5], [3, 1], causal=True, align="bottom_right")),
])
def test_true_structured_labels_are_accepted_with_their_predicate(label, build):
    ref = build()
    shuffled = ref.edge_index[:, torch.randperm(ref.num_edges, generator=torch.Generator().manual_seed(1))]
    g = from_edge_index(shuffled, ref.src_lengths, ref.dst_lengths, pattern=label)
    assert g.pattern == ref.pattern and g.pattern.allows is not None
    assert torch.equal(g.edge_index, ref.edge_index)


@pytest.mark.parametrize("label, build, match", [
    (G.Pattern("full"), lambda: G.causal([3, 4]), "sequence 0 has 6 edges where the pattern has 9"),
    (G.Pattern("causal"), lambda: G.full([3, 4]), "sequence 0 has 9 edges where the pattern has 6"),
    # same count, different edges: the predicate check catches it
    (G.Pattern("causal", ("top_left",)), lambda: G.from_predicate([4], lambda t, s, T, S: s >= t),
     r"edge 1 -> 0 \(t=0, s=1\) is not in it"),
    (G.Pattern("causal", ("bottom_right",)),
     lambda: G.from_predicate([3], lambda t, s, T, S: s >= t, src_lengths=[5]),
     r"edge 3 -> 0 \(t=0, s=3\)"),
    (G.Pattern("window", (1, False, 1)), lambda: G.from_predicate(
        [6], lambda t, s, T, S: ((t - s).abs() <= 1) & ~((t == 0) & (s == 1)) | (t == 0) & (s == 5)),
     r"edge 5 -> 0 \(t=0, s=5\)"),
    (G.Pattern("window", (2, False, 1)), lambda: G.cross([4], [4]), "sequence 0 has 16 edges"),
    (G.Pattern("window", (2, False, 1)), lambda: G.cross([4], [3]), "self-attention"),
    (G.Pattern("window", (2,)), lambda: G.window([4], 2), r"params \(w, causal, dilation\)"),
    (G.Pattern("causal", ("middle",)), lambda: G.causal([4]), "align"),
    (G.Pattern("cross"), lambda: G.cross([3, 3], [2, 2], causal=True), "sequence 0 has 3 edges"),
])
def test_false_structured_labels_raise(label, build, match):
    ref = build()
    with pytest.raises(ValueError, match=match or "not the 'causal' pattern"):
        from_edge_index(ref.edge_index, ref.src_lengths, ref.dst_lengths, pattern=label)


def test_other_labels_are_not_checked_and_not_trusted():
    ref = G.causal([4])
    g = from_edge_index(ref.edge_index, [4], [4], pattern=G.Pattern("my_band"))
    assert g.pattern.name == "my_band" and g.pattern.allows is None
    assert from_edge_index(ref.edge_index, [4], [4]).pattern.name == "custom"


def test_check_pattern_fills_canonical_params():
    g = G.causal([4])
    params, allows = check_pattern("causal", (), g.edge_index, g.src_ptr, g.dst_ptr, g.rowptr)
    assert params == ("top_left",) and bool(allows(torch.tensor(1), torch.tensor(0), 4, 4))


def explicit(g):
    """The constructor arguments of ``g`` with its edges held."""
    return [g.edge_index, g.num_src, g.num_dst, g.src_ptr, g.dst_ptr, g.rowptr, g.pattern]


def test_hand_built_graph_is_validated():
    g = G.causal([3, 2])
    args = explicit(g)
    TokenGraph(*args)  # a correct hand-built graph is fine
    unsorted = args.copy()
    unsorted[0] = g.edge_index[:, [1, 0, 2, 3, 4, 5, 6, 7, 8]]
    with pytest.raises(ValueError, match="sorted by \\(target, source\\) without duplicates"):
        TokenGraph(*unsorted)
    dup = args.copy()
    dup[0] = g.edge_index[:, [0, 0, 2, 3, 4, 5, 6, 7, 8]]
    with pytest.raises(ValueError, match="without duplicates"):
        TokenGraph(*dup)
    bad_rowptr = args.copy()
    bad_rowptr[5] = torch.tensor([0, 2, 3, 6, 7, 9])
    with pytest.raises(ValueError, match="rowptr must be the CSR pointers"):
        TokenGraph(*bad_rowptr)
    crossing = G.full([2, 2])
    args = explicit(crossing)
    args[0] = torch.tensor([[0, 1, 2, 0, 1, 3], [0, 0, 1, 2, 2, 3]])  # 2 -> 1 joins sequences
    args[5], args[6] = torch.tensor([0, 2, 3, 5, 6]), G.Pattern("custom")
    with pytest.raises(ValueError, match="two different sequences"):
        TokenGraph(*args)


def test_hand_built_label_and_pointers_are_checked():
    g = G.causal([3, 2])
    args = explicit(g)
    args[6] = G.Pattern("full")
    with pytest.raises(ValueError, match="not the 'full' pattern"):
        TokenGraph(*args)
    args = explicit(g)
    args[3] = torch.tensor([0, 3, 4])
    with pytest.raises(ValueError, match="src_ptr must rise from 0 to 5"):
        TokenGraph(*args)
    args = explicit(g)
    args[0] = g.edge_index.int()
    with pytest.raises(TypeError, match="int64"):
        TokenGraph(*args)
    with pytest.raises(ValueError, match="2 rows but edge_index has 9 edges"):
        TokenGraph(*explicit(g), edge_attr=torch.zeros(2))
    with pytest.raises(ValueError, match="not a structured pattern"):
        structured_graph(G.Pattern("custom"), torch.tensor([3]), torch.tensor([3]), False)


@pytest.mark.parametrize("call, error, match", [
    (lambda: G.full(["3"]), TypeError, "integers"),
    (lambda: G.full("abc"), TypeError, "integers"),
    (lambda: G.full([True, False]), TypeError, "integers"),
    (lambda: G.causal([3, -2]), ValueError, "non-negative"),
    (lambda: G.cross([2.0], [3]), TypeError, "integers"),
])
def test_lengths_must_be_non_negative_integers(call, error, match):
    with pytest.raises(error, match=match):
        call()
