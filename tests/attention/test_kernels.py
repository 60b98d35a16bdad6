"""Every kernel against the message-passing reference, on every pattern, forward and backward.

Sizes are small and pairwise distinct (H=3, D=5, Dv=7, lengths 5..13) so a swapped axis fails.
Tolerances: float32 outputs 1e-5, gradients 1e-4 (abs); float64 gradcheck for the CSR backward;
bfloat16 judged against a float64 golden.
"""
import pytest
import torch

from gnn_attention import graphs
from gnn_attention.attention.functional import graph_attention
from gnn_attention.attention.kernels import AttentionMemoryError, choose, memory

H, D, DV = 3, 5, 7


def _bigbird(n, w=2, n_global=2, seed=0):
    """Window + global tokens + a few random edges (a P7-like graph)."""
    g = torch.Generator().manual_seed(seed)
    rand = torch.rand(max(n), max(n), generator=g) < 0.1
    return graphs.from_predicate(
        n, lambda t, s, T, S: ((t - s).abs() <= w) | (t < n_global) | (s < n_global) | rand[t, s],
        name="bigbird")


def _random(n, k=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    ptr = [0]
    for x in n:
        ptr.append(ptr[-1] + x)
    src, dst = [], []
    for b, x in enumerate(n):
        for i in range(x):
            for j in torch.randperm(x, generator=g)[:k].tolist():
                src.append(ptr[b] + j)
                dst.append(ptr[b] + i)
    return graphs.from_edge_index(torch.tensor([src, dst]), n, n)


def _with_empty_rows():
    """A dense-mask graph where two targets have no incoming edge."""
    m = torch.rand(2, 6, 7, generator=torch.Generator().manual_seed(1)) < 0.5
    m[0, 2] = False
    m[1, 5] = False
    return graphs.from_dense_mask(m, "sdpa")


GRAPHS = {
    "full_uniform": lambda: graphs.full([6, 6]),
    "full_ragged": lambda: graphs.full([5, 7, 3]),
    "causal_uniform": lambda: graphs.causal([6, 6]),
    "causal_ragged": lambda: graphs.causal([5, 9]),
    "causal_bottom_right": lambda: graphs.causal([4, 4], align="bottom_right", src_lengths=[7, 7]),
    "cross_uniform": lambda: graphs.cross([7, 7], [5, 5]),
    "cross_ragged": lambda: graphs.cross([7, 4], [5, 3]),
    "cross_causal": lambda: graphs.cross([7, 7], [5, 5], causal=True),
    "window": lambda: graphs.window([13, 13], 2),
    "window_causal": lambda: graphs.window([13, 13], 3, causal=True),
    "window_dilated": lambda: graphs.window([13, 13], 5, dilation=2),
    "window_dilated_causal": lambda: graphs.window([11], 6, causal=True, dilation=3),
    "window_ragged": lambda: graphs.window([13, 8], 2),
    "bigbird": lambda: _bigbird([11, 11]),
    "random": lambda: _random([9, 6]),
    "empty_rows": _with_empty_rows,
}
KERNELS_FOR = {name: ("dense", "csr") for name in GRAPHS}
for name in ("window", "window_causal", "window_dilated", "window_dilated_causal"):
    KERNELS_FOR[name] = ("dense", "csr", "tiled")
CASES = [(g, kern) for g in GRAPHS for kern in KERNELS_FOR[g]]


def _inputs(g, dtype=torch.float32, seed=0):
    gen = torch.Generator().manual_seed(seed)
    mk = lambda n, d: torch.randn(n, H, d, generator=gen, dtype=dtype).requires_grad_()
    return mk(g.num_dst, D), mk(g.num_src, D), mk(g.num_src, DV)


def _run(g, backend, q, k, v, **kw):
    """Output, alpha and the gradients of a fixed random loss on both."""
    out, alpha = graph_attention(q, k, v, g, backend=backend, return_attention_weights=True, **kw)
    gen = torch.Generator().manual_seed(7)
    w_out = torch.randn(out.shape, generator=gen, dtype=out.dtype)
    w_alpha = torch.randn(alpha.shape, generator=gen, dtype=alpha.dtype)
    leaves = [t for t in (q, k, v, kw.get("edge_bias")) if t is not None and t.requires_grad]
    grads = torch.autograd.grad((out * w_out).sum() + (alpha * w_alpha).sum(), leaves)
    return out, alpha, grads


def _close(a, b, tol):
    assert torch.isfinite(a).all()
    assert (a - b).abs().max().item() <= tol if a.numel() else True


@pytest.mark.parametrize("graph,kernel", CASES)
def test_kernel_matches_reference(graph, kernel):
    g = GRAPHS[graph]()
    q, k, v = _inputs(g)
    ref = _run(g, "reference", q, k, v)
    got = _run(g, kernel, q, k, v)
    _close(got[0], ref[0], 1e-5)
    _close(got[1], ref[1], 1e-5)
    for a, b in zip(got[2], ref[2]):
        _close(a, b, 1e-4)


@pytest.mark.parametrize("graph,kernel", [c for c in CASES if c[0] in
                                          ("full_ragged", "window_dilated", "empty_rows")])
@pytest.mark.parametrize("bias_heads", [H, 1])
def test_edge_bias_with_removed_edges(graph, kernel, bias_heads):
    """A bias with -inf entries (one target losing every edge for one head) matches the reference,
    and those rows are exact zeros."""
    g = GRAPHS[graph]()
    q, k, v = _inputs(g)
    bias = torch.randn(g.num_edges, bias_heads, generator=torch.Generator().manual_seed(3))
    bias[::5] = float("-inf")
    bias[g.edge_index[1] == 1, 0] = float("-inf")  # target 1, head 0: no finite score
    bias.requires_grad_()
    ref = _run(g, "reference", q, k, v, edge_bias=bias)
    got = _run(g, kernel, q, k, v, edge_bias=bias)
    assert got[0][1, 0].abs().max() == 0
    _close(got[0], ref[0], 1e-5)
    _close(got[1], ref[1], 1e-5)
    for a, b in zip(got[2], ref[2]):
        _close(a, b, 1e-4)


@pytest.mark.parametrize("kernel", ["dense", "csr", "tiled"])
@pytest.mark.parametrize("score", ["dot", "general"])
def test_scores_fold_into_the_query(kernel, score):
    g = graphs.window([13, 13], 4)
    q, k, v = _inputs(g)
    w = torch.randn(H, D, D, generator=torch.Generator().manual_seed(5)) if score == "general" \
        else None
    ref = _run(g, "reference", q, k, v, score=score, score_weight=w)
    got = _run(g, kernel, q, k, v, score=score, score_weight=w)
    _close(got[0], ref[0], 1e-5)
    for a, b in zip(got[2], ref[2]):
        _close(a, b, 1e-4)


@pytest.mark.parametrize("kernel", ["auto", "dense"])
def test_raw_edge_index_unsorted(kernel):
    """A raw edge_index (auto: the CSR kernel) in any order: alpha comes back in that order."""
    g = _random([9, 6])
    ei = g.edge_index[:, torch.randperm(g.num_edges, generator=torch.Generator().manual_seed(2))]
    q, k, v = _inputs(g)
    assert choose(ei) == "csr"
    ref = _run(ei, "reference", q, k, v)
    got = _run(ei, kernel, q, k, v)
    for a, b in zip(got[:2], ref[:2]):
        _close(a, b, 1e-5)
    for a, b in zip(got[2], ref[2]):
        _close(a, b, 1e-4)


def test_csr_gradcheck_float64():
    g = _bigbird([5], w=1)
    q, k, v = _inputs(g, torch.float64)
    bias = torch.randn(g.num_edges, H, dtype=torch.float64).requires_grad_()
    with torch.no_grad():
        bias[::4, 1] = float("-inf")

    def f(q, k, v, b):
        out, alpha = graph_attention(q, k, v, g, edge_bias=b, backend="csr",
                                     return_attention_weights=True)
        return out, alpha

    assert torch.autograd.gradcheck(f, (q, k, v, bias), eps=1e-6, atol=1e-7)


@pytest.mark.parametrize("kernel", ["dense", "csr", "tiled", "reference"])
def test_empty_rows_are_zero_with_zero_grads(kernel):
    """Targets without an incoming edge: exact zeros, zero and finite gradients."""
    g = graphs.window([9, 9], 2)
    q, k, v = _inputs(g)
    bias = torch.zeros(g.num_edges, 1)
    bias[g.edge_index[1] == 4] = float("-inf")
    out = graph_attention(q, k, v, g, edge_bias=bias, backend=kernel)
    assert out[4].abs().max() == 0
    (out.sum()).backward()
    assert torch.isfinite(q.grad).all() and q.grad[4].abs().max() == 0


def test_graph_without_edges():
    g = graphs.from_edge_index(torch.zeros(2, 0, dtype=torch.long), [4], [5])
    q, k, v = _inputs(g)
    for kernel in ("dense", "csr", "reference"):
        out, alpha = graph_attention(q, k, v, g, backend=kernel, return_attention_weights=True)
        assert out.shape == (5, H, DV) and out.abs().max() == 0 and alpha.shape == (0, H)


@pytest.mark.parametrize("kernel", ["dense", "csr", "tiled"])
@pytest.mark.parametrize("with_bias", [False, True])
def test_bfloat16_against_float64_golden(kernel, with_bias):
    """bf16 inputs: error against a float64 golden within 3x the error of the reference kernel on
    the same bf16 inputs (plus a 1e-2 floor for bf16 rounding of the output)."""
    g = graphs.window([13, 13], 3)
    q, k, v = (t.detach().bfloat16() for t in _inputs(g))
    bias = torch.randn(g.num_edges, H).bfloat16() if with_bias else None
    gold = graph_attention(q.double(), k.double(), v.double(), g, backend="reference",
                           edge_bias=None if bias is None else bias.double())
    ref = (graph_attention(q, k, v, g, backend="reference", edge_bias=bias).double()
           - gold).abs().max()
    out = graph_attention(q, k, v, g, backend=kernel, edge_bias=bias)
    assert out.dtype == torch.bfloat16
    assert (out.double() - gold).abs().max() <= 3 * ref + 1e-2


@pytest.mark.parametrize("graph,expected", [
    ("full_uniform", "dense"), ("full_ragged", "dense"), ("causal_uniform", "dense"),
    ("cross_ragged", "dense"), ("bigbird", "dense"), ("random", "dense"),
    ("window_ragged", "dense")])
def test_auto_plan_per_pattern(graph, expected):
    assert choose(GRAPHS[graph]()) == expected


def test_auto_plan_tiles_long_windows_and_caches_it():
    g = graphs.window([512, 512], 16, dilation=2)
    assert choose(g) == "tiled" and g.cache["kernel"] == "tiled"
    q, k, v = _inputs(g)
    graph_attention(q, k, v, g)
    tiles = g.cache["tiled"]
    graph_attention(q, k, v, g)
    assert g.cache["tiled"] is tiles  # preprocessing reused, not rebuilt
    assert choose(g, score="additive") == "reference" and choose(g, dropout_p=0.1) == "reference"


def test_pinned_kernel_that_cannot_serve_raises():
    g = graphs.causal([6])
    q, k, v = _inputs(g)
    with pytest.raises(ValueError, match="tiled.*window graphs only"):
        graph_attention(q, k, v, g, backend="tiled")
    with pytest.raises(ValueError, match="backend must be one of"):
        graph_attention(q, k, v, g, backend="flash")


def test_memory_guard_raises_before_allocating(monkeypatch):
    g = graphs.full([64, 64])
    q, k, v = _inputs(g)
    monkeypatch.setenv(memory.ENV_VAR, "64KiB")
    with pytest.raises(AttentionMemoryError, match=r"'reference'.*limit of 64\.0 KiB.*"
                                                   r"GNN_ATTENTION_MEMORY_LIMIT"):
        graph_attention(q, k, v, g, backend="reference")
    monkeypatch.setenv(memory.ENV_VAR, "off")
    graph_attention(q, k, v, g, backend="reference")
    monkeypatch.setenv(memory.ENV_VAR, "lots")
    with pytest.raises(ValueError, match="byte count"):
        graph_attention(q, k, v, g)


def test_parse_bytes():
    assert memory.parse_bytes("8GiB") == 8 * 2**30
    assert memory.parse_bytes("2e9") == 2 * 10**9
    assert memory.parse_bytes("512 MiB") == 512 * 2**20
    assert memory.parse_bytes("off") == 0


def test_auto_plan_sparse_graphs_run_csr():
    """Below 10 % of the T x S pairs the CSR kernel runs; raw edge_index tensors always do."""
    assert choose(graphs.window([90, 70], 2)) == "csr"
    assert choose(_random([60, 40], k=3)) == "csr"
    assert choose(_random([60, 40], k=3).edge_index) == "csr"


@pytest.mark.parametrize("lengths", [[], [0], [0, 0]])
@pytest.mark.parametrize("backend", ["auto", "reference", "dense", "tiled", "csr"])
def test_empty_window_batches_with_a_bias_run_on_every_backend(lengths, backend):
    """No sequence, or sequences of length 0 (found by the fuzz suite: the tiled kernel divided
    by B * d = 0 when addressing the bias slots)."""
    g = graphs.window(lengths, 2)
    q = torch.randn(0, 1, 3, requires_grad=True)
    out = graph_attention(q, torch.randn(0, 1, 3), torch.randn(0, 1, 3), g,
                          edge_bias=torch.zeros(0, 1), backend=backend)
    out.sum().backward()
    assert out.shape == (0, 1, 3) and q.grad.shape == (0, 1, 3)
