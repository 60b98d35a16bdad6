"""A compiled ``gnn_attention.Transformer`` training step traces in one piece: the graphs it builds
inside ``forward`` from the masks (none, or the causal target mask with ``tgt_is_causal``) carry
their lengths as Python ints, so building them, planning them and running the dense kernel read no
tensor value (zero graph breaks, counted with ``torch._dynamo.explain``); compiled == eager for
outputs and every parameter gradient, also after a recompilation for new shapes.
"""
import pytest
import torch
from torch import nn

from gnn_attention import Transformer, graphs
from gnn_attention.attention.functional import graph_attention

D_MODEL, HEADS = 16, 2


def _model():
    torch.manual_seed(0)
    return Transformer(D_MODEL, HEADS, 1, 1, 32, dropout=0.0, batch_first=True)


def _data(B, S, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(B, S, D_MODEL, generator=g), torch.randn(B, S + 1, D_MODEL, generator=g)


def _causal(T):
    return {"tgt_mask": nn.Transformer.generate_square_subsequent_mask(T), "tgt_is_causal": True}


@pytest.mark.parametrize("masks", ["none", "causal"])
def test_a_transformer_step_has_no_graph_break(masks):
    model = _model()
    src, tgt = _data(3, 5)
    kw = _causal(tgt.size(1)) if masks == "causal" else {}
    torch._dynamo.reset()
    ex = torch._dynamo.explain(lambda: model(src, tgt, **kw).pow(2).mean())()
    assert ex.graph_break_count == 0, [str(r.reason).splitlines()[0] for r in ex.break_reasons]


def _step(model, src, tgt, kw):
    model.zero_grad()
    out = model(src, tgt, **kw)
    out.pow(2).mean().backward()
    return out.detach(), [p.grad.clone() for p in model.parameters()]


@pytest.mark.slow  # ~35 s of compilation on 2 cores
def test_compiled_step_equals_eager_across_shapes():
    """Two shapes (the second compiles again, with dynamic sizes) and both mask kinds."""
    model = _model()
    torch._dynamo.reset()
    compiled = torch.compile(model, backend="aot_eager")
    for B, S in ((3, 5), (2, 7)):
        src, tgt = _data(B, S, seed=B)
        for kw in ({}, _causal(tgt.size(1))):
            out, grads = _step(model, src, tgt, kw)
            out_c, grads_c = _step(compiled, src, tgt, kw)
            torch.testing.assert_close(out_c, out, atol=1e-5, rtol=1e-5)
            for g, g_c in zip(grads, grads_c):
                torch.testing.assert_close(g_c, g, atol=1e-5, rtol=1e-5)


def test_a_graph_built_inside_a_fullgraph_function():
    """Builders called while tracing: no tensor is read, so fullgraph=True holds; equal to eager."""
    def f(q, k, v):
        B, T = 2, q.size(0) // 2
        return graph_attention(q, k, v, graphs.causal([T] * B))

    gen = torch.Generator().manual_seed(1)
    q, k, v = (torch.randn(12, 2, 4, generator=gen) for _ in range(3))
    torch._dynamo.reset()
    out = torch.compile(f, backend="aot_eager", fullgraph=True)(q, k, v)
    torch.testing.assert_close(out, f(q, k, v), atol=1e-6, rtol=1e-6)


def test_eager_calls_still_check_the_causal_hint():
    """Eagerly a wrong hint is not trusted: a mask that is not the causal one, given with
    is_causal=True, blocks what it blocks and the future (the mask is read); only a traced call
    takes the hint on trust, as torch does."""
    model = _model()
    src, tgt = _data(2, 4)
    T = tgt.size(1)
    future = torch.ones(T, T, dtype=torch.bool).triu(1)
    not_key0 = torch.zeros(T, T, dtype=torch.bool)
    not_key0[1:, 0] = True  # queries t >= 1 may not read key 0
    hinted = model(src, tgt, tgt_mask=not_key0, tgt_is_causal=True)
    union = model(src, tgt, tgt_mask=not_key0 | future)
    causal = model(src, tgt, **_causal(T))
    torch.testing.assert_close(hinted, union, atol=1e-6, rtol=1e-6)
    assert (hinted - causal).abs().max() > 1e-3


def test_implicit_graphs_carry_python_lengths():
    g = graphs.cross([3, 0, 2], [2, 4, 1], causal=True)
    assert g.host_lengths == ((3, 0, 2), (2, 4, 1))
    assert all(type(n) is int for side in g.host_lengths for n in side)
    assert graphs.full(torch.tensor([2, 5])).host_lengths == ((2, 5), (2, 5))
    assert g.num_edges == g.edge_index.size(1)  # the closed form agrees with the edges
    assert g.to("cpu").host_lengths == g.host_lengths
    assert graphs.from_edge_index(g.edge_index, [3, 0, 2], [2, 4, 1]).host_lengths is None
