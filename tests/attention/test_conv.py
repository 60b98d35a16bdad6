"""MultiheadAttentionConv against nn.MultiheadAttention with copied weights, plus PyG/torch interop."""
import pytest
import torch
from torch import nn

from gnn_attention import MultiheadAttentionConv, dense_attention, graphs

B, T, S, C, H = 2, 5, 7, 33, 3  # pairwise distinct; head_dim = 11


def mask_graph(allowed):
    """Graph of a [B, T, S] SDPA-convention mask; node b*T+t is query t of sequence b."""
    return graphs.from_dense_mask(allowed, "sdpa")


CASES = {
    # name: (is_cross, causal, padding)
    "self": (False, False, False),
    "cross": (True, False, False),
    "causal": (False, True, False),
    "key_padding": (False, False, True),
    "causal+padding": (False, True, True),
    "cross+padding": (True, False, True),
}


def run_case(case, kdim=None, vdim=None, bias=True, backend="auto", seed=0):
    is_cross, causal, padding = CASES[case]
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    mha = nn.MultiheadAttention(C, H, bias=bias, kdim=kdim, vdim=vdim, batch_first=True)
    conv = MultiheadAttentionConv.from_torch(mha, backend=backend)
    s = S if is_cross or kdim or vdim else T
    x_dst = torch.randn(B, T, C, generator=gen)
    x_key = torch.randn(B, s, kdim or C, generator=gen) if (is_cross or kdim) else x_dst
    x_val = torch.randn(B, s, vdim or C, generator=gen) if (is_cross or vdim) else x_key
    attn_mask = torch.ones(T, s, dtype=torch.bool).triu(1) if causal else None
    kpm = None
    if padding:
        kpm = torch.zeros(B, s, dtype=torch.bool)
        kpm[1, 3:] = True
    allowed = torch.ones(B, T, s, dtype=torch.bool)
    if attn_mask is not None:
        allowed &= ~attn_mask
    if kpm is not None:
        allowed &= ~kpm[:, None, :]
    valid = allowed.any(-1)

    xs = [t.clone().requires_grad_() for t in (x_dst, x_key, x_val)]
    ref, ref_w = mha(xs[0], xs[1] if x_key is not x_dst else xs[0],
                     xs[2] if x_val is not x_key else (xs[1] if x_key is not x_dst else xs[0]),
                     key_padding_mask=kpm, attn_mask=attn_mask, average_attn_weights=False)
    ref[valid].square().sum().backward()

    ys = [t.clone().requires_grad_() for t in (x_dst, x_key, x_val)]
    flat = lambda t: t.reshape(-1, t.size(-1))  # noqa: E731
    if x_key is x_dst and x_val is x_dst:
        x = flat(ys[0])
    else:
        key = flat(ys[1]) if x_key is not x_dst else flat(ys[0])
        val = flat(ys[2]) if x_val is not x_key else key
        x = ((key, val), flat(ys[0]))
    out, (ei, alpha) = conv(x, mask_graph(allowed), return_attention_weights=True)
    out = out.view(B, T, C)
    out[valid].square().sum().backward()
    return dict(mha=mha, conv=conv, ref=ref, out=out, valid=valid, ref_w=ref_w, ei=ei, alpha=alpha,
                xs=xs, ys=ys, s=s)


