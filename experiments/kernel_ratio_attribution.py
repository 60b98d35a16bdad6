"""Where the kernel-level R1/R2 time goes at T=128: graph_attention with and without the non-finite
check (kernels.finite.isolated patched to True for the second) against SDPA, B=8, H=8, D=64,
fp32, 2 threads, median of 25 interleaved calls; prints milliseconds and ratios.

    python experiments/kernel_ratio_attribution.py
"""
import statistics
import time

import torch
import torch.nn.functional as F

from gnn_attention import graphs
from gnn_attention.attention import kernels
from gnn_attention.attention.functional import graph_attention

B, H, D, T, REPS = 8, 8, 64, 128, 25


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def _no_check(fn):
    real = kernels.finite.isolated
    kernels.finite.isolated = lambda *args: True
    try:
        return _timed(fn)
    finally:
        kernels.finite.isolated = real


def measure(pattern: str) -> dict:
    g = getattr(graphs, pattern)([T] * B)
    q, k, v = (torch.randn(B * T, H, D) for _ in range(3))
    q4, k4, v4 = (x.view(B, T, H, D).transpose(1, 2) for x in (q, k, v))

    def lib():
        return graph_attention(q, k, v, g)

    def sdpa():
        return F.scaled_dot_product_attention(q4, k4, v4, is_causal=pattern == "causal")

    for _ in range(3):
        lib(), sdpa()
    times = {"lib": [], "lib_nocheck": [], "sdpa": []}
    for _ in range(REPS):
        times["lib"].append(_timed(lib))
        times["lib_nocheck"].append(_no_check(lib))
        times["sdpa"].append(_timed(sdpa))
    return {name: statistics.median(ts) * 1e3 for name, ts in times.items()}


if __name__ == "__main__":
    torch.set_num_threads(2)
    for pattern in ("full", "causal"):
        ms = measure(pattern)
        print(pattern, {n: round(t, 3) for n, t in ms.items()},
              "ratio", round(ms["lib"] / ms["sdpa"], 3),
              "no check", round(ms["lib_nocheck"] / ms["sdpa"], 3))
