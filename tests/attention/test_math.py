"""The pure math: segment softmax by hand, the dense reference's empty rows, the bf16 score range.

Tiny hand-computed cases with distinct sizes (E=5 edges over 3 targets, H=2).
"""
import math

import pytest
import torch

from gnn_attention.attention.math import check_score_range, dense_attention, segment_softmax


def test_segment_softmax_by_hand():
    s = torch.tensor([[0.0, 1.0], [math.log(3.0), 2.0], [5.0, float("-inf")], [1.0, 0.0],
                      [2.0, float("-inf")]])
    index = torch.tensor([0, 0, 1, 2, 2])
    a = segment_softmax(s, index, 4)  # target 3 has no edge
    assert torch.allclose(a[:2, 0], torch.tensor([0.25, 0.75]))
    assert a[2, 0] == 1 and a[2, 1] == 0  # head 1 of target 1: every score -inf -> weight 0
    assert torch.allclose(a[3:, 1], torch.tensor([1.0, 0.0]))
    assert torch.allclose(a[3:, 0], torch.softmax(torch.tensor([1.0, 2.0]), 0))


def test_dense_reference_fully_masked_row_is_zero():
    q, k, v = torch.randn(1, 2, 3, 5), torch.randn(1, 2, 7, 5), torch.randn(1, 2, 7, 11)
    mask = torch.ones(3, 7, dtype=torch.bool)
    mask[1] = False
    out = dense_attention(q, k, v, mask)
    assert torch.equal(out[:, :, 1], torch.zeros(1, 2, 11)) and torch.isfinite(out).all()


def test_score_range_bound():
    q = torch.full((3, 2, 5), 1e18, dtype=torch.bfloat16)
    check_score_range(q, q, "scaled_dot", None, None)  # 1e36 * 5 / sqrt(5) < 1.7e38
    with pytest.raises(ValueError, match="beyond the float32 range"):
        check_score_range(q * 100, q, "scaled_dot", None, None)
    check_score_range(q.float() * 100, q.float(), "scaled_dot", None, None)  # float32: as the reference
