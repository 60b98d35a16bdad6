"""Attention dropout in the dense kernel (SDPA's ``dropout_p``) against the graph's own weights.

Notation: alpha_ij the softmax weight of edge j -> i without dropout, p the dropout rate,
w_ij the weight actually used. Exact claim checked: w_ij is 0 or alpha_ij / (1 - p) on every edge,
exactly 0 off the graph, and out = sum_j w_ij v_j forward and backward with the same mask.
The mask itself comes from SDPA's random stream; its rate is checked statistically (p = 0.5 over
~3,000 weights: a 7-sigma band). Sizes: H=3, D=5, lengths distinct and ragged.
"""
import pytest
import torch

from gnn_attention import graphs
from gnn_attention.attention.functional import graph_attention
from gnn_attention.attention.kernels import choose

H, D, P = 3, 5, 0.5

GRAPHS = {
    "full": lambda: graphs.full([5, 9, 13]),
    "causal": lambda: graphs.causal([6, 11, 3]),
    "cross": lambda: graphs.cross([7, 12, 4], [5, 9, 8]),
    "causal_equal": lambda: graphs.causal([8, 8]),
}


def _dense_weights(g, alpha):
    """``alpha [E, H]`` -> ``[N_dst, H, N_src]``, zero off the graph."""
    w = alpha.new_zeros(g.num_dst, H, g.num_src)
    w[g.edge_index[1], :, g.edge_index[0]] = alpha
    return w


@pytest.mark.parametrize("name", sorted(GRAPHS))
def test_dense_dropout_weights_are_zero_or_rescaled_and_consistent(name):
    g = GRAPHS[name]()
    assert choose(g, dropout_p=P) == "dense"
    torch.manual_seed(0)
    q, k = torch.randn(g.num_dst, H, D), torch.randn(g.num_src, H, D)
    _, alpha = graph_attention(q, k, torch.randn(g.num_src, H, D), g, backend="reference",
                               return_attention_weights=True)
    ref = _dense_weights(g, alpha)
    # v = one-hot of the source node: the output row of target i is its weight vector w_i.
    onehot = torch.eye(g.num_src).unsqueeze(1).expand(g.num_src, H, g.num_src)
    torch.manual_seed(1)
    w = graph_attention(q, k, onehot, g, dropout_p=P)
    assert not w.isnan().any()
    kept = w != 0
    assert torch.equal(kept & (ref == 0), torch.zeros_like(kept))  # nothing off the graph
    assert (w[kept] - ref[kept] / (1 - P)).abs().max() <= 1e-5
    on_edges = ref != 0
    rate = 1 - (kept & on_edges).sum().item() / on_edges.sum().item()
    n = on_edges.sum().item()
    assert abs(rate - P) <= 7 * (P * (1 - P) / n) ** 0.5, (rate, n)

    # The same seed gives the same mask: out and its gradients are the weights times v exactly.
    v = torch.randn(g.num_src, H, 7, requires_grad=True)
    qg, kg = q.clone().requires_grad_(), k.clone().requires_grad_()
    torch.manual_seed(1)
    out = graph_attention(qg, kg, v, g, dropout_p=P)
    expect = torch.einsum("ihj,jhd->ihd", w, v)
    assert (out - expect).abs().max() <= 1e-5
    grad_out = torch.randn_like(out)
    gv, = torch.autograd.grad(out, v, grad_out, retain_graph=True)
    assert (gv - torch.einsum("ihj,ihd->jhd", w, grad_out)).abs().max() <= 1e-4
    gq, = torch.autograd.grad(out, qg, grad_out)
    assert not gq.isnan().any()


def test_dense_dropout_keeps_empty_rows_zero():
    g = graphs.cross([4, 0, 6], [3, 5, 2])  # sources, targets: the 5 targets of b=1 see nothing
    torch.manual_seed(0)
    q, k, v = torch.randn(g.num_dst, H, D), torch.randn(g.num_src, H, D), torch.randn(g.num_src, H, D)
    out = graph_attention(q, k, v, g, dropout_p=P)
    assert not out.isnan().any() and torch.equal(out[3:8], torch.zeros(5, H, D))


def test_dropout_elsewhere_runs_the_reference():
    g = graphs.window([512], 16)
    assert choose(g) == "tiled" and choose(g, dropout_p=0.1) == "reference"
    assert choose(graphs.causal([5]).edge_index, dropout_p=0.1) == "reference"
    # Returned weights must be the dropped ones: out = sum_j alpha_ij v_j with the returned alpha.
    g = graphs.causal([6, 9])
    torch.manual_seed(0)
    q, k, v = torch.randn(g.num_dst, H, D), torch.randn(g.num_src, H, D), torch.randn(g.num_src, H, D)
    out, alpha = graph_attention(q, k, v, g, dropout_p=P, return_attention_weights=True)
    assert (alpha == 0).any()
    expect = torch.einsum("ihj,jhd->ihd", _dense_weights(g, alpha), v)
    assert (out - expect).abs().max() <= 1e-5
