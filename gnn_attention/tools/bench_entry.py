"""Entry-point benchmark (ratio R10): the ``MultiheadAttention`` drop-in against
``nn.MultiheadAttention``, weights copied, ``need_weights=False``.

Notation: B batch, T = S sequence length, C = embed_dim, H heads.

    R10 = t(gnn_attention.MultiheadAttention) / t(nn.MultiheadAttention)      target <= 1.10

Cases (the masks users pass): ``none``; ``key_padding`` (a bool right-padding mask, lengths drawn
in [T/2, T]); ``causal`` (the float causal mask with ``is_causal=True``); ``float_mask`` (a finite
additive ``[T, T]`` bias, ALiBi-like). Modes: ``eval`` (forward under ``no_grad``, where torch
takes its fused fast path) and ``train`` (forward + backward). Both modules run side by side in
one process, interleaved, after a warm-up (which also fills the graph cache); each figure is the
median of ``reps`` repetitions. Every case also records max |out_ours - out_torch|.
"""
from __future__ import annotations

import json
import os
import platform
import statistics
import time
from typing import Dict, Iterable, List

import torch
from torch import nn

from gnn_attention.models.mha import MultiheadAttention

CASES = ("none", "key_padding", "causal", "float_mask")
MODES = ("eval", "train")
TARGET = 1.10


def case_inputs(case: str, B: int, T: int, device="cpu") -> dict:
    """The forward keyword arguments (masks) of one case."""
    g = torch.Generator().manual_seed(T)
    if case == "none":
        return {}
    if case == "key_padding":
        n = torch.randint(T // 2, T + 1, (B,), generator=g)
        pad = torch.arange(T).view(1, T) >= n.view(B, 1)
        return {"key_padding_mask": pad.to(device)}
    if case == "causal":
        return {"attn_mask": nn.Transformer.generate_square_subsequent_mask(T, device=device),
                "is_causal": True}
    if case == "float_mask":
        pos = torch.arange(T, dtype=torch.float32)
        return {"attn_mask": (-(pos.view(T, 1) - pos.view(1, T)).abs() / T).to(device)}
    raise ValueError(f"case must be one of {CASES}, got {case!r}")


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def _call(module, x, masks, train: bool):
    if not train:
        with torch.no_grad():
            return module(x, x, x, need_weights=False, **masks)[0]
    out = module(x, x, x, need_weights=False, **masks)[0]
    out.sum().backward()
    return out


def measure(case: str, mode: str, B: int, T: int, C: int, H: int, reps: int = 10,
            warmup: int = 2) -> dict:
    """One row: medians of the two modules' times, their ratio and the output difference."""
    torch.manual_seed(0)
    ref = nn.MultiheadAttention(C, H, batch_first=True)
    ours = MultiheadAttention.from_torch(ref)
    train = mode == "train"
    ref.train(train)
    ours.train(train)
    x = torch.randn(B, T, C, requires_grad=train)
    masks = case_inputs(case, B, T)
    diff = float((_call(ref, x, masks, False) - _call(ours, x, masks, False)).abs().max())
    for _ in range(warmup):
        _call(ours, x, masks, train), _call(ref, x, masks, train)
    t_ours: List[float] = []
    t_ref: List[float] = []
    for r in range(reps):  # interleaved, alternating which goes first
        pair = [(t_ours, ours), (t_ref, ref)]
        for times, module in (pair if r % 2 == 0 else pair[::-1]):
            times.append(_timed(lambda: _call(module, x, masks, train)))
    a, b = statistics.median(t_ours), statistics.median(t_ref)
    return {"case": case, "mode": mode, "B": B, "T": T, "C": C, "H": H, "reps": reps,
            "t_ours_s": a, "t_torch_s": b, "ratio": a / b, "met": a / b <= TARGET,
            "max_abs_diff": diff}


def entry_point_ratios(T_values: Iterable[int] = (128, 256, 512, 1024), B: int = 8,
                       C: int = 512, H: int = 8, cases: Iterable[str] = CASES,
                       modes: Iterable[str] = MODES, reps: int = 10,
                       threads: int = 2) -> Dict[str, object]:
    """Every (case, mode, T) row, with the environment the protocol asks for."""
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        rows = [measure(c, m, B, T, C, H, reps) for T in T_values for m in modes for c in cases]
    finally:
        torch.set_num_threads(previous)
    return {"ratio": "R10", "target": TARGET, "torch": torch.__version__,
            "device": platform.processor() or platform.machine(), "threads": threads,
            "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
            "rows": rows}


def write_json(result: dict, path: str) -> None:
    with open(path, "w") as f:
        json.dump(result, f, indent=1)


def table(result: dict) -> str:
    """A markdown table of the rows: one line per (mode, case), one column per T."""
    rows = result["rows"]
    Ts = sorted({r["T"] for r in rows})
    lines = ["| mode | case | " + " | ".join(f"T={T}" for T in Ts) + " |",
             "|---|---|" + "---|" * len(Ts)]
    for mode in dict.fromkeys(r["mode"] for r in rows):
        for case in dict.fromkeys(r["case"] for r in rows):
            cells = {r["T"]: r["ratio"] for r in rows if r["mode"] == mode and r["case"] == case}
            lines.append(f"| {mode} | {case} | " +
                         " | ".join(f"{cells[T]:.2f}" if T in cells else "" for T in Ts) + " |")
    return "\n".join(lines)
