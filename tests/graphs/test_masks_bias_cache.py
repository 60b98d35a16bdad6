"""A repeated float mask is turned into its per-edge bias once: the same tensor object with the
same values hits the memo; any change of values (in place, through numpy too), a NaN, a mask that
needs gradients or a freed mask never reads a stale bias."""
import gc

import torch

from gnn_attention.graphs import masks
from gnn_attention.models.mha import MultiheadAttention

B, T, H = 3, 5, 2


def _bias(am):
    _, bias = masks.masks_to_graph(B, T, T, H, None, am, False, torch.float32, "cpu")
    return bias


def _expected(am):
    return am.expand(B, T, T).reshape(-1, 1)


def test_the_same_mask_is_converted_once_and_changes_are_seen():
    am = torch.randn(T, T)
    first = _bias(am)
    assert _bias(am) is first  # memo hit
    am.add_(1.0)  # in place
    assert torch.equal(_bias(am), _expected(am))
    am.numpy()[0, 0] = 42.0  # behind torch's back: no version bump, still seen
    got = _bias(am)
    assert got[0, 0] == 42.0 and torch.equal(got, _expected(am))


def test_nan_and_gradients_and_freed_masks():
    am = torch.randn(T, T)
    am[1, 2] = float("nan")
    assert torch.equal(_bias(am).isnan(), _expected(am).isnan())
    w = torch.randn(T, T, requires_grad=True)
    _bias(w).sum().backward()
    assert torch.equal(w.grad, torch.full((T, T), float(B)))
    before = len(masks._BIAS_CACHE)
    tmp = torch.randn(T, T)
    _bias(tmp)
    del tmp
    gc.collect()
    assert len(masks._BIAS_CACHE) <= before


def test_the_drop_in_follows_a_mask_changed_between_calls():
    torch.manual_seed(0)
    ref = torch.nn.MultiheadAttention(8, H, batch_first=True)
    ours = MultiheadAttention.from_torch(ref)
    x, am = torch.randn(B, T, 8), torch.randn(T, T)
    for _ in range(2):
        want = ref(x, x, x, attn_mask=am, need_weights=False)[0]
        got = ours(x, x, x, attn_mask=am, need_weights=False)[0]
        torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-6)
        am.mul_(-3.0)
