"""Positional encodings: hand-computed values, the relative property of rotary embeddings, T5
buckets and ALiBi as edge attributes (checked against a dense bias on the same scores)."""
import math

import pytest
import torch

from gnn_attention import graphs
from gnn_attention.attention.functional import dense_attention, graph_attention
from gnn_attention.attention.positional import (
    LearnedPositions,
    T5RelativeBias,
    alibi_bias,
    alibi_slopes,
    apply_rotary,
    edge_positions,
    node_positions,
    rotary_tables,
    sinusoidal_encoding,
    t5_bucket,
)

pytestmark = pytest.mark.usefixtures("one_thread")  # see tests/conftest.py



def test_node_positions_restart_per_sequence():
    assert node_positions([3, 0, 2]).tolist() == [0, 1, 2, 0, 1]


def test_sinusoidal_hand_computed():
    pe = sinusoidal_encoding(torch.tensor([0, 1, 7]), 4, dtype=torch.float64)
    # d = 4: frequencies 10000^(0/4) = 1 and 10000^(2/4) = 100.
    expected = [[0.0, 1.0, 0.0, 1.0],
                [math.sin(1), math.cos(1), math.sin(0.01), math.cos(0.01)],
                [math.sin(7), math.cos(7), math.sin(0.07), math.cos(0.07)]]
    assert torch.allclose(pe, torch.tensor(expected, dtype=torch.float64), atol=1e-12)


def test_sinusoidal_odd_width_and_large_positions():
    pe = sinusoidal_encoding(torch.tensor([5000]), 5)
    assert pe.shape == (1, 5) and pe.dtype == torch.float32
    assert abs(pe[0, 4].item() - math.sin(5000 / 10000 ** (4 / 5))) < 1e-6
    assert abs(pe[0, 0].item() - math.sin(5000)) < 1e-6  # computed in float64, then cast


def test_sinusoidal_rejects_bad_input():
    with pytest.raises(ValueError, match="integer"):
        sinusoidal_encoding(torch.tensor([0.5]), 4)
    with pytest.raises(ValueError, match="positive"):
        sinusoidal_encoding(torch.tensor([0]), 0)


def test_learned_positions_refuse_to_wrap():
    table = LearnedPositions(5, 3)
    assert table(torch.tensor([0, 4])).shape == (2, 3)
    with pytest.raises(ValueError, match="max_len=5"):
        table(torch.tensor([5]))


def test_rotary_hand_computed_and_identity_at_zero():
    cos, sin = rotary_tables(torch.tensor([0, 2]), head_dim=2)
    x = torch.tensor([[[1.0, 0.0]], [[1.0, 0.0]]])  # [N=2, H=1, D=2]
    out = apply_rotary(x, cos, sin)
    assert torch.allclose(out[0], x[0])
    assert torch.allclose(out[1, 0], torch.tensor([math.cos(2), math.sin(2)]), atol=1e-6)


def test_rotary_scores_depend_on_distance_only():
    torch.manual_seed(0)
    H, D = 3, 10
    q, k = torch.randn(1, H, D, dtype=torch.float64), torch.randn(1, H, D, dtype=torch.float64)

    def score(t, s):
        qt = apply_rotary(q, *rotary_tables(torch.tensor([t]), D, dtype=torch.float64))
        ks = apply_rotary(k, *rotary_tables(torch.tensor([s]), D, dtype=torch.float64))
        return (qt * ks).sum(-1)

    assert torch.allclose(score(5, 2), score(105, 102), atol=1e-10)
    assert not torch.allclose(score(5, 2), score(5, 3), atol=1e-3)  # and does depend on it
    rotated = apply_rotary(q, *rotary_tables(torch.tensor([9]), D, dtype=torch.float64))
    assert torch.allclose(rotated.norm(dim=-1), q.norm(dim=-1))  # a rotation keeps norms


