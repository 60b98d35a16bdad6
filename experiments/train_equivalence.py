"""Training through message passing follows the dense Transformer's trajectory, and costs no more.

The graph Seq2SeqModel and its ``to_dense()`` twin (``nn.Transformer`` inside, weights copied) are
trained side by side: same initial weights, same batches, dropout 0, CPU, AdamW with the same
schedule. We record both loss curves and their difference (target: |Δ loss| <= 1e-4 for every one
of the first 200 steps in float32), in float32 and in float64: float64 separates "the same math"
(differences at the 1e-15 level) from float32 rounding that training amplifies; a control trains
the dense twin against itself with 1 and 2 threads (same math, another summation order) to measure
how far float32 training of one model drifts from itself. Then we time
training steps of the two models interleaved in this one process (graph step, dense step, ...) so
that machine load hits both alike, and report the throughput ratio
R8 = tokens/s(graph) / tokens/s(dense) (target >= 0.9).

Usage:  python experiments/train_equivalence.py [--steps 200] [--threads 2] [--curve-threads 1]
Writes: experiments/results/train_equivalence.json, docs/figures/train_equivalence.png
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from dataclasses import replace
from pathlib import Path

import torch

from gnn_attention.training.data import IGNORE, BatchStream, encode_pairs, load_task
from gnn_attention.training.loop import (
    TrainConfig,
    batch_loss,
    build_model,
    build_tokenizers,
    make_optimizer,
)

ROOT = Path(__file__).resolve().parents[1]


def get_config(steps: int = 200) -> TrainConfig:
    cfg = TrainConfig.resolve("en-de", "tiny", steps=steps, batch_size=32, warmup=50)
    return replace(cfg, model={**cfg.model, "dropout": 0.0})


def one_step(model, opt, sched, batch, cfg) -> float:
    loss = batch_loss(model, batch, cfg.label_smoothing, float((batch.tgt_out != IGNORE).sum()))
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.clip_norm)
    opt.step()
    sched.step()
    return loss.item()


def curves(cfg: TrainConfig, examples, src_tok, tgt_tok, dtype=torch.float32):
    """Both models from the same initial weights over the same batches: the two loss curves."""
    torch.manual_seed(cfg.seed)
    graph = build_model(cfg.model, src_tok, tgt_tok)
    # The twin is made in float32 and both are converted after: the same initial values exactly.
    dense = graph.to_dense().to(dtype)
    graph = graph.to(dtype)
    runs = []
    for model in (graph, dense):
        opt, sched = make_optimizer(model, cfg)
        stream = BatchStream(examples, cfg.batch_size, cfg.seed)
        runs.append([one_step(model, opt, sched, next(stream), cfg) for _ in range(cfg.steps)])
    return runs


def thread_control(cfg: TrainConfig, examples, src_tok, tgt_tok, threads=(1, 2)):
    """The dense twin against itself, float32, trained once per thread count: the same math in a
    different summation order. How far *its* two curves drift is the floor for any comparison of
    two float32 implementations of one model."""
    before, runs = torch.get_num_threads(), []
    for n in threads:
        torch.set_num_threads(n)
        torch.manual_seed(cfg.seed)
        dense = build_model(cfg.model, src_tok, tgt_tok).to_dense()
        opt, sched = make_optimizer(dense, cfg)
        stream = BatchStream(examples, cfg.batch_size, cfg.seed)
        runs.append([one_step(dense, opt, sched, next(stream), cfg) for _ in range(cfg.steps)])
    torch.set_num_threads(before)
    return runs


def throughput(preset: str, examples, src_tok, tgt_tok, warmup: int = 3, reps: int = 10):
    """Median step times of the two models, interleaved; tokens/s ratio R8."""
    cfg = TrainConfig.resolve("en-de", preset, batch_size=64)
    torch.manual_seed(0)
    graph = build_model(cfg.model, src_tok, tgt_tok)
    models = {"graph": graph, "dense": graph.to_dense()}
    state = {k: (m, *make_optimizer(m, cfg)) for k, m in models.items()}
    stream = BatchStream(examples, cfg.batch_size, 1)
    times = {k: [] for k in models}
    tokens = []
    for i in range(warmup + reps):
        batch = next(stream)
        for k, (m, opt, sched) in state.items():  # the same batch for both, back to back
            t0 = time.perf_counter()
            one_step(m, opt, sched, batch, cfg)
            if i >= warmup:
                times[k].append(time.perf_counter() - t0)
        if i >= warmup:
            tokens.append(batch.num_tokens)
    tok = statistics.mean(tokens)
    med = {k: statistics.median(v) for k, v in times.items()}
    return {"preset": preset, "model": cfg.model, "batch_size": cfg.batch_size,
            "median_step_seconds": med,
            "tokens_per_second": {k: tok / v for k, v in med.items()},
            "r8_graph_over_dense": med["dense"] / med["graph"], "reps": reps}


def plot(graph, dense, diff64, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = range(1, len(graph) + 1)
    diff = [abs(a - b) for a, b in zip(graph, dense)]
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 3.6))
    a1.plot(steps, graph, label="graph model (message passing)", lw=2)
    a1.plot(steps, dense, "--", label="to_dense() twin (nn.Transformer)", lw=1.5)
    a1.set_xlabel("step"), a1.set_ylabel("training loss (label-smoothed CE)")
    a1.set_title("en-de, tiny preset, dropout 0, CPU float32", fontsize=9)
    a1.set_ylim(top=min(max(graph), 4.0))
    a1.legend(fontsize=8)
    a2.semilogy(steps, [max(d, 1e-17) for d in diff], color="C3", label="float32")
    a2.semilogy(steps, [max(d, 1e-17) for d in diff64], color="C2", label="float64")
    a2.axhline(1e-4, color="k", ls=":", lw=1, label="tolerance 1e-4")
    a2.set_xlabel("step"), a2.set_ylabel("|loss(graph) - loss(dense)|")
    a2.set_title(f"max |Δ|: float32 {max(diff):.1e}, float64 {max(diff64):.1e}", fontsize=9)
    a2.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def train_and_evaluate(cfg: TrainConfig, workdir: Path, presets=("tiny", "small"),
                       timing_threads: int = 2) -> dict:
    data = load_task(cfg.task, **cfg.task_params)
    src_tok, tgt_tok = build_tokenizers(cfg, data)
    examples = encode_pairs(data.train, src_tok, tgt_tok)
    t0 = time.perf_counter()
    graph, dense = curves(cfg, examples, src_tok, tgt_tok)
    graph64, dense64 = curves(cfg, examples, src_tok, tgt_tok, torch.float64)
    diff = [abs(a - b) for a, b in zip(graph, dense)]
    diff64 = [abs(a - b) for a, b in zip(graph64, dense64)]
    dense_1t, dense_2t = thread_control(cfg, examples, src_tok, tgt_tok)
    curve_threads = torch.get_num_threads()
    torch.set_num_threads(timing_threads)
    result = {
        "command": "python experiments/train_equivalence.py",
        "config": cfg.to_json(), "steps": cfg.steps, "loss_graph": graph, "loss_dense": dense,
        "max_abs_loss_diff": max(diff), "tolerance": 1e-4, "within_tolerance": max(diff) <= 1e-4,
        "first_step_with_diff": next((i + 1 for i, d in enumerate(diff) if d > 0), None),
        "loss_graph_float64": graph64, "loss_dense_float64": dense64,
        "max_abs_loss_diff_float64": max(diff64),
        "control_dense_1_vs_2_threads_max_abs_loss_diff":
            max(abs(a - b) for a, b in zip(dense_1t, dense_2t)),
        "curves_seconds": time.perf_counter() - t0,
        "curve_threads": curve_threads, "timing_threads": timing_threads,
        "throughput": [throughput(p, examples, src_tok, tgt_tok) for p in presets],
        "environment": {"torch": torch.__version__, "python": platform.python_version(),
                        "device": "cpu", "threads": torch.get_num_threads(),
                        "load_average": os.getloadavg()}}
    plot(graph, dense, diff64, workdir / "docs" / "figures" / "train_equivalence.png")
    out = workdir / "experiments" / "results" / "train_equivalence.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    return result


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--threads", type=int, default=2, help="torch threads for the timings")
    p.add_argument("--curve-threads", type=int, default=1,
                   help="torch threads for the loss curves (1: fastest on shared cores)")
    p.add_argument("--workdir", type=Path, default=ROOT)
    args = p.parse_args()
    torch.set_num_threads(args.curve_threads)
    r = train_and_evaluate(get_config(args.steps), args.workdir, timing_threads=args.threads)
    print(f"max |loss(graph) - loss(dense)| over {r['steps']} steps: {r['max_abs_loss_diff']:.3e}"
          f" in float32 (tolerance 1e-4: {'ok' if r['within_tolerance'] else 'FAILED'}); "
          f"{r['max_abs_loss_diff_float64']:.3e} in float64")
    for t in r["throughput"]:
        print(f"{t['preset']}: tokens/s graph {t['tokens_per_second']['graph']:.0f}, dense "
              f"{t['tokens_per_second']['dense']:.0f}, R8 = {t['r8_graph_over_dense']:.3f}")


if __name__ == "__main__":
    main()
