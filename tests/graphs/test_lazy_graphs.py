"""Implicit structured graphs: built in O(B) from pattern + lengths, edges only when asked, and then
exactly the edges a direct per-position loop gives (sorted by (target, source))."""
import random

import pytest
import torch

from gnn_attention import graphs as G
from gnn_attention.graphs import structured
from gnn_attention.graphs.budget import ENV_VAR, MemoryLimitError

LENGTHS = [5, 1, 7, 0, 3]


def reference_edges(src_len, dst_len, rule):
    """Edges j -> i of a disjoint union from ``rule(t, s, T, S) -> bool`` (python ints), in
    (target, source) order, and the CSR pointers: the direct definition, position by position."""
    src, dst, rowptr, s0, d0 = [], [], [0], 0, 0
    for S, T in zip(src_len, dst_len):
        for t in range(T):
            for s in range(S):
                if rule(t, s, T, S):
                    src.append(s0 + s)
                    dst.append(d0 + t)
            rowptr.append(len(src))
        s0, d0 = s0 + S, d0 + T
    return torch.tensor([src, dst], dtype=torch.long).view(2, -1), torch.tensor(rowptr)


RULES = {
    "full": lambda t, s, T, S: True,
    "causal_tl": lambda t, s, T, S: s <= t,
    "causal_br": lambda t, s, T, S: s <= t + S - T,
}


BY_ALIGN = {"top_left": RULES["causal_tl"], "bottom_right": RULES["causal_br"]}


def window_rule(w, causal, d):
    return lambda t, s, T, S: abs(t - s) <= w and (t - s) % d == 0 and (s <= t or not causal)


CASES = [
    ("full", lambda n: G.full(n), RULES["full"], None),
    ("causal", lambda n: G.causal(n), RULES["causal_tl"], None),
    ("causal_br", lambda n: G.causal(n, align="bottom_right"), RULES["causal_br"], None),
    ("window", lambda n: G.window(n, 2), window_rule(2, False, 1), None),
    ("window_causal_dilated", lambda n: G.window(n, 5, causal=True, dilation=3),
     window_rule(5, True, 3), None),
    ("window_dilation_over_w", lambda n: G.window(n, 1, dilation=2), window_rule(1, False, 2), None),
    ("cross", lambda n: G.cross([4, 6, 1, 2, 2], n), RULES["full"], [4, 6, 1, 2, 2]),
    ("cross_causal_tl", lambda n: G.cross([4, 6, 1, 2, 2], n, causal=True), RULES["causal_tl"],
     [4, 6, 1, 2, 2]),
    ("cross_causal_br", lambda n: G.cross([4, 6, 1, 2, 2], n, causal=True, align="bottom_right"),
     RULES["causal_br"], [4, 6, 1, 2, 2]),
    ("rect_causal", lambda n: G.causal(n, align="bottom_right", src_lengths=[2, 9, 0, 3, 1]),
     RULES["causal_br"], [2, 9, 0, 3, 1]),
]


@pytest.mark.parametrize("name, build, rule, src", CASES, ids=[c[0] for c in CASES])
def test_implicit_until_asked_then_the_reference_edges(name, build, rule, src):
    g = build(LENGTHS)
    assert not g.materialized
    ei, rowptr = reference_edges(src or LENGTHS, LENGTHS, rule)
    # cheap facts first: none of them builds an edge
    assert g.num_edges == ei.size(1), name
    assert torch.equal(g.in_degree(), rowptr.diff())
    assert torch.equal(g.rowptr, rowptr) and not g.materialized
    assert f"edges={ei.size(1)}" in repr(g) and not g.materialized
    assert g.edge_index.dtype == torch.int64 and torch.equal(g.edge_index, ei)
    assert g.materialized and g.edge_index is g.edge_index  # memoised