def assert_matches(r):
    valid = r["valid"]
    assert (r["out"][valid] - r["ref"][valid]).abs().max() <= 1e-5
    for a, b in zip(r["xs"], r["ys"]):
        if a.grad is not None:
            assert (a.grad - b.grad).abs().max() <= 1e-4
    for (name, p), q in zip(r["mha"].named_parameters(), r["conv"].parameters()):
        assert (p.grad - q.grad).abs().max() <= 1e-4, name
    # per-head weights equal MHA's average_attn_weights=False on the edges
    src, dst = r["ei"]
    s = r["s"]
    w = r["ref_w"][dst // T, :, dst % T, src % s]
    assert (w - r["alpha"]).abs().max() <= 1e-6


@pytest.mark.parametrize("case", list(CASES))
def test_matches_nn_multihead_attention(case):
    assert_matches(run_case(case))


@pytest.mark.parametrize("kdim, vdim, bias", [(17, 19, True), (17, None, False), (None, None, False)])
def test_kdim_vdim_and_no_bias_match(kdim, vdim, bias):
    assert_matches(run_case("cross+padding" if kdim else "causal", kdim=kdim, vdim=vdim, bias=bias))


def test_pyg_message_passing_backend_matches():
    assert_matches(run_case("causal+padding", backend="message_passing"))
    assert_matches(run_case("cross", kdim=17, vdim=19, backend="message_passing"))


def test_weights_round_trip_to_torch_and_back():
    conv = MultiheadAttentionConv(C, H, kdim=17, vdim=19)
    mha = conv.to_torch()
    back = MultiheadAttentionConv.from_torch(mha)
    for (n1, p1), (n2, p2), (n3, p3) in zip(conv.state_dict().items(), mha.state_dict().items(),
                                            back.state_dict().items()):
        assert n1 == n2 == n3 and torch.equal(p1, p2) and torch.equal(p1, p3)
    with pytest.raises(ValueError, match="scaled dot-product"):
        MultiheadAttentionConv(C, H, score="additive").to_torch()
    with pytest.raises(ValueError, match="add_bias_kv"):
        MultiheadAttentionConv.from_torch(nn.MultiheadAttention(C, H, add_bias_kv=True))


def test_reset_parameters_repr_and_pyg_type():
    from torch_geometric.nn import MessagePassing

    conv = MultiheadAttentionConv(64, 8)
    assert isinstance(conv, MessagePassing) and repr(conv) == "MultiheadAttentionConv(64, heads=8)"
    assert repr(MultiheadAttentionConv(64, 8, score="general")).endswith("score='general')")
    before = conv.in_proj_weight.clone()
    conv.reset_parameters()
    assert not torch.equal(before, conv.in_proj_weight)
    assert torch.equal(conv.in_proj_bias, torch.zeros(192))


@pytest.mark.parametrize("score", ["dot", "general", "additive"])
def test_other_scores_equal_dense_attention_with_the_same_projections(score):
    torch.manual_seed(0)
    conv = MultiheadAttentionConv(C, H, score=score)
    x = torch.randn(B * T, C)
    g = graphs.causal([T] * B)
    out = conv(x, g)
    q, k, v = conv.project(x, x, x)
    heads = lambda t: t.view(B, T, H, -1).transpose(1, 2)  # noqa: E731
    mask = torch.ones(T, T, dtype=torch.bool).tril()
    ref = dense_attention(heads(q), heads(k), heads(v), mask, score=score,
                          score_weight=conv.score_weights())
    ref = conv.out_proj(ref.transpose(1, 2).reshape(B * T, C))
    assert (out - ref).abs().max() <= 1e-5
    out.sum().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in conv.parameters())


def test_causality_at_layer_level():
    conv = MultiheadAttentionConv(C, H)
    g = graphs.causal([4, 6])
    x = torch.randn(10, C)
    y = x.clone()
    y[3] += 5.0
    y[9] += 5.0
    a, b = conv(x, g), conv(y, g)
    assert torch.equal(a[:3], b[:3]) and torch.equal(a[4:9], b[4:9])


def test_dropout_only_in_training():
    conv = MultiheadAttentionConv(C, H, dropout=0.5)
    x, g = torch.randn(8, C), graphs.full([8])
    conv.eval()
    assert torch.equal(conv(x, g), conv(x, g))
    conv.train()
    torch.manual_seed(0)
    assert not torch.allclose(conv(x, g), conv.eval()(x, g))


def test_torch_compile_has_no_graph_break():
    conv = MultiheadAttentionConv(C, H)
    x, g = torch.randn(12, C), graphs.causal([5, 7])
    explanation = torch._dynamo.explain(lambda x, ei: conv(x, ei))(x, g.edge_index)
    assert explanation.graph_break_count == 0, explanation.break_reasons
    compiled = torch.compile(conv, backend="aot_eager", fullgraph=True)
    assert (compiled(x, g.edge_index) - conv(x, g.edge_index)).abs().max() <= 1e-6


@pytest.mark.parametrize("build, error, match", [
    (lambda: MultiheadAttentionConv(10, 3), ValueError, "multiple of"),
    (lambda: MultiheadAttentionConv(12, 0), ValueError, "multiple of"),
    (lambda: MultiheadAttentionConv(12, 3, score="cosine"), ValueError, "score"),
    (lambda: MultiheadAttentionConv(12, 3, dropout=1.5), ValueError, "dropout"),
])
def test_bad_construction(build, error, match):
    with pytest.raises(error, match=match):
        build()


def test_bad_forward_input():
    conv = MultiheadAttentionConv(12, 3, kdim=5, vdim=5)
    g = graphs.cross([2], [3])
    with pytest.raises(ValueError, match=r"query/target features must have shape \[N, 12\]"):
        conv((torch.randn(2, 5), torch.randn(3, 10)), g)
    with pytest.raises(ValueError, match=r"key/source features must have shape \[N, 5\]"):
        conv((torch.randn(2, 12), torch.randn(3, 12)), g)
    with pytest.raises(TypeError, match="pair"):
        conv((torch.randn(2, 5),), g)
    with pytest.raises(ValueError, match="2 source and 3 target"):
        conv((torch.randn(4, 5), torch.randn(3, 12)), g)


def test_unknown_backend_is_rejected_at_construction():
    with pytest.raises(ValueError, match="backend must be one of"):
        MultiheadAttentionConv(12, 3, backend="cuda_magic")
