"""Conversions: dense masks <-> graphs, set operations and networkx export on implicit graphs."""
import torch

from gnn_attention import graphs as G
from gnn_attention.graphs.convert import from_dense_mask, intersection, to_dense_mask, union
from gnn_attention.graphs.core import TokenGraph


def test_from_dense_mask_is_a_valid_graph():
    mask = torch.rand(3, 5, 7, generator=torch.Generator().manual_seed(2)) < 0.5
    g = from_dense_mask(mask, "sdpa")
    # the unchecked construction passes the full validation
    TokenGraph(g.edge_index, g.num_src, g.num_dst, g.src_ptr, g.dst_ptr, g.rowptr, g.pattern,
               g.bipartite)
    assert g.pattern.name == "dense_mask" and g.edge_perm is None


def test_set_operations_on_implicit_graphs():
    n = [6, 4]
    a, b = G.causal(n), G.window(n, 1, dilation=1)
    assert not a.materialized and not b.materialized
    ma, mb = to_dense_mask(a), to_dense_mask(b)
    assert torch.equal(to_dense_mask(intersection(a, b)), ma & mb)
    assert torch.equal(to_dense_mask(union(a, b)), ma | mb)
    # a structured mask round-trips to the same edges
    back = from_dense_mask(to_dense_mask(G.causal([4, 4])), "sdpa")
    assert torch.equal(back.edge_index, G.causal([4, 4]).edge_index)


def test_to_networkx_on_an_implicit_graph():
    nxg = G.to_networkx(G.cross([2], [3], causal=True))
    assert nxg.number_of_edges() == 1 + 2 + 2  # s <= t, clipped at S = 2
