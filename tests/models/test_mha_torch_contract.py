"""``gnn_attention.MultiheadAttention`` held to ``nn.MultiheadAttention``'s own contract.

The cases follow what PyTorch checks of its module (a numpy reference of scaled dot-product
attention, masks of every kind, extra key/value columns, unbatched inputs, the ModuleInfo samples,
gradients, state dicts, autocast), written here in our own words. Sizes are distinct primes
(T=5, S=7, H=3, head_dim=11) so a swapped axis fails. fp32 outputs within 1e-5 of torch with copied
weights; float64 within 1e-10 of the numpy reference.
"""
import copy
import itertools
import pickle

import numpy as np
import pytest
import torch
from torch import nn

from gnn_attention.graphs.masks import MaskShapeError, MaskTypeError
from gnn_attention.models.mha import InputShapeError, MultiheadAttention

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors: threads only add overhead

B, T, S, H, D = 2, 5, 7, 3, 11
C, KDIM, VDIM = H * D, 13, 17
TOL = 1e-5


def pair(batch_first=True, dtype=torch.float32, **kw):
    torch.manual_seed(0)
    ref = nn.MultiheadAttention(C, H, batch_first=batch_first, dtype=dtype, **kw).eval()
    if ref.in_proj_bias is not None:  # torch starts biases at zero: make them count
        with torch.no_grad():
            ref.in_proj_bias.normal_()
            ref.out_proj.bias.normal_()
    return ref, MultiheadAttention.from_torch(ref)


def numpy_mha(mha: nn.MultiheadAttention, q, k, v, bias):
    """Float64 numpy multi-head attention: projections, extra key columns, additive bias
    ``[B, H, T, S']`` (-inf = blocked), softmax, output projection. ``q [B, T, C]``."""
    sd = {n: p.detach().double().numpy() for n, p in mha.state_dict().items()}
    w = np.split(sd["in_proj_weight"], 3) if "in_proj_weight" in sd else \
        [sd["q_proj_weight"], sd["k_proj_weight"], sd["v_proj_weight"]]
    b = np.split(sd["in_proj_bias"], 3) if "in_proj_bias" in sd else [0.0, 0.0, 0.0]
    x = [t.detach().double().numpy() @ wi.T + bi for t, wi, bi in zip((q, k, v), w, b)]
    heads = [a.reshape(a.shape[0], a.shape[1], H, D).transpose(0, 2, 1, 3) for a in x]  # B,H,L,D
    qh, kh, vh = heads
    extra = []
    if "bias_k" in sd:
        extra.append((sd["bias_k"], sd["bias_v"]))
    if mha.add_zero_attn:
        extra.append((np.zeros((1, 1, C)), np.zeros((1, 1, C))))
    for bk, bv in extra:
        col = lambda t: np.broadcast_to(t.reshape(1, H, 1, D), (qh.shape[0], H, 1, D))  # noqa
        kh, vh = np.concatenate([kh, col(bk)], 2), np.concatenate([vh, col(bv)], 2)
    scores = qh @ kh.transpose(0, 1, 3, 2) / np.sqrt(D) + bias
    e = np.exp(scores - scores.max(-1, keepdims=True))
    alpha = e / e.sum(-1, keepdims=True)
    out = (alpha @ vh).transpose(0, 2, 1, 3).reshape(qh.shape[0], -1, C)
    return out @ sd["out_proj.weight"].T + sd.get("out_proj.bias", 0.0), alpha


def as_bias(mask, kind, extra):
    """The numpy ``[B, H, T, S + extra]`` bias of a (kind, mask) pair, MHA convention."""
    m = mask.double().numpy() if mask.dtype != torch.bool else np.where(mask.numpy(), -np.inf, 0)
    if kind == "kpm":
        m = m.reshape(B, 1, 1, S)
    elif m.ndim == 2:
        m = m.reshape(1, 1, T, S)
    else:
        m = m.reshape(B, H, T, S)
    m = np.broadcast_to(m, (B, H, T, S))
    return np.concatenate([m, np.zeros((B, H, T, extra))], -1)


