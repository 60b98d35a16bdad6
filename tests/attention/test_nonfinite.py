"""Non-finite inputs and degenerate arguments: every kernel gives the reference's NaN / inf pattern.

The rule (gnn_attention.attention.kernels.finite): a NaN or inf reaches exactly the rows whose
edges read it, never another sequence or a padding slot. Each case puts one bad value into q, k or
v and compares the NaN and inf masks of every kernel with the message-passing reference's, and the
finite entries within 1e-5. Sizes are distinct (H=3, D=5, Dv=7).
"""
import pytest
import torch

from gnn_attention import graphs
from gnn_attention.attention.functional import graph_attention
from gnn_attention.attention.kernels import AttentionMemoryError, memory
from gnn_attention.attention.kernels.finite import all_finite

H, D, DV = 3, 5, 7
NAN, INF = float("nan"), float("inf")

GRAPHS = {
    "window_dilated": lambda: graphs.window([60, 60], 8, dilation=3),  # auto: tiled
    "window_causal": lambda: graphs.window([50, 50], 5, causal=True),
    "full_ragged": lambda: graphs.full([8, 3]),
    "full_uniform": lambda: graphs.full([6, 6]),
    "causal_uniform": lambda: graphs.causal([9, 9]),
    "causal_ragged": lambda: graphs.causal([5, 9]),
    "causal_bottom_right": lambda: graphs.causal([4, 4], align="bottom_right", src_lengths=[7, 7]),
    "cross_ragged": lambda: graphs.cross([7, 4], [5, 3]),
    "cross_causal": lambda: graphs.cross([7, 7], [5, 5], causal=True),
}
KERNELS = ("auto", "dense", "csr", "tiled")


def _inputs(g, seed=0, dtype=torch.float32):
    gen = torch.Generator().manual_seed(seed)
    return (torch.randn(g.num_dst, H, D, generator=gen, dtype=dtype),
            torch.randn(g.num_src, H, D, generator=gen, dtype=dtype),
            torch.randn(g.num_src, H, DV, generator=gen, dtype=dtype))


def _same_semantics(out, ref):
    assert torch.equal(out.isnan(), ref.isnan()), \
        f"NaN rows {int(out.isnan().any(-1).any(-1).sum())}, reference {int(ref.isnan().any(-1).any(-1).sum())}"
    assert torch.equal(out.isinf(), ref.isinf())
    ok = torch.isfinite(ref)
    assert (out[ok] - ref[ok]).abs().max() <= 1e-5 if ok.any() else True


def _runs(g, q, k, v, **kw):
    """``(kernel, out)`` for every kernel that can run ``g``."""
    for kernel in KERNELS:
        if kernel == "tiled" and g.pattern.name != "window":
            continue
        yield kernel, graph_attention(q, k, v, g, backend=kernel, **kw)


@pytest.mark.parametrize("graph", sorted(GRAPHS))
@pytest.mark.parametrize("which", ["q", "k", "v"])
@pytest.mark.parametrize("where", ["first", "last"])
@pytest.mark.parametrize("value", [NAN, pytest.param(INF, marks=pytest.mark.slow)],
                         ids=["nan", "inf"])
def test_one_bad_value_reaches_the_reference_rows(graph, which, where, value):
    g = GRAPHS[graph]()
    q, k, v = _inputs(g)
    t = {"q": q, "k": k, "v": v}[which]
    # token 0, or the last token some edge reads (row 1 of the edges for q, row 0 for k and v)
    last = int(g.edge_index[1 if which == "q" else 0].max())
    t[0 if where == "first" else last, 1, 2] = value
    ref = graph_attention(q, k, v, g, backend="reference")
    # the case is meaningful: some row reads the bad value (an inf may leave the reference
    # finite: an inf query whose only edge scores -inf is a fully masked row, zero)
    assert value != value and not torch.isfinite(ref).all() or value == INF
    for kernel, out in _runs(g, q, k, v):
        _same_semantics(out, ref)


def test_nan_in_sequence_0_never_reaches_sequence_1():
    """The attack of the issue: one NaN in token 0 of sequence 0 under auto/dense/tiled."""
    for g in (graphs.window([200, 200], 8, dilation=3), graphs.full([8, 3])):
        q, k, v = _inputs(g)
        for t in (k, v):
            t[0, 0, 0] = NAN
        first = int(g.dst_ptr[1])
        for kernel, out in _runs(g, q, k, v):
            assert torch.isfinite(out[first:]).all(), kernel
            assert out[:first].isnan().any(), kernel


def test_window_nan_rows_are_exactly_the_readers():
    """Inside a sequence: NaN in token 0's key and value reaches the targets with an edge from
    token 0 (|t| <= 8, t divisible by 3: t = 0, 3, 6), nothing else."""
    g = graphs.window([200, 200], 8, dilation=3)
    q, k, v = _inputs(g)
    k[0], v[0] = NAN, NAN
    readers = (g.edge_index[1][g.edge_index[0] == 0]).sort().values
    assert readers.tolist() == [0, 3, 6]
    for kernel, out in _runs(g, q, k, v):
        rows = out.isnan().any(-1).any(-1).nonzero().flatten()
        assert rows.tolist() == readers.tolist(), kernel


