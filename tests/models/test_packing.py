"""Padded <-> packed node features: the node numbering every model shares with the graphs."""
import pytest
import torch

from gnn_attention import graphs
from gnn_attention.models.packing import check_lengths, check_tokens, lengths_mask, pack, unpack


def test_pack_numbers_nodes_as_the_graphs_do():
    lengths = torch.tensor([3, 0, 2])
    mask = lengths_mask(lengths, 4)
    assert mask.tolist() == [[True, True, True, False], [False] * 4, [True, True, False, False]]
    x = torch.arange(3 * 4 * 5, dtype=torch.float).view(3, 4, 5)
    nodes = pack(x, mask)
    # node n = sum of the earlier lengths + t, the numbering of graphs.full(lengths)
    g = graphs.full(lengths)
    seq, pos = graphs.sequence_and_position(g.dst_ptr, torch.arange(g.num_dst))
    assert torch.equal(nodes, x[seq, pos])


def test_unpack_inverts_pack_with_zeros_at_padding():
    lengths = torch.tensor([2, 5, 1])
    mask = lengths_mask(lengths, 5)
    x = torch.randn(3, 5, 7)
    back = unpack(pack(x, mask), mask)
    assert torch.equal(back[mask], x[mask]) and not back[~mask].any()


def test_check_lengths_and_tokens_reject_bad_input_before_computing():
    check_lengths(torch.tensor([0, 4]), 2, 4)
    with pytest.raises(ValueError, match=r"must lie in \[0, 4\]"):
        check_lengths(torch.tensor([5, 1]), 2, 4)
    with pytest.raises(ValueError, match="B=3"):
        check_lengths(torch.tensor([1, 1]), 3, 4)
    with pytest.raises(TypeError, match="integers"):
        check_lengths(torch.tensor([1.0, 2.0]), 2, 4)
    check_tokens(torch.tensor([[0, 9]]), 10, "ids")
    with pytest.raises(ValueError, match=r"ids ids must lie in \[0, 10\)"):
        check_tokens(torch.tensor([[0, 10]]), 10, "ids")
    with pytest.raises(TypeError, match="integer token ids"):
        check_tokens(torch.zeros(1, 2), 10, "ids")
