"""graph_attention against hand-computed cases, the dense reference and SDPA; gradients; invariants."""
import math

import pytest
import torch
import torch.nn.functional as F

from gnn_attention import graphs
from gnn_attention.attention.functional import SCORES, dense_attention, graph_attention

H, D, DV = 3, 11, 13  # pairwise distinct so a swapped axis fails loudly


def score_weight(score, gen, dtype=torch.float32, A=5):
    if score == "general":
        return torch.randn(H, D, D, generator=gen, dtype=dtype) / math.sqrt(D)
    if score == "additive":
        return (torch.randn(H, D, A, generator=gen, dtype=dtype), torch.randn(H, D, A, generator=gen,
                dtype=dtype), torch.randn(H, A, generator=gen, dtype=dtype))
    return None


def nodes(t):
    """[B, H, L, X] -> [B * L, H, X] (one row per token node)."""
    return t.transpose(1, 2).reshape(-1, t.size(1), t.size(-1))


def random_problem(B=2, T=5, S=7, p=0.5, seed=0, dtype=torch.float32):
    gen = torch.Generator().manual_seed(seed)
    q = torch.randn(B, H, T, D, generator=gen, dtype=dtype)
    k = torch.randn(B, H, S, D, generator=gen, dtype=dtype)
    v = torch.randn(B, H, S, DV, generator=gen, dtype=dtype)
    mask = torch.rand(B, T, S, generator=gen) < p
    mask[0, 1] = False  # a fully masked row
    mask[1, :, 0] = True
    mask[1, 2] = False  # another one
    return q, k, v, mask, gen


def test_tiny_hand_computed():
    # one query, two keys with scores 0 and log(3) -> weights 1/4, 3/4
    q = torch.tensor([[[1.0, 0.0]]])
    k = torch.tensor([[[0.0, 0.0]], [[math.log(3.0) * math.sqrt(2), 0.0]]])
    v = torch.tensor([[[4.0]], [[8.0]]])
    out, alpha = graph_attention(q, k, v, torch.tensor([[0, 1], [0, 0]]), return_attention_weights=True)
    assert torch.allclose(alpha, torch.tensor([[0.25], [0.75]]), atol=1e-7)
    assert torch.allclose(out, torch.tensor([[[7.0]]]), atol=1e-6)


@pytest.mark.parametrize("seed", range(3))
def test_graph_attention_equals_sdpa_with_fully_masked_rows(seed):
    q, k, v, mask, _ = random_problem(seed=seed)
    g = graphs.from_dense_mask(mask, "sdpa")
    qs, ks, vs = (t.clone().requires_grad_() for t in (q, k, v))
    qg, kg, vg = (nodes(t).detach().requires_grad_() for t in (q, k, v))
    ref = F.scaled_dot_product_attention(qs, ks, vs, attn_mask=mask.unsqueeze(1))
    out = graph_attention(qg, kg, vg, g)
    valid = mask.any(-1)  # [B, T]
    got = out.view(2, 5, H, DV)
    assert torch.allclose(got[valid], ref.transpose(1, 2)[valid], atol=1e-5, rtol=0)
    assert torch.equal(got[~valid], torch.zeros_like(got[~valid]))  # exactly zero, not NaN
    w = torch.randn_like(got)
    (got * w).sum().backward()
    (ref.transpose(1, 2) * w).masked_fill(~valid[..., None, None], 0).sum().backward()
    for a, b in ((qg, qs), (kg, ks), (vg, vs)):
        assert torch.isfinite(a.grad).all()
        assert torch.allclose(a.grad, nodes(torch.nan_to_num(b.grad)), atol=1e-5, rtol=0)
    assert torch.equal(qg.grad.view(2, 5, H, D)[~valid], torch.zeros(2, H, D))