def masks(kind):
    g = torch.Generator().manual_seed(1)
    kpm = torch.zeros(B, S, dtype=torch.bool)
    kpm[0, 4:] = True  # right padding
    kpm[1, 1] = True   # and a hole
    bool2 = torch.rand(T, S, generator=g) > 0.7
    bool2[:, 0] = False  # every query keeps a key: torch's rows stay finite
    bool3 = torch.rand(B * H, T, S, generator=g) > 0.7
    bool3[..., 0] = False
    return {
        "none": {},
        "kpm_bool": {"key_padding_mask": kpm},
        "kpm_float": {"key_padding_mask": torch.randn(B, S, generator=g)},
        "attn_bool_2d": {"attn_mask": bool2},
        "attn_float_2d": {"attn_mask": torch.randn(T, S, generator=g)},
        "attn_bool_3d": {"attn_mask": bool3},
        "attn_float_3d": {"attn_mask": torch.randn(B * H, T, S, generator=g)},
        "both": {"attn_mask": bool2, "key_padding_mask": kpm},
    }[kind]


MASK_KINDS = ["none", "kpm_bool", "kpm_float", "attn_bool_2d", "attn_float_2d", "attn_bool_3d",
              "attn_float_3d", "both"]
EXTRAS = [{}, {"add_bias_kv": True}, {"add_zero_attn": True},
          {"add_bias_kv": True, "add_zero_attn": True}]


def inputs(batch_first=True, cross=False, dtype=torch.float32):
    g = torch.Generator().manual_seed(2)
    q = torch.randn(B, T, C, generator=g, dtype=dtype)
    k = torch.randn(B, S, KDIM if cross else C, generator=g, dtype=dtype)
    v = torch.randn(B, S, VDIM if cross else C, generator=g, dtype=dtype)
    if not batch_first:
        q, k, v = (t.transpose(0, 1) for t in (q, k, v))
    return q, k, v


@pytest.mark.parametrize("kind", MASK_KINDS)
@pytest.mark.parametrize("extra", EXTRAS, ids=["plain", "bias_kv", "zero_attn", "both_extras"])
def test_float64_matches_numpy_reference(kind, extra):
    _, ours = pair(dtype=torch.float64, **extra)
    q, k, v = inputs(dtype=torch.float64)
    m = masks(kind)
    n_extra = len(extra)
    bias = sum((as_bias(mask, "kpm" if name == "key_padding_mask" else "attn", n_extra)
                for name, mask in m.items()), np.zeros((B, H, T, S + n_extra)))
    ref_out, ref_alpha = numpy_mha(ours.to_torch(), q, k, v, bias)
    out, w = ours(q, k, v, average_attn_weights=False, **m)
    assert np.abs(out.detach().numpy() - ref_out).max() < 1e-10
    assert np.abs(w.detach().numpy() - ref_alpha).max() < 1e-10


FP32_CASES = [(kind, extra, True) for kind in MASK_KINDS for extra in EXTRAS] + [
    (kind, extra, False) for kind in ("none", "kpm_bool", "attn_float_3d", "both")
    for extra in (EXTRAS[0], EXTRAS[3])]


@pytest.mark.parametrize("kind, extra, batch_first", FP32_CASES)
def test_fp32_matches_torch_with_and_without_weights(kind, extra, batch_first):
    ref, ours = pair(batch_first, **extra)
    q, k, v = inputs(batch_first)
    m = masks(kind)
    for need, avg in ((False, True), (True, True), (True, False)):
        a, wa = ref(q, k, v, need_weights=need, average_attn_weights=avg, **m)
        b, wb = ours(q, k, v, need_weights=need, average_attn_weights=avg, **m)
        assert (a - b).abs().max() <= TOL
        assert (wa is None) == (wb is None) and (wa is None or (wa - wb).abs().max() <= TOL)
        assert wb is None or wb.shape == wa.shape


