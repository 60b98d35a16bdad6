"""Edge-set builders: exact edge sets on small cases, no edge ever crosses graphs, the typed union
keeps each edge's membership aligned with the graph's own (sorted) edges."""
import pytest
import torch

from gnn_attention.graph_models.edge_sets import (
    all_pairs,
    expander,
    graph_edges,
    graph_sizes,
    k_hop,
    typed_union,
    virtual_nodes,
)

BATCH = torch.tensor([0] * 5 + [1] * 7 + [2] * 3)  # sizes 5, 7, 3


def path_edges(batch):
    """A path inside each graph, both directions."""
    same = batch[1:] == batch[:-1]
    j = torch.arange(batch.numel() - 1)[same]
    return torch.cat([torch.stack([j, j + 1]), torch.stack([j + 1, j])], 1)


def assert_within_graphs(ei, batch):
    assert bool((batch[ei[0]] == batch[ei[1]]).all())


def as_set(ei):
    return set(map(tuple, ei.T.tolist()))


def test_all_pairs_is_every_pair_of_each_graph():
    ei = all_pairs(BATCH)
    want = {(j, i) for j in range(15) for i in range(15) if BATCH[j] == BATCH[i]}
    assert as_set(ei) == want and ei.size(1) == 25 + 49 + 9
    key = ei[1] * 15 + ei[0]
    assert bool((key[1:] > key[:-1]).all())  # sorted by (target, source), no repeats
    assert as_set(all_pairs(BATCH, self_loops=False)) == {p for p in want if p[0] != p[1]}


def test_k_hop_on_paths():
    ei = path_edges(BATCH)
    got = as_set(k_hop(ei, BATCH, 2))
    want = {(j, i) for j in range(15) for i in range(15)
            if BATCH[j] == BATCH[i] and abs(i - j) <= 2}
    assert got == want
    assert as_set(k_hop(ei, BATCH, 1, self_loops=False)) == as_set(ei)


@pytest.mark.parametrize("degree", [2, 4, 6])
def test_expander_is_symmetric_bounded_degree_and_inside_graphs(degree):
    batch = torch.repeat_interleave(torch.arange(4), torch.tensor([13, 2, 31, 1]))
    ei = expander(batch, degree, torch.Generator().manual_seed(0))
    assert_within_graphs(ei, batch)
    assert as_set(ei) == as_set(ei.flip(0))
    assert not bool((ei[0] == ei[1]).any())
    indeg = torch.bincount(ei[1], minlength=batch.numel())
    assert int(indeg.max()) <= degree
    big = batch == 2
    assert float(indeg[big].float().mean()) > 0.8 * degree  # near-regular on a 31-node graph
    with pytest.raises(ValueError):
        expander(batch, 3)


def test_virtual_nodes_layout_and_edges():
    vn = virtual_nodes(BATCH, num_virtual=2)
    assert graph_sizes(vn.batch).tolist() == [7, 9, 5]
    assert vn.real[:5].tolist() == [0, 1, 2, 3, 4] and vn.real[5:7].tolist() == [7, 8]
    assert vn.virtual.tolist() == [[5, 6], [14, 15], [19, 20]]
    assert_within_graphs(vn.edge_index, vn.batch)
    real, virt = set(vn.real.tolist()), set(vn.virtual.flatten().tolist())
    want = set()
    for g in range(3):
        nodes = [i for i in range(21) if vn.batch[i] == g]
        want |= {(j, i) for j in nodes for i in nodes if j in virt or i in virt}
    assert as_set(vn.edge_index) == want
    assert not any(j in real and i in real for j, i in want)
    lifted = vn.lift(path_edges(BATCH))
    assert_within_graphs(lifted, vn.batch)


def test_typed_union_membership_is_aligned_with_sorted_edges():
    ei = path_edges(BATCH)
    ex = expander(BATCH, 4, torch.Generator().manual_seed(1))
    tg = typed_union({"graph": ei, "expander": ex}, BATCH)
    got = tg.graph.edge_index
    assert tg.names == ("graph", "expander")
    assert as_set(got) == as_set(ei) | as_set(ex)
    for k, s in enumerate((as_set(ei), as_set(ex))):
        assert [tuple(e) in s for e in got.T.tolist()] == tg.edge_type[:, k].tolist()
    assert bool(tg.edge_type.any(1).all())


def test_crossing_edges_and_unsorted_batches_raise():
    bad = torch.tensor([[0], [6]])  # graph 0 -> graph 1
    with pytest.raises(ValueError, match="between two"):
        graph_edges(bad, BATCH)
    with pytest.raises(ValueError):
        typed_union({"bad": bad}, BATCH)
    with pytest.raises(ValueError, match="sorted"):
        all_pairs(BATCH.flip(0))