def test_rotary_rejects_odd_width_and_bad_shapes():
    with pytest.raises(ValueError, match="even"):
        rotary_tables(torch.tensor([0]), 5)
    cos, sin = rotary_tables(torch.tensor([0, 1]), 4)
    with pytest.raises(ValueError, match="apply_rotary"):
        apply_rotary(torch.randn(3, 2, 4), cos, sin)


def test_edge_positions_local_and_bottom_right():
    g = graphs.causal([2, 3])
    t, s = edge_positions(g)
    assert list(zip(t.tolist(), s.tolist())) == [(0, 0), (1, 0), (1, 1),
                                                 (0, 0), (1, 0), (1, 1), (2, 0), (2, 1), (2, 2)]

    # One new query over 4 keys: it is position 3 of its sequence, not 0.
    step = graphs.causal([1], align="bottom_right", src_lengths=[4])
    t, s = edge_positions(step, align="bottom_right")
    assert t.tolist() == [3, 3, 3, 3] and s.tolist() == [0, 1, 2, 3]
    with pytest.raises(ValueError, match="align"):
        edge_positions(step, align="middle")


def test_t5_buckets_known_values():
    r = torch.tensor([0, -1, 1, -7, -8, -12, -128, -1000, 1000])
    # Bidirectional, 32 buckets: 16 per direction, 8 exact, then log-spaced up to distance 128.
    assert t5_bucket(r).tolist() == [0, 1, 17, 7, 8, 9, 15, 15, 31]
    # Unidirectional: future keys (r > 0) share bucket 0; 16 exact distances, then log-spaced.
    r = torch.tensor([5, -5, -15, -16, -20, -127, -500])
    assert t5_bucket(r, bidirectional=False).tolist() == [0, 5, 15, 16, 17, 31, 31]
    far = t5_bucket(-torch.arange(300), bidirectional=False)
    assert (far.diff() >= 0).all()  # monotone in distance


def test_t5_relative_bias_is_the_bucket_table_per_edge():
    torch.manual_seed(0)
    g = graphs.full([3, 2])
    rel = T5RelativeBias(num_heads=3, num_buckets=8, max_distance=16)
    bias = rel(g)
    t, s = edge_positions(g)
    assert bias.shape == (g.num_edges, 3)
    assert torch.equal(bias, rel.relative_attention_bias.weight[t5_bucket(s - t, True, 8, 16)])


def test_alibi_slopes_paper_values():
    assert torch.allclose(alibi_slopes(8), 2.0 ** -torch.arange(1, 9, dtype=torch.float64))
    # Non power of two: the 4-head slopes, then every other slope of the 8-head sequence.
    expected = [2 ** -2, 2 ** -4, 2 ** -6, 2 ** -8, 2 ** -1, 2 ** -3]
    assert alibi_slopes(6).tolist() == expected


def test_alibi_edge_bias_matches_dense_bias_in_attention():
    """ALiBi carried on the edges gives the attention that a dense additive bias gives."""
    torch.manual_seed(0)
    T, H, D = 5, 3, 7
    g = graphs.causal([T])
    bias = alibi_bias(g, H, dtype=torch.float64)
    t, s = edge_positions(g)
    assert torch.allclose(bias[:, 0], -(t - s).double() * alibi_slopes(3)[0])
    q, k, v = (torch.randn(T, H, D, dtype=torch.float64) for _ in range(3))
    out = graph_attention(q, k, v, g, edge_bias=bias)
    pos = torch.arange(T)
    dense_bias = -(pos.view(-1, 1) - pos.view(1, -1)).abs().double() * alibi_slopes(H).view(H, 1, 1)
    dense_bias = dense_bias.masked_fill(pos.view(1, -1) > pos.view(-1, 1), float("-inf"))
    ref = dense_attention(*(x.transpose(0, 1).unsqueeze(0) for x in (q, k, v)), dense_bias)
    assert torch.allclose(out, ref[0].transpose(0, 1), atol=1e-12)
