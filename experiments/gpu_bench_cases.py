"""The cases of experiments/gpu_bench.py and what measures them: each pattern's predicate, the
library graph and SDPA mask it stands for, timing (CUDA events or perf_counter), peak memory,
FlexAttention's entry points and the float64 reference on a slice. See gpu_bench.py for the
notation and the protocol.
"""
from __future__ import annotations

import math
import statistics
import time
import warnings

import torch

from gnn_attention import graphs

PATTERNS = ("full", "causal", "window", "ragged")


def predicate(pattern: str, w: int, lengths: torch.Tensor):
    """``allow(b, h, q, kv) -> bool tensor`` (FlexAttention's mask_mod signature), or None = all."""
    if pattern == "full":
        return None
    if pattern == "causal":
        return lambda b, h, q, kv: kv <= q
    if pattern == "window":
        return lambda b, h, q, kv: (q - kv).abs() <= w
    if pattern == "ragged":
        return lambda b, h, q, kv: kv < lengths[b]
    raise ValueError(f"unknown pattern {pattern!r}; expected one of {PATTERNS}")


def case_lengths(pattern: str, cfg, T: int) -> list:
    """Sequence lengths of a case (``cfg``: gpu_bench.Config, its B and seed)."""
    if pattern != "ragged":
        return [T] * cfg.B
    g = torch.Generator().manual_seed(cfg.seed + T)
    return torch.randint(max(1, T // 8), T + 1, (cfg.B,), generator=g).tolist()


def library_graph(pattern: str, lengths: list, w: int, device) -> graphs.TokenGraph:
    if pattern == "causal":
        return graphs.causal(lengths, device=device)
    if pattern == "window":
        return graphs.window(lengths, w, device=device)
    return graphs.full(lengths, device=device)  # full and ragged (per-sequence full graphs)


def dense_mask(allow, B: int, T: int, device):
    """The predicate evaluated on ``[B, 1, T, T]`` (broadcast where it does not depend on b / q)."""
    b = torch.arange(B, device=device).view(B, 1, 1, 1)
    t = torch.arange(T, device=device)
    return allow(b, 0, t.view(1, 1, T, 1), t.view(1, 1, 1, T)).expand(B, 1, T, T)


class Timer:
    """Median / min milliseconds of ``fn()``: CUDA events on a GPU, perf_counter elsewhere."""

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"

    def sync(self):
        if self.cuda:
            torch.cuda.synchronize()

    def __call__(self, fn, reps: int, warmup: int, before=None) -> dict:
        t0 = time.perf_counter()
        fn()
        self.sync()
        first_s = time.perf_counter() - t0
        for _ in range(warmup - 1):
            fn()
        self.sync()
        ms = []
        for _ in range(reps):
            if before is not None:
                before()
            if self.cuda:
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record()
                fn()
                end.record()
                end.synchronize()
                ms.append(start.elapsed_time(end))
            else:
                t = time.perf_counter()
                fn()
                ms.append((time.perf_counter() - t) * 1e3)
        return {"median_ms": statistics.median(ms), "min_ms": min(ms), "first_call_s": first_s}


def peak_mib(fn, device: torch.device):
    """Run ``fn()`` once; the peak memory it allocated above the level before, or None (CPU)."""
    if device.type != "cuda":
        fn()
        return None
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats(device)
    base = torch.cuda.memory_allocated(device)
    fn()
    torch.cuda.synchronize()
    return (torch.cuda.max_memory_allocated(device) - base) / 2**20


def flex_functions(mode: str):
    """``(flex_attention callable, create_block_mask)`` or a reason string if Flex cannot run."""
    if mode == "off":
        return "flex off (--flex off)"
    try:
        from torch.nn.attention.flex_attention import create_block_mask, flex_attention
    except ImportError as e:  # older torch
        return f"FlexAttention unavailable: {e}"
    # Eager flex (the CPU dry run) warns once that it materialises the scores: that is known.
    warnings.filterwarnings("ignore", message="flex_attention called without torch.compile")
    if mode == "compiled":
        # One compiled function serves every case; each (shape, dtype, mask_mod) is a recompile,
        # more than dynamo's default limit of 8, past which it would silently run eager.
        for name in ("cache_size_limit", "recompile_limit", "accumulated_cache_size_limit",
                     "accumulated_recompile_limit"):
            if hasattr(torch._dynamo.config, name):
                setattr(torch._dynamo.config, name, max(getattr(torch._dynamo.config, name), 512))
        return torch.compile(flex_attention, dynamic=False), create_block_mask
    return flex_attention, create_block_mask


def reference_slice(q4, k4, v4, allow, length: int, rows: int) -> tuple:
    """float64 masked softmax for sequence 0, every head, the first/last ``rows`` real queries."""
    idx = torch.arange(length, device=q4.device)
    idx = idx if length <= 2 * rows else torch.cat([idx[:rows], idx[-rows:]])
    q, k, v = (x[0].double() for x in (q4[:, :, idx], k4, v4))             # [H, R, D], [H, S, D]
    s = q @ k.transpose(-1, -2) / math.sqrt(q.size(-1))                    # [H, R, S]
    if allow is not None:
        S = k.size(1)
        keep = allow(torch.zeros((), dtype=torch.long, device=q.device), 0, idx.view(-1, 1),
                     torch.arange(S, device=q.device).view(1, -1))
        s = s.masked_fill(~keep.expand_as(s), float("-inf"))
    return idx, torch.softmax(s, -1) @ v
