"""Every kernel under ``torch.compile(fullgraph=True)``: no graph break, the planned kernel (never
the reference), compiled == eager within 1e-5 (outputs and gradients, float32).

The kernel that ran is read off the traced FX graph (a recording backend): SDPA for dense/tiled,
the ``gnn_attention::csr_attention`` custom op for CSR. The custom ops are checked the way PyTorch
checks custom ops, with ``torch.library.opcheck`` (schema, fake tensor, autograd registration).
Sizes are distinct (H=3, D=5, Dv=7).
"""
import pytest
import torch

from gnn_attention import graphs
from gnn_attention.attention import kernels
from gnn_attention.attention.functional import graph_attention
from gnn_attention.attention.kernels import csr, prepare

H, D, DV = 3, 5, 7


class Recorder:
    """A dynamo backend that records the call targets of every graph it is given, then runs it."""

    def __init__(self):
        self.targets = []

    def __call__(self, gm, example_inputs):
        self.targets += [str(n.target) for n in gm.graph.nodes if n.op == "call_function"]
        return gm.forward


def _inputs(g, seed=0):
    gen = torch.Generator().manual_seed(seed)
    mk = lambda n, d: torch.randn(n, H, d, generator=gen).requires_grad_()  # noqa: E731
    return mk(g.num_dst, D), mk(g.num_src, D), mk(g.num_src, DV)


def _loss_grads(out, leaves):
    w = torch.randn(out.shape, generator=torch.Generator().manual_seed(7))
    return torch.autograd.grad((out * w).sum(), leaves)


CASES = [
    ("causal_uniform", lambda: graphs.causal([6, 6]), "auto", "scaled_dot_product_attention"),
    ("full_ragged", lambda: graphs.full([5, 7]), "auto", "scaled_dot_product_attention"),
    ("cross", lambda: graphs.cross([7, 7], [5, 5]), "dense", "scaled_dot_product_attention"),
    ("window", lambda: graphs.window([40, 40], 3), "tiled", "scaled_dot_product_attention"),
    ("window_csr", lambda: graphs.window([40, 40], 3), "csr", "gnn_attention.csr_attention"),
    ("causal_csr", lambda: graphs.causal([5, 7]), "csr", "gnn_attention.csr_attention"),
]


@pytest.fixture
def no_reference(monkeypatch):
    """Any call of the reference inside dispatch fails the test (at trace time)."""
    def refuse(*args, **kwargs):
        raise AssertionError("the reference ran")
    monkeypatch.setattr(kernels, "reference_attention", refuse)


@pytest.mark.parametrize("name,build,backend,op", CASES, ids=[c[0] for c in CASES])
def test_kernel_compiles_without_break_and_matches_eager(name, build, backend, op, no_reference):
    torch._dynamo.reset()
    g = build()
    q, k, v = _inputs(g)
    eager = graph_attention(q, k, v, g, backend=backend)  # an eager call prepares the graph
    rec = Recorder()
    f = torch.compile(lambda q, k, v: graph_attention(q, k, v, g, backend=backend),
                      backend=rec, fullgraph=True)
    out = f(q, k, v)
    assert any(op in t for t in rec.targets), rec.targets
    assert (out - eager).abs().max() <= 1e-5
    for a, b in zip(_loss_grads(out, (q, k, v)), _loss_grads(eager, (q, k, v))):
        assert (a - b).abs().max() <= 1e-5


def test_raw_edge_index_compiles_to_the_csr_custom_ops():
    torch._dynamo.reset()
    g = graphs.causal([5, 7])
    ei = g.edge_index.flip(1)  # unsorted: the structure op sorts and restores the order
    q, k, v = _inputs(g)
    rec = Recorder()
    f = torch.compile(lambda q, k, v, ei: graph_attention(q, k, v, ei, return_attention_weights=True),
                      backend=rec, fullgraph=True)
    (out, alpha), (ref, ref_alpha) = f(q, k, v, ei), graph_attention(q, k, v, ei, backend="reference",
                                                                       return_attention_weights=True)
    assert any("gnn_attention.csr_structure" in t for t in rec.targets)
    assert (out - ref).abs().max() <= 1e-5 and (alpha - ref_alpha).abs().max() <= 1e-5


