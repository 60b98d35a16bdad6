"""Per-type key/value offsets against an edge loop that builds every edge's key and value
explicitly (k_j + sum_t m_t a_t, v_j + sum_t m_t b_t), target by target: outputs and gradients in
float64, dropout, the Exphormer layer that uses them, and the errors."""
import math

import pytest
import torch

from gnn_attention.graph_models.edge_sets import typed_union
from gnn_attention.graph_models.exphormer import ExphormerLayer, exphormer_inputs
from gnn_attention.graph_models.typed import TypedKeyValue, typed_attention

H, D, K = 3, 5, 4
SIZES = (5, 7, 1, 11)


def typed_graph(seed=0):
    """Three random edge sets over a ragged batch, merged: some edges are in two sets, and node 0
    gets no incoming edge (its output must be exactly zero)."""
    gen = torch.Generator().manual_seed(seed)
    batch = torch.repeat_interleave(torch.arange(len(SIZES)), torch.tensor(SIZES))
    same = batch.view(-1, 1) == batch.view(1, -1)
    sets = {}
    for name, p in (("a", 0.3), ("b", 0.3), ("c", 0.15)):
        adj = same & (torch.rand(same.shape, generator=gen) < p)
        adj[:, 0] = False  # [source, target]: nothing enters node 0
        sets[name] = adj.nonzero().T
    sets["d"] = sets["a"][:, ::3]  # a subset: every third 'a' edge is also 'd'
    return typed_union(sets, batch), batch.numel()


def loop_reference(q, k, v, ei, member, ka, vb, bias):
    """Attention by the book, one target at a time, with explicit per-edge keys and values."""
    n_dst, c = q.size(0), 1.0 / math.sqrt(q.size(-1))
    rows = []
    for i in range(n_dst):
        es = (ei[1] == i).nonzero().flatten()
        if es.numel() == 0:
            rows.append(torch.zeros_like(q[0]))
            continue
        keys = k[ei[0, es]] + torch.einsum("et,thd->ehd", member[es], ka)  # [E_i, H, D]
        vals = v[ei[0, es]] + torch.einsum("et,thd->ehd", member[es], vb)
        s = c * (q[i].unsqueeze(0) * keys).sum(-1) + bias[es]  # [E_i, H]
        alpha = torch.softmax(s, dim=0)
        rows.append((alpha.unsqueeze(-1) * vals).sum(0))
    return torch.stack(rows)


def random_inputs(n, E, seed=1, dtype=torch.float64):
    gen = torch.Generator().manual_seed(seed)
    shapes = ((n, H, D), (n, H, D), (n, H, D), (K, H, D), (K, H, D), (E, H))
    return tuple(torch.randn(*s, generator=gen, dtype=dtype).requires_grad_() for s in shapes)


