"""Per-edge values -> dense [B, H, T, S] maps, against a direct loop over the edges."""
import pytest
import torch

from gnn_attention import graphs as G
from gnn_attention.graphs.dense import edges_to_dense


def loop_dense(g, alpha, T, S, fill):
    """The definition: alpha of edge j -> i lands at [b, h, t_i, s_j]."""
    H = alpha.size(1)
    out = torch.full((g.batch_size, H, T, S), fill, dtype=alpha.dtype)
    src_ptr, dst_ptr = g.src_ptr.tolist(), g.dst_ptr.tolist()
    for e, (j, i) in enumerate(g.edge_index.t().tolist()):
        b = max(k for k in range(g.batch_size) if dst_ptr[k] <= i < dst_ptr[k + 1])
        out[b, :, i - dst_ptr[b], j - src_ptr[b]] = alpha[e]
    return out


@pytest.mark.parametrize("build", [
    lambda: G.cross([4, 1, 6], [2, 3, 5], causal=True, align="bottom_right"),
    lambda: G.window([5, 0, 7], 2, dilation=2),
    lambda: G.from_predicate([3, 5], lambda t, s, T, S: (t + s) % 2 == 0, src_lengths=[7, 2]),
])
def test_edges_to_dense_against_a_loop(build):
    g = build()
    alpha = torch.randn(g.num_edges, 3, generator=torch.Generator().manual_seed(0))
    T, S = int(g.dst_lengths.max()), int(g.src_lengths.max())
    dense = edges_to_dense(g, alpha, fill=-1.0)
    assert dense.shape == (g.batch_size, 3, T, S)
    assert torch.equal(dense, loop_dense(g, alpha, T, S, -1.0))
    # one value per edge: [B, T, S]; wider padding on request
    assert torch.equal(edges_to_dense(g, alpha[:, 1]), loop_dense(g, alpha, T, S, 0.0)[:, 1])
    assert edges_to_dense(g, alpha, T=T + 2, S=S + 3).shape == (g.batch_size, 3, T + 2, S + 3)


def test_edges_to_dense_wrong_rows():
    with pytest.raises(ValueError, match="alpha has 2 rows but the graph has 3 edges"):
        edges_to_dense(G.causal([2]), torch.ones(2))