def test_explain_counts_no_break_on_a_prepared_graph_and_one_on_a_fresh_one():
    torch._dynamo.reset()
    g = graphs.window([40, 40], 3)
    q, k, v = _inputs(g)
    fresh = torch._dynamo.explain(lambda q, k, v: graph_attention(q, k, v, g))(q, k, v)
    # prepare_outside runs eagerly (dynamo counts it as a break unless it comes before any op)
    assert fresh.graph_break_count <= 1
    assert prepare.signature("auto", "scaled_dot", 0.0, False, H, D, DV, q.dtype, 0) in g.cache
    torch._dynamo.reset()
    again = torch._dynamo.explain(lambda q, k, v: graph_attention(q, k, v, g))(q, k, v)
    assert again.graph_break_count == 0, again.break_reasons


def test_prepare_graph_plans_without_running_attention():
    g = graphs.causal([9, 9])
    assert kernels.prepare_graph(g, H, D, DV, torch.float32) == "dense"
    assert g.cache["kernel"] == "dense" and not g.materialized  # no edge was built
    assert kernels.prepare_graph(graphs.window([300], 4), H, D, DV, torch.float32) == "tiled"


def test_a_graph_with_other_lengths_is_planned_again_not_run_with_a_stale_plan():
    """dynamo guards on the cached lengths: [6, 6] (is_causal) then [4, 8] (padded, masked)."""
    torch._dynamo.reset()
    f = torch.compile(graph_attention, backend="aot_eager", fullgraph=True)
    for lengths in ([6, 6], [4, 8], [6, 6]):
        g = graphs.causal(lengths)
        q, k, v = _inputs(g)
        kernels.prepare_graph(g, H, D, DV, q.dtype)
        ref = graph_attention(q, k, v, g, backend="reference")
        assert (f(q, k, v, g) - ref).abs().max() <= 1e-5


def _csr_args(dtype=torch.float64):
    g = graphs.causal([4, 5])
    st = csr.build(g.edge_index, g.num_dst, g.num_src, H, True)
    gen = torch.Generator().manual_seed(3)
    mk = lambda n, d: torch.randn(n, d, generator=gen, dtype=dtype, requires_grad=True)  # noqa
    bias = torch.randn(H * g.num_edges, generator=gen, dtype=dtype, requires_grad=True)
    return g, st, (mk(H * g.num_dst, D), mk(H * g.num_src, D), mk(H * g.num_src, DV), bias)


def test_custom_ops_pass_opcheck():
    g, st, (qh, kh, vh, bias) = _csr_args()
    torch.library.opcheck(torch.ops.gnn_attention.csr_attention,
                          (qh, kh, vh, bias, *st.tensors, H))
    torch.library.opcheck(torch.ops.gnn_attention.csr_attention,
                          (qh, kh, vh, None, *st.tensors, H))
    ei = g.edge_index.flip(1).contiguous()
    torch.library.opcheck(torch.ops.gnn_attention.csr_structure, (ei, g.num_dst, g.num_src, H, False))


def test_csr_custom_op_gradcheck_float64():
    _, st, args = _csr_args()
    f = lambda q, k, v, b: torch.ops.gnn_attention.csr_attention(q, k, v, b, *st.tensors, H)  # noqa
    assert torch.autograd.gradcheck(f, args, eps=1e-6, atol=1e-7)


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["dense", "tiled", "csr"])
def test_inductor_matches_eager(backend):
    torch._dynamo.reset()
    g = graphs.window([40, 40], 3)
    q, k, v = _inputs(g)
    eager = graph_attention(q, k, v, g, backend=backend)
    f = torch.compile(lambda q, k, v: graph_attention(q, k, v, g, backend=backend),
                      backend="inductor", fullgraph=True)
    out = f(q, k, v)
    assert (out - eager).abs().max() <= 1e-5
    for a, b in zip(_loss_grads(out, (q, k, v)), _loss_grads(eager, (q, k, v))):
        assert (a - b).abs().max() <= 1e-5
