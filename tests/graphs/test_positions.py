"""Node -> (sequence, position) and per-edge local positions, against direct loops."""
import pytest
import torch

from gnn_attention import graphs as G
from gnn_attention.graphs.positions import (
    edge_positions,
    edge_sequences,
    node_positions,
    sequence_and_position,
)


def test_sequence_and_position_skips_empty_sequences():
    seq, pos = sequence_and_position(torch.tensor([0, 3, 3, 5]), torch.arange(5))
    assert seq.tolist() == [0, 0, 0, 2, 2] and pos.tolist() == [0, 1, 2, 0, 1]


def test_node_positions():
    assert node_positions([3, 0, 2]).tolist() == [0, 1, 2, 0, 1]
    assert node_positions([]).tolist() == []


@pytest.mark.parametrize("align", ["top_left", "bottom_right"])
def test_edge_positions_against_a_loop(align):
    src, dst = [4, 1, 6], [2, 3, 5]
    g = G.cross(src, dst)
    t, s = edge_positions(g, align)
    b = edge_sequences(g)
    want_t, want_s, want_b = [], [], []
    for k, (S, T) in enumerate(zip(src, dst)):
        for i in range(T):
            for j in range(S):
                want_t.append(i + (S - T if align == "bottom_right" else 0))
                want_s.append(j)
                want_b.append(k)
    assert t.tolist() == want_t and s.tolist() == want_s and b.tolist() == want_b


def test_edge_positions_bad_align():
    with pytest.raises(ValueError, match="align"):
        edge_positions(G.full([2]), "centre")
