"""Deterministic mode: outputs and gradients are bitwise identical run to run (CPU here).

Notation: N nodes, E edges, H heads, D/Dv widths, C = embed_dim. "Bitwise" = the raw bytes of
every tensor are equal (``torch.equal`` alone would let -0.0 == +0.0 and hide NaN payloads).
"""
from __future__ import annotations

import hashlib
import os
import subprocess
import sys

import pytest
import torch

from gnn_attention import MultiheadAttentionConv, graphs
from gnn_attention.attention.functional import graph_attention
from gnn_attention.attention.kernels import BACKENDS
from gnn_attention.training.determinism import CUBLAS_ENV, deterministic

H, D, DV = 3, 11, 13
PATTERNS = {
    "full": lambda: graphs.full([7, 5]),
    "causal": lambda: graphs.causal([6, 9], align="bottom_right", src_lengths=[8, 9]),
    "window": lambda: graphs.window([12, 12], 2),
    "cross": lambda: graphs.cross([10, 3], [4, 6]),
    "random_raw": lambda: torch.tensor([[0, 3, 2, 4, 1, 0, 5], [1, 0, 4, 4, 2, 3, 3]]),
}


def bits(t: torch.Tensor) -> torch.Tensor:
    return t.detach().contiguous().reshape(-1).view(torch.uint8)


def assert_bitwise_equal(a, b) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert x.dtype == y.dtype and x.shape == y.shape
        assert torch.equal(bits(x), bits(y))


def attention_run(pattern: str, backend: str, dtype: torch.dtype, seed: int):
    """Forward + backward of graph attention with edge bias; every output and gradient."""
    g = PATTERNS[pattern]()
    ei = g if isinstance(g, torch.Tensor) else g.edge_index
    n_src, n_dst = (6, 5) if isinstance(g, torch.Tensor) else (g.num_src, g.num_dst)
    gen = torch.Generator().manual_seed(1234)
    q, k = torch.randn(n_dst, H, D, generator=gen), torch.randn(n_src, H, D, generator=gen)
    v, bias = torch.randn(n_src, H, DV, generator=gen), torch.randn(ei.size(1), H, generator=gen)
    leaves = [t.to(dtype).requires_grad_() for t in (q, k, v, bias)]
    with deterministic(seed=seed):
        try:
            out, alpha = graph_attention(*leaves[:3], g, edge_bias=leaves[3], backend=backend,
                                         return_attention_weights=True)
        except ValueError as exc:
            if f"backend '{backend}' cannot run" in str(exc):
                pytest.skip(f"{backend} does not serve {pattern}")
            raise
        loss = (out.float() ** 2).sum() + (alpha.float() * torch.arange(alpha.numel()).view_as(
            alpha)).sum()
        grads = torch.autograd.grad(loss, leaves)
    return [out, alpha, *grads]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("pattern", sorted(PATTERNS))
def test_every_backend_is_bitwise_reproducible(pattern, backend, dtype):
    first = attention_run(pattern, backend, dtype, seed=0)
    assert_bitwise_equal(attention_run(pattern, backend, dtype, seed=0), first)


def layer_run(seed: int, backend: str = "auto"):
    """A training step's forward + backward through the layer with attention dropout."""
    torch.manual_seed(0)  # the same weights and inputs every time; only ``seed`` varies dropout
    layer = MultiheadAttentionConv(24, 4, dropout=0.3, backend=backend).train()
    g = graphs.causal([9, 14, 5])
    x = torch.randn(g.num_dst, 24, requires_grad=True)
    with deterministic(seed=seed):
        out = layer(x, g)
        grads = torch.autograd.grad((out ** 2).sum(), [x, *layer.parameters()])
    return [out, *grads]