def test_typed_attention_matches_edge_loop_forward_and_backward():
    tg, n = typed_graph()
    ei, member = tg.graph.edge_index, tg.edge_type.double()
    assert (member.sum(1) > 1).any() and not (ei[1] == 0).any()
    ins = random_inputs(n, ei.size(1))
    got = typed_attention(*ins[:3], tg.graph, tg.edge_type, ins[3], ins[4], edge_bias=ins[5])
    ref_ins = [t.detach().clone().requires_grad_() for t in ins]
    want = loop_reference(*ref_ins[:3], ei, member, *ref_ins[3:])
    assert (got - want).abs().max() <= 1e-12
    assert got[0].abs().max() == 0
    g = torch.randn(got.shape, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    (got * g).sum().backward()
    (want * g).sum().backward()
    for name, a, b in zip(("q", "k", "v", "key_offset", "value_offset", "edge_bias"),
                              ins, ref_ins, strict=True):
        assert (a.grad - b.grad).abs().max() <= 1e-12, name
    # the offsets matter: without them the output differs
    plain = typed_attention(*ins[:3], tg.graph, tg.edge_type, 0 * ins[3], 0 * ins[4],
                            edge_bias=ins[5])
    assert (plain - got).abs().max() > 1e-2


def test_float32_and_raw_edge_index_agree_with_float64():
    tg, n = typed_graph(3)
    ins = random_inputs(n, tg.graph.num_edges, seed=4)
    want = typed_attention(*ins[:3], tg.graph, tg.edge_type, *ins[3:5], edge_bias=ins[5])
    f32 = [t.detach().float() for t in ins]
    got = typed_attention(*f32[:3], tg.graph.edge_index, tg.edge_type, *f32[3:5], edge_bias=f32[5])
    assert (got.double() - want).abs().max() <= 1e-5


def test_dropout_reaches_the_offsets_with_the_same_weights():
    """With dropout the returned alpha is the dropped one; the output must be the edge loop's sum
    with exactly those weights (values and value offsets alike)."""
    tg, n = typed_graph(5)
    ei, member = tg.graph.edge_index, tg.edge_type.double()
    q, k, v, ka, vb, _ = (t.detach() for t in random_inputs(n, ei.size(1), seed=6))
    torch.manual_seed(0)
    out, alpha = typed_attention(q, k, v, tg.graph, tg.edge_type, ka, vb, dropout_p=0.5,
                                 return_attention_weights=True)
    assert (alpha == 0).any()
    vals = v[ei[0]] + torch.einsum("et,thd->ehd", member, vb)
    want = torch.zeros_like(out).index_add_(0, ei[1], alpha.unsqueeze(-1) * vals)
    assert (out - want).abs().max() <= 1e-12


def test_exphormer_typed_kv_matches_edge_loop_and_starts_untyped():
    gen = torch.Generator().manual_seed(0)
    batch = torch.repeat_interleave(torch.arange(3), torch.tensor([4, 6, 5]))
    same = batch.view(-1, 1) == batch.view(1, -1)
    adj = same & (torch.rand(same.shape, generator=gen) < 0.4)
    adj.fill_diagonal_(False)
    ei = (adj | adj.T).nonzero().T
    C = H * D
    x = torch.randn(batch.numel(), C, generator=gen)
    inputs = exphormer_inputs(ei, batch, degree=2, num_virtual=1,
                              generator=torch.Generator().manual_seed(1))
    torch.manual_seed(0)
    typed = ExphormerLayer(C, H, typed_kv=True).eval()
    torch.manual_seed(0)
    plain = ExphormerLayer(C, H).eval()
    assert (typed(x, inputs)[0] - plain(x, inputs)[0]).abs().max() == 0  # zero offsets
    for p in (typed.typed_kv.key, typed.typed_kv.value, typed.type_bias):
        torch.nn.init.normal_(p)
    out, _ = typed(x, inputs)
    vn, tg = inputs.virtual, inputs.typed
    xa = torch.zeros(vn.batch.numel(), C).index_copy(0, vn.real, x)
    xa = xa.index_copy(0, vn.virtual.flatten(), typed.virtual_init.repeat(3, 1))
    xn = typed.norm1(xa)
    q, k, v = typed.attn.project(xn, xn, xn)
    bias = tg.edge_type.float() @ typed.type_bias
    att = loop_reference(q, k, v, tg.graph.edge_index, tg.edge_type.float(), typed.typed_kv.key,
                         typed.typed_kv.value, bias)
    h = xa + typed.attn.merge_heads(att)
    h = h + typed.ffn(typed.norm2(h))
    assert (out - h[vn.real]).abs().max() <= 1e-5
    out.sum().backward()
    assert typed.typed_kv.key.grad.abs().max() > 0 and typed.typed_kv.value.grad.abs().max() > 0


def test_bad_shapes_raise_before_work():
    tg, n = typed_graph()
    q, k, v, ka, vb, _ = (t.detach() for t in random_inputs(n, tg.graph.num_edges))
    with pytest.raises(ValueError, match="edge_type"):
        typed_attention(q, k, v, tg.graph, tg.edge_type[:-1], ka, vb)
    with pytest.raises(ValueError, match="value_offset"):
        typed_attention(q, k, v, tg.graph, tg.edge_type, ka, vb[:, :, :2])
    with pytest.raises(ValueError, match="key_offset"):
        typed_attention(q, k, v, tg.graph, tg.edge_type, ka[:, :2], vb)
    with pytest.raises(ValueError, match="num_types"):
        TypedKeyValue(0, H, D)


def test_no_edges_gives_zero_output():
    q = torch.randn(3, H, D)
    ei = torch.zeros(2, 0, dtype=torch.long)
    out = typed_attention(q, q, q, ei, torch.zeros(0, K), torch.randn(K, H, D), torch.randn(K, H, D))
    assert out.shape == q.shape and out.abs().max() == 0