def test_gradients_of_finite_rows_stay_finite_on_the_fallback():
    """A NaN in sequence 0 leaves sequence 1's gradients finite (the exact kernel runs)."""
    g = graphs.full([8, 3])
    q, k, v = (t.requires_grad_() for t in _inputs(g))
    with torch.no_grad():
        v[0, 0, 0] = NAN
    out = graph_attention(q, k, v, g, backend="dense")
    out[8:].sum().backward()
    assert torch.isfinite(q.grad[8:]).all() and torch.isfinite(v.grad[8:]).all()


@pytest.mark.parametrize("build", [lambda: graphs.cross([0], [10]),
                                   lambda: graphs.from_edge_index(
                                       torch.zeros(2, 0, dtype=torch.long), [6], [10])],
                         ids=["no_keys", "no_edges"])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32], ids=str)
def test_empty_graph_gives_exact_zeros_for_large_half_inputs(build, dtype):
    g = build()
    q, k, v = (t * 1e4 for t in _inputs(g, dtype=dtype))
    q.requires_grad_()
    for kernel in ("auto", "dense", "csr", "reference"):
        out = graph_attention(q, k, v, g, backend=kernel)
        assert out.dtype == dtype and out.shape == (10, H, DV)
        assert torch.equal(out, torch.zeros_like(out)), kernel
        (grad,) = torch.autograd.grad(out.float().sum(), q)
        assert torch.equal(grad, torch.zeros_like(grad))


def test_empty_graph_ignores_nan_inputs():
    """No edge reads anything: NaN inputs still give zeros (as the reference)."""
    g = graphs.cross([0], [4])
    q, k, v = _inputs(g)
    q[:] = NAN
    for kernel in ("auto", "dense", "csr", "reference"):
        assert torch.equal(graph_attention(q, k, v, g, backend=kernel), torch.zeros(4, H, DV))


@pytest.mark.parametrize("kernel", ["auto", "dense", "csr", "reference"])
def test_bfloat16_scores_beyond_float32_raise_a_clear_error(kernel):
    g = graphs.causal([6])
    q, k, v = (t.bfloat16() for t in _inputs(g))
    with pytest.raises(ValueError, match="beyond the float32 range"):
        graph_attention(q * 1e20, k * 1e20, v, g, backend=kernel)
    out = graph_attention(q * 1e15, k * 1e15, v, g, backend=kernel)  # 1e30 * D: representable
    assert torch.isfinite(out).all()


def test_bfloat16_range_check_ignores_non_finite_entries():
    g = graphs.causal([6])
    q, k, v = (t.bfloat16() for t in _inputs(g))
    q[5, 0, 0] = NAN
    out = graph_attention(q, k, v, g)
    assert out[5, 0].isnan().all() and torch.isfinite(out[:5]).all()


def test_zero_head_width_is_a_clear_error():
    g = graphs.causal([4])
    with pytest.raises(ValueError, match="head width D >= 1"):
        graph_attention(torch.randn(4, H, 0), torch.randn(4, H, 0), torch.randn(4, H, DV), g)


@pytest.mark.parametrize("dtype", [torch.bool, torch.complex64, torch.int64], ids=str)
def test_non_real_edge_bias_is_rejected(dtype):
    g = graphs.causal([4])
    q, k, v = _inputs(g)
    bias = torch.ones(g.num_edges, H).to(dtype)
    with pytest.raises(TypeError, match="real floating-point"):
        graph_attention(q, k, v, g, edge_bias=bias)


def test_memory_limit_below_one_byte_is_an_error_not_off(monkeypatch):
    g = graphs.full([6])
    q, k, v = _inputs(g)
    monkeypatch.setenv(memory.ENV_VAR, "0.5")
    with pytest.raises(ValueError, match="byte count of at least 1"):
        graph_attention(q, k, v, g)
    monkeypatch.setenv(memory.ENV_VAR, "1")
    with pytest.raises(AttentionMemoryError, match="limit of 1 B"):
        graph_attention(q, k, v, g)


@pytest.mark.parametrize("text", ["1e400", "1e31", "2e30GiB"])
def test_memory_limit_beyond_range_is_a_clear_error(monkeypatch, text):
    g = graphs.full([6])
    q, k, v = _inputs(g)
    monkeypatch.setenv(memory.ENV_VAR, text)
    with pytest.raises(ValueError, match="at most 1e\\+30"):
        graph_attention(q, k, v, g)


def test_all_finite_detects_every_kind_of_bad_value():
    x = torch.full((5, 3), 6e4, dtype=torch.float16)  # a float16 sum would overflow
    assert all_finite(x)
    for bad in (NAN, INF, -INF):
        y = x.clone()
        y[2, 1] = bad
        assert not all_finite(x, y)
    z = torch.tensor([INF, -INF])  # inf - inf: still caught
    assert not all_finite(z) and all_finite(torch.zeros(0))


@pytest.mark.parametrize("build", [lambda: graphs.full([5]), lambda: graphs.causal([1])],
                         ids=["full", "causal_one_token"])
def test_sdpa_dropping_a_nan_query_is_caught(build):
    """With D = 1, SDPA returned 0 for a NaN query where the reference gives NaN."""
    g = build()
    q, k, v = torch.randn(g.num_dst, 1, 1), torch.randn(g.num_src, 1, 1), torch.randn(g.num_src, 1, 1)
    q[0] = NAN
    ref = graph_attention(q, k, v, g, backend="reference")
    for kernel in ("auto", "dense"):
        assert torch.equal(graph_attention(q, k, v, g, backend=kernel).isnan(), ref.isnan())
