"""The drop-in gnn_attention.MultiheadAttention against torch.nn.MultiheadAttention."""
import pytest
import torch
from torch import nn

import gnn_attention
from gnn_attention import graphs

B, T, S, C, H = 3, 5, 7, 33, 3


def pair(seed=0, **kw):
    torch.manual_seed(seed)
    ref = nn.MultiheadAttention(C, H, **kw)
    return ref, gnn_attention.MultiheadAttention.from_torch(ref)


def close(a, b, tol=1e-5):
    return (a - b).abs().max() <= tol


@pytest.mark.parametrize("batch_first", [True, False])
def test_masks_and_layouts_match(batch_first):
    ref, ours = pair(batch_first=batch_first)
    q, k = torch.randn(B, T, C), torch.randn(B, S, C)
    if not batch_first:
        q, k = q.transpose(0, 1), k.transpose(0, 1)
    kpm = torch.zeros(B, S, dtype=torch.bool)
    kpm[2, 4:] = True
    am = torch.rand(T, S) < 0.3
    am[:, 0] = False  # every query keeps a key
    for kw in (dict(), dict(key_padding_mask=kpm), dict(attn_mask=am, key_padding_mask=kpm),
               dict(attn_mask=am, average_attn_weights=False)):
        (o1, w1), (o2, w2) = ref(q, k, k, **kw), ours(q, k, k, **kw)
        assert o1.shape == o2.shape and close(o1, o2) and close(w1, w2, 1e-6), kw


def test_float_and_per_head_masks_become_edge_bias():
    ref, ours = pair(batch_first=True)
    x = torch.randn(B, T, C)
    am = torch.randn(B * H, T, T)
    am[:, :, 1] = float("-inf")  # key 1 removed everywhere
    am[0, 2, 3] = float("-inf")  # one head of one query loses key 3
    kpm = torch.zeros(B, T)
    kpm[1, 4] = float("-inf")
    kpm[0, 0] = 0.5  # a finite additive key bias
    for kw in (dict(attn_mask=am), dict(attn_mask=am[:H].mean(0), key_padding_mask=kpm)):
        (o1, w1), (o2, w2) = ref(x, x, x, average_attn_weights=False, **kw), \
            ours(x, x, x, average_attn_weights=False, **kw)
        assert close(o1, o2) and close(w1, w2, 1e-6)


def test_is_causal_unbatched_and_need_weights():
    ref, ours = pair(batch_first=True)
    x = torch.randn(B, T, C)
    causal = nn.Transformer.generate_square_subsequent_mask(T)
    o1, _ = ref(x, x, x, attn_mask=causal, is_causal=True, need_weights=False)
    o2, w2 = ours(x, x, x, is_causal=True, need_weights=False)
    assert close(o1, o2) and w2 is None
    (o1, w1), (o2, w2) = ref(x[0], x[0], x[0]), ours(x[0], x[0], x[0])
    assert o2.shape == (T, C) and w2.shape == (T, T) and close(o1, o2) and close(w1, w2, 1e-6)


def test_fully_masked_query_gives_zero_attention_not_nan():
    _, ours = pair(batch_first=True)
    x = torch.randn(1, T, C, requires_grad=True)
    am = torch.zeros(T, T, dtype=torch.bool)
    am[2] = True  # query 2 may attend to nothing
    out, w = ours(x, x, x, attn_mask=am)
    assert torch.isfinite(out).all() and torch.equal(w[0, 2], torch.zeros(T))
    assert torch.allclose(out[0, 2], ours.out_proj.bias)  # zero attention, then W_O's bias
    out.sum().backward()
    assert torch.isfinite(x.grad).all()


def test_state_dict_is_interchangeable():
    ref = nn.MultiheadAttention(C, H, kdim=11, vdim=13, batch_first=True)
    ours = gnn_attention.MultiheadAttention(C, H, kdim=11, vdim=13, batch_first=True)
    ours.load_state_dict(ref.state_dict())
    q, k, v = torch.randn(B, T, C), torch.randn(B, S, 11), torch.randn(B, S, 13)
    assert close(ref(q, k, v)[0], ours(q, k, v)[0])
    ref.load_state_dict(gnn_attention.MultiheadAttention(C, H, kdim=11, vdim=13).state_dict())


@pytest.mark.parametrize("kw, match", [
    (dict(key_padding_mask=torch.zeros(B, S + 1, dtype=torch.bool)), "key_padding_mask must have shape"),
    (dict(attn_mask=torch.zeros(T, T, dtype=torch.bool)), "attn_mask must have shape"),
    (dict(attn_mask=torch.zeros(T, S, dtype=torch.long)), "bool and floating"),
])
def test_bad_masks(kw, match):
    _, ours = pair(batch_first=True)
    q, k = torch.randn(B, T, C), torch.randn(B, S, C)
    # Our clear message, in a type that also catches what torch raises there (assert / runtime).
    with pytest.raises((ValueError, TypeError), match=match) as err:
        ours(q, k, k, **kw)
    assert isinstance(err.value, (AssertionError, RuntimeError))


def test_bad_inputs_are_rejected():
    with pytest.raises(AssertionError, match="3-D"):
        pair(batch_first=True)[1](torch.randn(1, 2, 3, C), torch.randn(1, 2, 3, C), torch.randn(1, 2, 3, C))


def test_recognised_masks_map_to_cached_structured_graphs():
    from gnn_attention.graphs.masks import is_causal_mask, masks_to_graph, suffix_lengths

    b, t, h = 3, 5, 2
    causal_f = torch.nn.Transformer.generate_square_subsequent_mask(t)
    pad = torch.arange(t).view(1, t) >= torch.tensor([5, 2, 0]).view(b, 1)
    holes = pad.clone()
    holes[0, 1] = True
    assert suffix_lengths(pad) == (5, 2, 0) and suffix_lengths(holes) is None
    assert is_causal_mask(causal_f) and is_causal_mask(causal_f.isinf())
    assert not is_causal_mask(causal_f.T) and not is_causal_mask(causal_f.requires_grad_())
    causal_f = causal_f.detach()
    cases = [({}, False, "full", False), ({"attn_mask": causal_f}, False, "causal", False),
             ({}, True, "causal", False), ({"key_padding_mask": pad}, False, "padded_prefix", False),
             ({"key_padding_mask": pad, "attn_mask": causal_f.isinf()}, False, "padded_prefix",
              False),
             ({"attn_mask": torch.randn(t, t)}, False, "full", True),
             ({"key_padding_mask": holes}, False, "dense_mask", False)]
    for kw, is_causal, name, has_bias in cases:
        args = (b, t, t, h, kw.get("key_padding_mask"), kw.get("attn_mask"), is_causal,
                torch.float32, "cpu")
        g, bias = masks_to_graph(*args)
        assert g.pattern.name == name and (bias is not None) == has_bias
        if name != "dense_mask":
            assert masks_to_graph(*args)[0] is g  # cached: the same object, its plan reused
        # Same edges as the entry-by-entry conversion of the combined dense mask.
        blocked = torch.zeros(b, t, t, dtype=torch.bool)
        if "key_padding_mask" in kw:
            blocked |= kw["key_padding_mask"].view(b, 1, t)
        if "attn_mask" in kw and kw["attn_mask"].dtype == torch.bool:
            blocked |= kw["attn_mask"]
        if is_causal or (kw.get("attn_mask") is causal_f):
            blocked |= torch.ones(t, t, dtype=torch.bool).triu(1)
        assert torch.equal(g.edge_index, graphs.from_dense_mask(blocked, "mha").edge_index)