@pytest.mark.parametrize("score", SCORES)
def test_every_score_equals_dense_reference(score):
    q, k, v, mask, gen = random_problem(dtype=torch.float64)
    w = score_weight(score, gen, torch.float64)
    g = graphs.from_dense_mask(mask, "sdpa")
    out, alpha = graph_attention(nodes(q), nodes(k), nodes(v), g, score=score, score_weight=w,
                                 return_attention_weights=True)
    ref, p = dense_attention(q, k, v, mask.unsqueeze(1), score=score, score_weight=w,
                             return_weights=True)
    assert torch.allclose(out, nodes(ref), atol=1e-12)
    b, t, s = mask.nonzero(as_tuple=True)
    assert torch.allclose(alpha, p[b, :, t, s], atol=1e-12)


@pytest.mark.parametrize("score", SCORES)
def test_gradcheck_every_score(score):
    gen = torch.Generator().manual_seed(1)
    q, k, v = (torch.randn(n, H, x, generator=gen, dtype=torch.float64, requires_grad=True)
               for n, x in ((4, D), (5, D), (5, DV)))
    ei = torch.tensor([[0, 1, 4, 2, 3, 0, 4], [0, 0, 0, 1, 1, 3, 3]])  # target 2 has no edge
    bias = torch.randn(7, H, generator=gen, dtype=torch.float64, requires_grad=True)
    w = score_weight(score, gen, torch.float64)
    ws = () if w is None else ((w,) if torch.is_tensor(w) else tuple(w))
    ws = tuple(t.requires_grad_() for t in ws)

    def f(q, k, v, bias, *ws):
        sw = None if not ws else (ws[0] if score == "general" else ws)
        return graph_attention(q, k, v, ei, edge_bias=bias, score=score, score_weight=sw)

    assert torch.autograd.gradcheck(f, (q, k, v, bias, *ws))


def test_edge_order_invariance_and_node_permutation_equivariance():
    q, k, v, mask, _ = random_problem(seed=4)
    g = graphs.from_dense_mask(mask, "sdpa")
    qn, kn, vn = nodes(q), nodes(k), nodes(v)
    out, alpha = graph_attention(qn, kn, vn, g, return_attention_weights=True)
    perm = torch.randperm(g.num_edges)
    out2, alpha2 = graph_attention(qn, kn, vn, g.edge_index[:, perm], return_attention_weights=True)
    assert torch.allclose(out, out2, atol=1e-6) and torch.allclose(alpha[perm], alpha2, atol=1e-7)
    # relabel target and source nodes: outputs permute with the targets
    pd, ps = torch.randperm(qn.size(0)), torch.randperm(kn.size(0))
    inv_d, inv_s = pd.argsort(), ps.argsort()
    ei = torch.stack([inv_s[g.edge_index[0]], inv_d[g.edge_index[1]]])
    out3 = graph_attention(qn[pd], kn[ps], vn[ps], ei)
    assert torch.allclose(out3, out[pd], atol=1e-6)


def test_causality_later_tokens_do_not_change_earlier_outputs():
    g = graphs.causal([6, 4])
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(10, H, D, generator=gen)
    out = graph_attention(x, x, x, g)
    y = x.clone()
    y[4] += 10.0  # token 4 of sequence 0
    y[9] -= 10.0  # last token of sequence 1
    out2 = graph_attention(y, y, y, g)
    assert torch.equal(out[:4], out2[:4]) and torch.equal(out[6:9], out2[6:9])
    assert not torch.allclose(out[4], out2[4])


def test_empty_graphs_return_shaped_results():
    q, k, v = torch.randn(0, H, D), torch.randn(0, H, D), torch.randn(0, H, DV)
    out, alpha = graph_attention(q, k, v, torch.zeros(2, 0, dtype=torch.long), return_attention_weights=True)
    assert out.shape == (0, H, DV) and alpha.shape == (0, H)
    q = torch.randn(4, H, D, requires_grad=True)
    out = graph_attention(q, torch.randn(3, H, D), torch.randn(3, H, DV), torch.zeros(2, 0, dtype=torch.long))
    assert torch.equal(out, torch.zeros(4, H, DV))
    out.sum().backward()
    assert torch.equal(q.grad, torch.zeros_like(q))


