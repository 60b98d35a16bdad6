"""Compiled against eager at the entry points (ratio R11): ``MultiheadAttentionConv`` on a causal
graph and a ``gnn_attention.Transformer`` training step, under ``torch.compile``.

Notation: B batch, T sequence length, C = d channels, H heads; t(.) median seconds.

    R11 = t(torch.compile(module, backend)) / t(module)        target <= 1.10, zero graph breaks

Eager and compiled calls are interleaved in one process, median of ``reps`` repetitions after a
warm-up that includes the compilation. Graph breaks are counted with ``torch._dynamo.explain``.
The conv case plans its graph with one eager call (as a model does on its first batch) and runs
``fullgraph=True``; the Transformer case builds its graphs inside ``forward`` every step (no
mask, or the causal target mask with ``tgt_is_causal=True``), compiled as users compile it.
"""
from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import torch
from torch import nn

from gnn_attention import graphs
from gnn_attention.attention.conv import MultiheadAttentionConv
from gnn_attention.models.transformer import Transformer

TARGET = 1.10


def interleaved(eager: Callable[[], object], compiled: Callable[[], object],
                reps: int) -> tuple[float, float]:
    """Medians of the two callables' times, run alternately after two warm-up rounds each."""
    for _ in range(2):
        eager(), compiled()
    te, tc = [], []
    for _ in range(reps):
        for fn, out in ((eager, te), (compiled, tc)):
            t0 = time.perf_counter()
            fn()
            out.append(time.perf_counter() - t0)
    return statistics.median(te), statistics.median(tc)


def _breaks(fn: Callable[[], object]) -> tuple[int, list[str]]:
    torch._dynamo.reset()
    ex = torch._dynamo.explain(fn)()
    return ex.graph_break_count, sorted({str(r.reason).splitlines()[0][:160]
                                         for r in ex.break_reasons})


def conv_case(T: int, backend: str, B: int = 4, C: int = 512, H: int = 8,
              reps: int = 10) -> dict:
    """Forward of the conv on ``graphs.causal([T] * B)`` under ``no_grad``."""
    torch.manual_seed(0)
    conv = MultiheadAttentionConv(C, H).eval()
    g = graphs.causal([T] * B)
    x = torch.randn(B * T, C)
    with torch.no_grad():
        conv(x, g)  # an eager call plans the graph
        breaks, reasons = _breaks(lambda: conv(x, g))
        torch._dynamo.reset()
        cc = torch.compile(conv, backend=backend, fullgraph=True)
        err = float((cc(x, g) - conv(x, g)).abs().max())
        te, tc = interleaved(lambda: conv(x, g), lambda: cc(x, g), reps)
    return {"case": f"conv causal B={B} T={T} C={C} H={H} fwd", "backend": backend, "eager_s": te,
                "compiled_s": tc, "ratio": tc / te, "graph_breaks": breaks, "break_reasons": reasons,
                "max_abs_diff": err}


def train_case(backend: str, masks: str = "causal", B: int = 8, S: int = 32, d: int = 128,
               H: int = 4, layers: int = 2, reps: int = 10) -> dict:
    """One SGD step of a Transformer (forward, backward, update); ``masks``: ``"none"`` or
    ``"causal"`` (the target mask with ``tgt_is_causal=True``)."""
    torch.manual_seed(0)
    model = Transformer(d, H, layers, layers, 2 * d, dropout=0.0, batch_first=True)
    src, tgt = torch.randn(B, S, d), torch.randn(B, S, d)
    kw = {} if masks == "none" else {
        "tgt_mask": nn.Transformer.generate_square_subsequent_mask(S), "tgt_is_causal": True}
    opt = torch.optim.SGD(model.parameters(), lr=1e-3)

    def step(m):
        opt.zero_grad()
        loss = m(src, tgt, **kw).pow(2).mean()
        loss.backward()
        opt.step()
        return loss

    breaks, reasons = _breaks(lambda: model(src, tgt, **kw).pow(2).mean())
    torch._dynamo.reset()
    cm = torch.compile(model, backend=backend)
    with torch.no_grad():
        err = float((cm(src, tgt, **kw) - model(src, tgt, **kw)).abs().max())
    te, tc = interleaved(lambda: step(model), lambda: step(cm), reps)
    return {"case": f"Transformer train step, {masks} mask, B={B} S={S} d={d} H={H} "
                     f"layers={layers}+{layers}", "backend": backend, "eager_s": te, "compiled_s": tc,
                "ratio": tc / te, "graph_breaks": breaks, "break_reasons": reasons, "max_abs_diff": err}


def compile_ratios(backends=("aot_eager", "inductor"), conv_T=(256, 1024), reps: int = 10,
                   sizes: dict[str, int] | None = None) -> list[dict]:
    """Every R11 row; ``sizes`` overrides the case sizes (B, C, H for the conv; B, S, d, H,
    layers for the step) for smoke runs."""
    sizes = sizes or {}
    conv_kw = {k: sizes[k] for k in ("B", "C", "H") if k in sizes}
    step_kw = {k: sizes[k] for k in ("B", "S", "d", "H", "layers") if k in sizes}
    rows = []
    for backend in backends:
        rows += [conv_case(T, backend, reps=reps, **conv_kw) for T in conv_T]
        rows += [train_case(backend, m, reps=reps, **step_kw) for m in ("none", "causal")]
    return rows