def test_random_lengths_match_the_reference():
    rng = random.Random(0)
    for _ in range(25):
        B = rng.randint(1, 4)
        n = [rng.choice([0, 1, 2, 3, 5, 8, 13]) for _ in range(B)]
        m = [rng.choice([0, 1, 2, 4, 7, 11]) for _ in range(B)]
        w, d, c = rng.randint(0, 6), rng.randint(1, 4), rng.random() < 0.5
        align = rng.choice(["top_left", "bottom_right"])
        cases = [(G.window(n, w, causal=c, dilation=d), window_rule(w, c, d), n),
                 (G.causal(n, align=align, src_lengths=m), BY_ALIGN[align], m),
                 (G.cross(m, n), RULES["full"], m), (G.full(n), RULES["full"], n)]
        for g, rule, src in cases:
            ei, rowptr = reference_edges(src, n, rule)
            assert g.num_edges == ei.size(1), (g, n, m, w, d, c)
            assert torch.equal(g.in_degree(), rowptr.diff())
            assert torch.equal(g.edge_index, ei) and torch.equal(g.rowptr, rowptr), (g, n, m)


def test_edge_counts_closed_form_equal_the_ranges():
    """O(B) counts against the O(N) per-target counts for many sizes, including T != S."""
    T = torch.arange(0, 40)
    for S in (torch.arange(0, 40), torch.arange(39, -1, -1), torch.full((40,), 3)):
        for name, params in (("full", ()), ("causal", ("top_left",)), ("causal", ("bottom_right",)),
                             ("cross_causal", ("bottom_right",)), ("cross", ())):
            counts = structured.edge_counts(name, params, S, T)
            per_target = structured.ranges(name, params, S, T)[1]
            seq = torch.repeat_interleave(torch.arange(40), T)
            assert torch.equal(counts, torch.zeros(40, dtype=torch.long).index_add_(
                0, seq, per_target)), (name, params)
    for w in range(0, 9):
        for d in range(1, 5):
            for c in (False, True):
                counts = structured.edge_counts("window", (w, c, d), T, T)
                ref = [reference_edges([t], [t], window_rule(w, c, d))[0].size(1) for t in range(40)]
                assert counts.tolist() == ref, (w, d, c)


def test_materialise_in_chunks_equals_one_piece(monkeypatch):
    whole = G.window([37, 5], 4, dilation=2).edge_index
    monkeypatch.setattr(structured, "CHUNK", 7)  # many chunks, one ending mid-target
    assert torch.equal(G.window([37, 5], 4, dilation=2).edge_index, whole)


def test_long_sequences_build_without_edges():
    g = G.causal([16384])
    assert not g.materialized and g.num_edges == 16384 * 16385 // 2
    assert G.window([16384] * 8, 64).num_edges == 8 * (16384 * 129 - 64 * 65)
    assert G.full([40000]).num_edges == 40000 ** 2  # 1.6e9 edges: nothing allocated


def test_materialising_past_the_memory_limit_raises_before_allocating(monkeypatch):
    g = G.full([40000])  # would be 1.6e9 int64 edge pairs (25.6 GB) plus a temporary
    with pytest.raises(MemoryLimitError, match=r"materialising the 1600000000 edges .* over the "
                                                r"limit of 8\.0 GiB"):
        g.edge_index
    assert not g.materialized
    monkeypatch.setenv(ENV_VAR, "2KiB")
    with pytest.raises(MemoryLimitError, match=ENV_VAR):
        G.causal([20]).edge_index  # 210 edges x 24 bytes > 2 KiB
    assert G.causal([10]).edge_index.size(1) == 55  # 55 x 24 bytes < 2 KiB


def test_to_device_keeps_an_implicit_graph_implicit():
    g = G.window([6, 4], 2)
    h = g.to("cpu")
    assert not h.materialized and h.num_edges == g.num_edges and h.pattern == g.pattern
    assert torch.equal(h.edge_index, g.edge_index)


def test_graphs_are_immutable():
    g = G.causal([3])
    with pytest.raises(AttributeError, match="immutable"):
        g.edge_index = torch.zeros(2, 0, dtype=torch.long)
    with pytest.raises(AttributeError, match="immutable"):
        g.pattern = G.Pattern("full")
