"""R11: t(compiled) / t(eager) for MultiheadAttentionConv (B=4, causal, T=256 and 1024) and a
gnn_attention.Transformer training step, torch.compile aot_eager and inductor, 2 threads, CPU.

Eager and compiled calls are interleaved in one process, median of REPS repetitions after warm-up
(compilation included in warm-up). Graph breaks counted with torch._dynamo.explain. Writes
experiments/results/compile_ratio.json.
"""
from __future__ import annotations

import json
import os
import platform
import statistics
import sys
import time

import torch

from gnn_attention import Transformer, graphs
from gnn_attention.attention.conv import MultiheadAttentionConv

REPS = int(os.environ.get("REPS", 10))
OUT = os.path.join(os.path.dirname(__file__), "results", "compile_ratio.json")


def _time(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def ratio(eager, compiled, reps=REPS):
    for _ in range(2):
        eager(), compiled()
    te, tc = [], []
    for _ in range(reps):
        te.append(_time(eager))
        tc.append(_time(compiled))
    return statistics.median(te), statistics.median(tc)


def conv_case(T, backend, B=4, C=512, H=8):
    torch._dynamo.reset()
    conv = MultiheadAttentionConv(C, H).eval()
    g = graphs.causal([T] * B)
    x = torch.randn(B * T, C)
    with torch.no_grad():
        conv(x, g)  # an eager call plans the graph
        breaks = torch._dynamo.explain(lambda x: conv(x, g))(x).graph_break_count
        torch._dynamo.reset()
        cc = torch.compile(conv, backend=backend, fullgraph=True)
        err = float((cc(x, g) - conv(x, g)).abs().max())
        te, tc = ratio(lambda: conv(x, g), lambda: cc(x, g))
    return dict(case=f"conv causal B={B} T={T} C={C} H={H} fwd", backend=backend, eager_s=te,
                compiled_s=tc, ratio=tc / te, graph_breaks=breaks, max_abs_diff=err)


def train_case(backend, B=8, S=32, d=128, H=4, layers=2):
    torch._dynamo.reset()
    torch.manual_seed(0)
    model = Transformer(d, H, layers, layers, 256, dropout=0.0, batch_first=True)
    src, tgt = torch.randn(B, S, d), torch.randn(B, S, d)
    opt = torch.optim.SGD(model.parameters(), lr=1e-3)

    def step(m):
        opt.zero_grad()
        loss = m(src, tgt).pow(2).mean()
        loss.backward()
        opt.step()
        return loss

    explain = torch._dynamo.explain(lambda: model(src, tgt).pow(2).mean())()
    breaks = explain.graph_break_count
    reasons = sorted({str(r.reason).splitlines()[0][:160] for r in explain.break_reasons})
    torch._dynamo.reset()
    cm = torch.compile(model, backend=backend)
    te, tc = ratio(lambda: step(model), lambda: step(cm))
    return dict(case=f"Transformer train step B={B} S={S} d={d} H={H} layers={layers}+{layers}",
                backend=backend, eager_s=te, compiled_s=tc, ratio=tc / te, graph_breaks=breaks,
                break_reasons=reasons)


def main():
    torch.set_num_threads(2)
    rows = []
    for backend in ("aot_eager", "inductor"):
        for T in (256, 1024):
            rows.append(conv_case(T, backend))
            print(rows[-1], flush=True)
        rows.append(train_case(backend))
        print(rows[-1], flush=True)
    meta = dict(torch=torch.__version__, device="cpu", threads=torch.get_num_threads(),
                loadavg=os.getloadavg(), python=sys.version.split()[0], machine=platform.machine(),
                reps=REPS, command="python experiments/compile_ratio.py")
    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    with open(OUT, "w") as f:
        json.dump(dict(meta=meta, rows=rows), f, indent=1)


if __name__ == "__main__":
    main()