def test_self_attention_and_cross_widths():
    for cross in (False, True):
        kw = {"kdim": KDIM, "vdim": VDIM} if cross else {}
        for bias in (True, False):
            ref, ours = pair(bias=bias, **kw)
            q, k, v = inputs(cross=cross)
            x = q
            args = (q, k, v) if cross else (x, x, x)  # self-attention: one fused projection
            assert (ref(*args)[0] - ours(*args)[0]).abs().max() <= TOL


def test_sequence_first_to_torch_keeps_the_layout():
    # Regression: to_torch() of a sequence-first module returned batch_first=True.
    torch.manual_seed(0)
    ours = MultiheadAttention(8, 2, kdim=6, vdim=6)
    ref = ours.to_torch()
    assert ref.batch_first is False
    q, k = torch.randn(4, 3, 8), torch.randn(5, 3, 6)
    assert (ref(q, k, k)[0] - ours(q, k, k)[0]).abs().max() <= TOL
    assert ours.to_torch(batch_first=True).batch_first is True


@pytest.mark.parametrize("mask_kind", ["float", "bool"])
def test_is_causal_with_the_causal_mask(mask_kind):
    ref, ours = pair()
    x = torch.randn(B, T, C)
    mask = nn.Transformer.generate_square_subsequent_mask(T)
    mask = mask if mask_kind == "float" else mask.isinf()
    for need in (False, True):
        for hint in (False, True):
            a = ref(x, x, x, attn_mask=mask, is_causal=hint, need_weights=need)[0]
            b = ours(x, x, x, attn_mask=mask, is_causal=hint, need_weights=need)[0]
            assert (a - b).abs().max() <= TOL
    # Without a mask torch asks for one; here is_causal alone builds the causal graph.
    assert (ours(x, x, x, is_causal=True)[0] - ref(x, x, x, attn_mask=mask)[0]).abs().max() <= TOL
    pad = torch.zeros(B, T, dtype=torch.bool)
    pad[1, 3:] = True
    a = ref(x, x, x, attn_mask=mask, key_padding_mask=pad, is_causal=True, need_weights=False)[0]
    b = ours(x, x, x, attn_mask=mask, key_padding_mask=pad, is_causal=True, need_weights=False)[0]
    assert (a - b).abs().max() <= TOL


def test_unbatched_inputs_and_masks():
    ref, ours = pair(add_bias_kv=True)
    q, k, v = (t[0] for t in inputs())
    kpm = torch.tensor([False] * 5 + [True] * 2)
    for kw in ({}, {"key_padding_mask": kpm}, {"attn_mask": torch.randn(T, S)},
               {"attn_mask": torch.rand(H, T, S) > 0.8}):
        a, wa = ref(q, k, v, **kw)
        b, wb = ours(q, k, v, **kw)
        assert b.shape == (T, C) and wb.shape == (T, S + 1)
        assert (a - b).abs().max() <= TOL and (wa - wb).abs().max() <= TOL


MODULE_INFO_SAMPLES = list(itertools.product([True, False], repeat=6))


