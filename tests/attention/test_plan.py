"""The plan's host-side facts: lengths, tile layout checks, the per-graph memo and ``connect``.

Sizes are distinct (lengths 5 and 7, H=3, D=5).
"""
import torch

from gnn_attention import graphs
from gnn_attention.attention.kernels import plan, tiled


def test_lengths_are_python_ints_and_cached():
    g = graphs.causal([5, 7])
    n = plan.lengths(g)
    assert (n.T, n.S, n.B, n.T_max, n.uniform) == ((5, 7), (5, 7), 2, 7, False)
    assert all(type(t) is int for t in n.T)
    assert plan.lengths(g) is n and g.cache["lengths"] is n


def test_cached_builds_once_per_graph_and_every_call_for_tensors():
    g, calls = graphs.full([5]), []
    build = lambda: calls.append(1) or len(calls)  # noqa: E731
    assert plan.cached(g, "x", build) == 1 and plan.cached(g, "x", build) == 1
    ei = g.edge_index
    assert plan.cached(ei, "x", build) == 2 and plan.cached(ei, "x", build) == 3


def test_tiled_check_names_why_it_cannot_run():
    assert tiled.check(graphs.window([13, 13], 2)) is None
    assert "window graphs only" in tiled.check(graphs.causal([13]))
    assert "equal-length" in tiled.check(graphs.window([13, 8], 2))
    assert "raw edge_index" in tiled.check(graphs.window([13], 2).edge_index)


def test_tiled_pays_off_only_for_narrow_bands():
    assert tiled.worthwhile(graphs.window([512], 16))
    assert not tiled.worthwhile(graphs.window([13], 6))  # the band covers most of T x T


def test_window_params_and_connect():
    assert plan.window_params(graphs.window([7], 3, causal=True, dilation=2)) == (3, True, 2)
    assert plan.window_params(graphs.full([7])) is None
    x = torch.full((3, 2), float("nan"), requires_grad=True)
    z = plan.connect(x, None, torch.full((2,), 6e4, dtype=torch.float16))
    assert z.item() == 0.0  # a NaN or an fp16 overflow in the inputs: still exactly 0
    z.backward()
    assert torch.equal(x.grad, torch.zeros(3, 2))