def test_edge_bias_minus_inf_removes_an_edge_for_one_head():
    gen = torch.Generator().manual_seed(3)
    q, k, v = torch.randn(2, H, D, generator=gen), torch.randn(3, H, D, generator=gen), torch.randn(3, H, DV, generator=gen)
    ei = torch.tensor([[0, 1, 2, 0], [0, 0, 0, 1]])
    bias = torch.zeros(4, H)
    bias[1, 0] = float("-inf")
    bias[3, 2] = float("-inf")  # head 2 of target 1 has no finite score left
    out, alpha = graph_attention(q, k, v, ei, edge_bias=bias, return_attention_weights=True)
    assert alpha[1, 0] == 0 and torch.isfinite(out).all()
    assert torch.equal(out[1, 2], torch.zeros(DV))
    ref = graph_attention(q, k, v, ei[:, [0, 2]])
    assert torch.allclose(out[0, 0], ref[0, 0], atol=1e-6)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_low_precision_is_close_to_float64_golden(dtype):
    q, k, v, mask, _ = random_problem(seed=5)
    g = graphs.from_dense_mask(mask, "sdpa")
    golden = graph_attention(*(nodes(t).double() for t in (q, k, v)), g)
    out = graph_attention(*(nodes(t).to(dtype) for t in (q, k, v)), g)
    dense = dense_attention(*(t.to(dtype) for t in (q, k, v)), mask.unsqueeze(1))
    assert out.dtype == dtype
    err, err_dense = (out.double() - golden).abs().max(), (nodes(dense).double() - golden).abs().max()
    assert err <= 2 * err_dense + 1e-3


def test_large_scores_stay_finite_in_half_precision():
    q = torch.full((2, 1, 4), 200.0, dtype=torch.float16)  # q.k = 160000 > float16 max
    out = graph_attention(q, q, torch.ones(2, 1, 3, dtype=torch.float16), graphs.full([2]), score="dot")
    assert torch.isfinite(out).all() and torch.allclose(out.float(), torch.ones(2, 1, 3))


def test_strict_mode_raises_on_an_empty_neighbourhood():
    q, k, v = torch.randn(3, H, D), torch.randn(2, H, D), torch.randn(2, H, DV)
    ei = torch.tensor([[0, 1], [0, 2]])
    with pytest.raises(ValueError, match="1 target node"):
        graph_attention(q, k, v, ei, strict=True)
    assert graph_attention(q, k, v, torch.tensor([[0, 1, 0], [0, 1, 2]]), strict=True).shape == (3, H, DV)


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(q=torch.randn(3, H)), ValueError, r"q must be a \[N, H, D\]"),
    (dict(k=torch.randn(4, H + 1, D)), ValueError, "same number of heads"),
    (dict(k=torch.randn(4, H, D + 1)), ValueError, "same head width"),
    (dict(v=torch.randn(5, H, DV)), ValueError, "one row per source"),
    (dict(q=torch.randn(3, H, D, dtype=torch.float64)), TypeError, "share a dtype"),
    (dict(edge_index=torch.tensor([[0, 4], [0, 1]])), IndexError, "out of range"),
    (dict(edge_index=torch.tensor([[0.0], [1.0]])), TypeError, "integer dtype"),
    (dict(edge_index=torch.tensor([0, 1])), ValueError, r"\[2, E\]"),
    (dict(edge_index=graphs.full([4])), ValueError, "4 target nodes"),
    (dict(edge_bias=torch.zeros(5, H)), ValueError, "edge_bias"),
    (dict(score="cosine"), ValueError, "score must be one of"),
    (dict(score="general"), ValueError, r"\[H, D, D\]"),
    (dict(score="dot", score_weight=torch.eye(D)), ValueError, "takes no score_weight"),
    (dict(backend="cuda_magic"), ValueError, "backend"),
])
def test_bad_input_gets_a_clear_error(kwargs, error, match):
    args = dict(q=torch.randn(3, H, D), k=torch.randn(4, H, D), v=torch.randn(4, H, DV),
                edge_index=torch.tensor([[0, 1, 3], [0, 1, 2]]))
    args.update(kwargs)
    q, k, v, ei = args.pop("q"), args.pop("k"), args.pop("v"), args.pop("edge_index")
    with pytest.raises(error, match=match):
        graph_attention(q, k, v, ei, **args)