@pytest.mark.parametrize("bias, bias_kv, zero_attn, kpm, mask, batch_first", MODULE_INFO_SAMPLES)
def test_module_info_no_batch_dim_samples(bias, bias_kv, zero_attn, kpm, mask, batch_first):
    """torch's ModuleInfo samples: embed_dim = heads = 3, unbatched [3, 3] inputs, a key padding
    mask and a per-head [3, 3, 3] mask blocking the last key; unbatched == batched of one."""
    torch.manual_seed(0)
    kw = dict(bias=bias, add_bias_kv=bias_kv, add_zero_attn=zero_attn, batch_first=batch_first)
    ref = nn.MultiheadAttention(3, 3, **kw).eval()
    ours = MultiheadAttention.from_torch(ref)
    x = [torch.randn(3, 3) for _ in range(3)]
    m = {"key_padding_mask": torch.tensor([False, False, True]) if kpm else None,
         "attn_mask": torch.tensor([False, False, True]).expand(3, 3, 3) if mask else None}
    a, wa = ref(*x, **m)
    b, wb = ours(*x, **m)
    assert (a - b).abs().max() <= TOL and (wa - wb).abs().max() <= TOL
    batched = [t.unsqueeze(0 if batch_first else 1) for t in x]
    mb = {"key_padding_mask": None if m["key_padding_mask"] is None else m["key_padding_mask"][None],
          "attn_mask": m["attn_mask"]}
    c, wc = ours(*batched, **mb)
    assert torch.equal(c.squeeze(0 if batch_first else 1), b) and torch.equal(wc[0], wb)


def test_dropout_in_eval_is_off_and_in_training_is_on():
    ref, ours = pair(dropout=0.5)
    q, k, v = inputs()
    assert (ref(q, k, v)[0] - ours(q, k, v)[0]).abs().max() <= TOL
    ours.train()
    torch.manual_seed(3)
    a = ours(q, k, v, need_weights=False)[0]
    assert torch.isfinite(a).all() and (a - ref(q, k, v)[0]).abs().max() > 1e-3


def test_empty_batch_and_zero_lengths():
    ref, ours = pair()
    for b, t, s in ((0, T, S), (B, 0, S)):
        q, k = torch.randn(b, t, C), torch.randn(b, s, C)
        a, wa = ref(q, k, k)
        o, w = ours(q, k, k)
        assert o.shape == a.shape and w.shape == wa.shape
    # No keys at all: torch's softmax over nothing is NaN; here every row is zero attention.
    o, _ = ours(torch.randn(B, T, C), torch.randn(B, 0, C), torch.randn(B, 0, C))
    assert torch.equal(o, ours.out_proj.bias.expand(B, T, C))


def test_gradients_match_including_a_float_mask_that_requires_grad():
    ref, ours = pair(dtype=torch.float64)
    q, k, v = (t.requires_grad_() for t in inputs(dtype=torch.float64))
    mask = torch.randn(T, S, dtype=torch.float64, requires_grad=True)
    pad = torch.zeros(B, S, dtype=torch.bool)
    pad[0, 5:] = True
    grads = []
    for mod in (ref, ours):
        out = mod(q, k, v, attn_mask=mask, key_padding_mask=pad, need_weights=False)[0]
        out.square().sum().backward()
        grads.append([t.grad.clone() for t in (q, k, v, mask)] +
                     [p.grad.clone() for p in mod.parameters()])
        for t in (q, k, v, mask):
            t.grad = None
    for ga, gb in zip(*grads):
        assert (ga - gb).abs().max() < 1e-10


def test_gradcheck_float64_with_extras():
    torch.manual_seed(0)
    ours = MultiheadAttention(4, 2, add_bias_kv=True, add_zero_attn=True, batch_first=True).double()
    x = torch.randn(1, 3, 4, dtype=torch.float64, requires_grad=True)
    mask = torch.randn(3, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x, m: ours(x, x, x, attn_mask=m)[0], (x, mask))


def test_state_dict_both_ways_and_copies():
    ref, ours = pair(add_bias_kv=True)
    assert set(ours.state_dict()) == set(ref.state_dict())
    fresh = nn.MultiheadAttention(C, H, batch_first=True, add_bias_kv=True).eval()
    fresh.load_state_dict(ours.state_dict())
    q, k, v = inputs()
    assert (fresh(q, k, v)[0] - ours(q, k, v)[0]).abs().max() <= TOL
    for clone in (copy.deepcopy(ours), pickle.loads(pickle.dumps(ours))):
        assert torch.equal(clone(q, k, v)[0], ours(q, k, v)[0])
    assert repr(ours) == f"MultiheadAttention({C}, heads={H})"
    for p in (ours.bias_k, ours.bias_v):
        assert p.shape == (1, 1, C)
    plain = MultiheadAttention(C, H)
    assert plain.bias_k is None and plain.bias_v is None and plain.add_zero_attn is False


