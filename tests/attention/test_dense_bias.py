"""The dense kernel's per-edge bias: on complete blocks of equal lengths the bias is read as the
``[B, T, S, Hb]`` mask directly (edges are sorted by (b, t, s)); elsewhere it is scattered into a
-inf mask. Both against the reference, with asymmetric per-head biases and T != S."""
import pytest
import torch

from gnn_attention import graphs
from gnn_attention.attention.functional import graph_attention


def _case(graph, Hb, seed=0):
    g = torch.Generator().manual_seed(seed)
    H, D = 3, 4
    q = torch.randn(graph.num_dst, H, D, generator=g, dtype=torch.float64, requires_grad=True)
    k = torch.randn(graph.num_src, H, D, generator=g, dtype=torch.float64, requires_grad=True)
    v = torch.randn(graph.num_src, H, 5, generator=g, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(graph.num_edges, Hb, generator=g, dtype=torch.float64, requires_grad=True)
    return q, k, v, bias


@pytest.mark.parametrize("make", [
    lambda: graphs.full([4, 4, 4]),
    lambda: graphs.cross([6, 6], [3, 3]),             # T != S, equal lengths: the direct view
    lambda: graphs.cross([6, 2], [3, 5]),             # ragged: the scatter
    lambda: graphs.causal([5, 5]),                    # causal blocks: the scatter
])
@pytest.mark.parametrize("Hb", [1, 3])
def test_dense_bias_equals_reference(make, Hb):
    graph = make()
    q, k, v, bias = _case(graph, Hb)
    out = graph_attention(q, k, v, graph, edge_bias=bias, backend="dense")
    ref = graph_attention(q, k, v, graph, edge_bias=bias, backend="reference")
    torch.testing.assert_close(out, ref, atol=1e-12, rtol=1e-12)
    w = torch.randn(out.shape, generator=torch.Generator().manual_seed(3), dtype=out.dtype)
    grads = torch.autograd.grad((out * w).sum(), (q, k, v, bias))
    grads_ref = torch.autograd.grad((ref * w).sum(), (q, k, v, bias))
    for a, b in zip(grads, grads_ref):
        torch.testing.assert_close(a, b, atol=1e-12, rtol=1e-12)


def test_the_direct_view_builds_no_edge():
    graph = graphs.cross([6, 6], [3, 3])
    q, k, v, bias = _case(graph, 1)
    graph_attention(q, k, v, graph, edge_bias=bias, backend="dense")
    assert not graph.materialized
