"""Composed builders: BigBird (window + global + random blocks), a padded cross graph, one
decoding step, each against its definition."""
import pytest
import torch

from gnn_attention import graphs as G
from gnn_attention.graphs.composite import bigbird, incremental_causal, padded_cross


def blocks_of(mask, block):
    """``[nb, nb]`` True where a (query block, key block) pair is entirely allowed."""
    T = mask.size(0)
    nb = -(-T // block)
    out = torch.zeros(nb, nb, dtype=torch.bool)
    for a in range(nb):
        for b in range(nb):
            out[a, b] = bool(mask[a * block:(a + 1) * block, b * block:(b + 1) * block].all())
    return out


def test_bigbird_random_blocks_per_query_block():
    # no window, no global token: exactly random_blocks fully allowed key blocks per query block,
    # plus the diagonal (t == s, |t - s| <= 0)
    g = bigbird([10], w=0, global_tokens=(), block=2, random_blocks=2, seed=3)
    mask = G.to_dense_mask(g)[0]
    assert torch.equal(blocks_of(mask, 2).sum(1), torch.full((5,), 2))
    assert bool(mask.diagonal().all())
    other = G.to_dense_mask(bigbird([10], w=0, global_tokens=(), block=2, random_blocks=2, seed=4))
    assert torch.equal(G.to_dense_mask(bigbird([10], 0, (), 2, 2, seed=3))[0], mask)  # seeded
    assert not torch.equal(other[0], mask)


def test_bigbird_window_and_global_tokens():
    lengths = [7, 3]
    g = bigbird(lengths, w=1, global_tokens=(0, 5), block=3, random_blocks=0)
    mask = G.to_dense_mask(g)
    for b, T in enumerate(lengths):
        t, s = torch.arange(T).view(-1, 1), torch.arange(T).view(1, -1)
        glob = torch.tensor([p for p in (0, 5) if p < T])  # positions past T are ignored
        want = ((t - s).abs() <= 1) | torch.isin(t, glob) | torch.isin(s, glob)
        assert torch.equal(mask[b, :T, :T], want), b
    assert g.pattern.name == "bigbird" and g.num_edges == int(mask.sum())


def test_padded_cross_by_hand():
    g = padded_cross(torch.tensor([2, 0, 3]), S_max=4)
    assert g.edge_index.tolist() == [[0, 1, 8, 9, 10], [0, 0, 2, 2, 2]]
    assert g.rowptr.tolist() == [0, 2, 2, 5]
    assert (g.num_src, g.num_dst, g.bipartite) == (12, 3, True)
    assert g.src_ptr.tolist() == [0, 4, 8, 12] and g.dst_ptr.tolist() == [0, 1, 2, 3]
    with pytest.raises(ValueError, match="exceed the memory length 2"):
        padded_cross(torch.tensor([1, 3]), S_max=2)


def test_incremental_causal_is_the_last_row_of_causal():
    B, L = 3, 4
    g = incremental_causal(B, L)
    assert not g.materialized and g.num_edges == B * (L + 1) and g.bipartite
    full = G.causal([L + 1] * B)
    last = full.edge_index[:, full.edge_index[1] % (L + 1) == L]  # the query at position L
    assert torch.equal(g.edge_index[0], last[0]) and torch.equal(g.edge_index[1], last[1] // (L + 1))
    assert incremental_causal(2, 0).edge_index.tolist() == [[0, 1], [0, 1]]