def test_from_torch_and_to_torch_keep_the_mode():
    ref, ours = pair()  # ref is in eval mode
    assert not ours.training
    assert ours.train().to_torch().training and not ours.eval().to_torch().training


def test_factory_kwargs():
    m = MultiheadAttention(C, H, kdim=KDIM, vdim=VDIM, device="cpu", dtype=torch.float64)
    assert all(p.dtype == torch.float64 and p.device.type == "cpu" for p in m.parameters())
    m = MultiheadAttention(C, H, add_bias_kv=True, device="meta")
    assert all(p.device.type == "meta" for p in m.parameters())


@pytest.mark.parametrize("need_weights", [False, True])
def test_cpu_autocast_bfloat16(need_weights):
    # Regression: the weights were always computed, by a sparse product without a bf16 form.
    ref, ours = pair()
    x = inputs()[0]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        a, wa = ref(x, x, x, need_weights=need_weights)
        b, wb = ours(x, x, x, need_weights=need_weights)
    assert b.dtype == a.dtype == torch.bfloat16
    assert (a.float() - b.float()).abs().max() <= 2e-2 * a.abs().max()
    assert (wa is None) == (wb is None)
    if need_weights:
        assert (wa.float() - wb.float()).abs().max() <= 2e-2


def test_float_mask_nan_propagates_like_torch():
    # Regression: NaN in a float mask was treated as a blocked key.
    ref, ours = pair()
    q, k, v = inputs()
    for fill in ((1, 2),), ((1, 2), (3, 4)):
        mask = torch.zeros(T, S)
        mask[0, 6] = float("-inf")
        for t, s in fill:
            mask[t, s] = float("nan")
        a, b = ref(q, k, v, attn_mask=mask)[0], ours(q, k, v, attn_mask=mask)[0]
        assert torch.equal(a.isnan(), b.isnan())
        assert (a.nan_to_num() - b.nan_to_num()).abs().max() <= TOL


def test_fully_masked_query_is_zero_attention_not_nan():
    ref, ours = pair()
    q, k, v = inputs()
    mask = torch.zeros(T, S, dtype=torch.bool)
    mask[2] = True
    a, b = ref(q, k, v, attn_mask=mask)[0], ours(q, k, v, attn_mask=mask)[0]
    assert a[:, 2].isnan().all() and torch.equal(b[:, 2], ours.out_proj.bias.expand(B, C))
    assert (a[:, [0, 1, 3, 4]] - b[:, [0, 1, 3, 4]]).abs().max() <= TOL


def test_errors_are_the_types_torch_code_catches():
    ref, ours = pair()
    q, k, v = inputs()
    cases = [
        ({"attn_mask": torch.zeros(T, S, dtype=torch.uint8)}, MaskTypeError, AssertionError),
        ({"key_padding_mask": torch.zeros(B, S, dtype=torch.long)}, MaskTypeError, AssertionError),
        ({"attn_mask": torch.zeros(T, T)}, MaskShapeError, RuntimeError),
        ({"attn_mask": torch.zeros(B, T, S)}, MaskShapeError, RuntimeError),
    ]
    for kw, ours_type, torch_type in cases:
        with pytest.raises(torch_type):
            ref(q, k, v, **kw)
        with pytest.raises(ours_type) as err:
            ours(q, k, v, **kw)
        assert isinstance(err.value, torch_type)
    with pytest.raises(InputShapeError, match="feature widths"):
        ours(q[..., :-1], k, v)
    with pytest.raises(AssertionError):
        ours(q, k[:1], v[:1])