@pytest.mark.parametrize("backend", ["auto", "message_passing"])
def test_layer_with_dropout_is_bitwise_reproducible_and_the_seed_matters(backend):
    first = layer_run(seed=3, backend=backend)
    assert_bitwise_equal(layer_run(seed=3, backend=backend), first)
    other = layer_run(seed=4, backend=backend)  # control: a different dropout mask changes bits
    assert not torch.equal(bits(other[0]), bits(first[0]))


_SCRIPT = r"""
import hashlib, torch
from gnn_attention import MultiheadAttentionConv, graphs
from gnn_attention.training.determinism import deterministic
torch.set_num_threads(2)
torch.manual_seed(0)
layer = MultiheadAttentionConv(32, 4, dropout=0.25).train()
h = hashlib.sha256()
for g in (graphs.causal([17, 30]), graphs.window([40], 3), graphs.cross([25, 9], [7, 11])):
    x_dst = torch.randn(g.num_dst, 32, requires_grad=True)
    x_src = torch.randn(g.num_src, 32, requires_grad=True) if g.bipartite else x_dst
    with deterministic(seed=5):
        out = layer((x_src, x_dst) if g.bipartite else x_dst, g)
        grads = torch.autograd.grad(out.pow(2).sum(), [x_dst, *layer.parameters()])
    for t in (out, *grads):
        h.update(t.detach().contiguous().numpy().tobytes())
print(h.hexdigest())
"""


@pytest.mark.slow  # two fresh interpreters importing torch + PyG: ~10-30 s on 2 shared cores
def test_fresh_processes_give_the_same_bits():
    env = {k: v for k, v in os.environ.items() if k != CUBLAS_ENV}
    procs = [subprocess.Popen([sys.executable, "-c", _SCRIPT], stdout=subprocess.PIPE, text=True,
                              env=env) for _ in range(2)]
    digests = [p.communicate(timeout=300)[0].strip() for p in procs]
    assert all(p.returncode == 0 for p in procs)
    assert len(digests[0]) == 64 and digests[0] == digests[1]


def test_deterministic_restores_every_setting():
    before = (torch.are_deterministic_algorithms_enabled(),
              torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark,
              os.environ.get(CUBLAS_ENV))
    with pytest.raises(RuntimeError, match="inside"), deterministic(seed=1):
        assert torch.are_deterministic_algorithms_enabled()
        assert torch.backends.cudnn.deterministic and not torch.backends.cudnn.benchmark
        assert os.environ[CUBLAS_ENV] == ":4096:8" or before[3] is not None
        raise RuntimeError("an error inside the block")
    after = (torch.are_deterministic_algorithms_enabled(),
             torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark,
             os.environ.get(CUBLAS_ENV))
    assert after == before


def test_seed_none_leaves_the_random_stream_alone():
    torch.manual_seed(7)
    expected = torch.rand(3)
    torch.manual_seed(7)
    with deterministic(seed=None):
        pass
    assert torch.equal(torch.rand(3), expected)
    assert hashlib.sha256(bits(expected).numpy().tobytes()).hexdigest()  # non-empty bytes


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("backend", BACKENDS)
def test_cuda_backend_is_bitwise_reproducible(backend):
    # No dropout: with dropout a pinned kernel may hand over to another (SDPA's dropout or the
    # reference), and the point here is the pinned kernel's own summation order on the GPU.
    def run(g):
        torch.manual_seed(0)
        layer = MultiheadAttentionConv(64, 4, backend=backend).cuda()
        x = torch.randn(g.num_dst, 64, device="cuda", requires_grad=True)
        with deterministic(seed=0):
            out = layer(x, g)
            return [out, *torch.autograd.grad(out.square().sum(), [x, *layer.parameters()])]

    served = 0
    for g in (graphs.causal([300, 517], device="cuda"), graphs.window([400, 400], 16,
                                                                     device="cuda")):
        try:
            first = run(g)
        except ValueError as exc:
            if f"backend '{backend}' cannot run" in str(exc):
                continue
            raise
        assert_bitwise_equal(run(g), first)
        served += 1
    assert served
