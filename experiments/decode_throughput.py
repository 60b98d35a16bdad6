"""Decode throughput: incremental decoding on a growing causal graph (KV cache) vs recomputation.

Notation: B sentences decoded together, S source length, T generated tokens, L tokens already
decoded, C = d_model; throughput = B * T / seconds (generated tokens per second).

Three ways to greedily decode the same randomly initialised ``Seq2SeqModel`` for exactly T tokens
(``eos_id=None``: no early stop, so every method does the same work):
  * ``incremental``: ``greedy_decode(..., incremental=True)``: one new node per sentence and step,
    cached keys/values, a step costs O(L * C) per layer;
  * ``recompute``: ``greedy_decode(..., incremental=False)``: the graph decoder re-runs over the
    whole prefix every step, O(L^2 * C) per layer;
  * ``dense_recompute``: the same recomputation on the dense twin (``to_dense()``: nn.Transformer).
All three must produce the same tokens (checked and recorded). Timings alternate between methods
within one process (``repeats`` rounds, median reported), so only their ratios are meant to be read.
A second table times a single step at cache length L (incremental step vs recomputing L + 1 tokens).

Run: ``python experiments/decode_throughput.py`` (writes experiments/results/decode_throughput.json;
``--threads 1`` writes decode_throughput_threads1.json; ``--quick`` for a small smoke run).
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import torch

from gnn_attention.models import Seq2SeqConfig, Seq2SeqModel
from gnn_attention.models.decoding import greedy_decode

CONFIG = {"T": 256, "batch": 4, "S": 32, "vocab": 64, "d_model": 128, "nhead": 4, "layers": 2,
          "dim_feedforward": 512, "repeats": 3, "step_lengths": [16, 64, 256], "threads": 2,
          "seed": 0}
QUICK = {**CONFIG, "T": 32, "repeats": 1, "step_lengths": [8, 32]}
ROOT = Path(__file__).resolve().parents[1]
BOS = 1


def build(config: dict):
    torch.manual_seed(config["seed"])
    cfg = Seq2SeqConfig(config["vocab"], config["vocab"], d_model=config["d_model"],
                        nhead=config["nhead"], num_encoder_layers=config["layers"],
                        num_decoder_layers=config["layers"],
                        dim_feedforward=config["dim_feedforward"], dropout=0.0,
                        max_len=max(config["T"], max(config["step_lengths"])) + 1)
    model = Seq2SeqModel(cfg).eval()
    src = torch.randint(2, config["vocab"], (config["batch"], config["S"]))
    src_lengths = torch.randint(config["S"] // 2, config["S"] + 1, (config["batch"],))
    return model, src, src_lengths


def time_decoding(config: dict, model, src, src_lengths) -> dict:
    dense = model.to_dense().eval()
    runs = {"incremental": (model, True), "recompute": (model, False),
            "dense_recompute": (dense, False)}
    seconds = {name: [] for name in runs}
    outputs = {}
    for _ in range(config["repeats"]):
        for name, (m, incremental) in runs.items():  # alternate: same machine state for all
            start = time.perf_counter()
            outputs[name] = greedy_decode(m, src, src_lengths, BOS, None, config["T"],
                                          incremental=incremental)
            seconds[name].append(time.perf_counter() - start)
    tokens = config["batch"] * config["T"]
    table = {name: {"seconds_median": statistics.median(s), "seconds_all": s,
                    "tokens_per_second": tokens / statistics.median(s)}
             for name, s in seconds.items()}
    base = table["incremental"]["tokens_per_second"]
    for row in table.values():
        row["incremental_speedup"] = base / row["tokens_per_second"]
    same = all(outputs[name] == outputs["incremental"] for name in outputs)
    return {"methods": table, "same_tokens": same}


@torch.no_grad()
def time_steps(config: dict, model, src, src_lengths) -> list:
    """Seconds for one decoding step at cache length L: incremental vs recomputing L + 1 tokens."""
    memory = model.encode(src, src_lengths)
    B, rows = src.size(0), []
    for L in config["step_lengths"]:
        prefix = torch.randint(2, config["vocab"], (B, L + 1))
        cache = model.init_cache(memory, src_lengths)
        for t in range(L):
            _, cache = model.decode_step(prefix[:, t], cache)
        inc, rec = [], []
        for _ in range(max(3, config["repeats"])):
            start = time.perf_counter()
            model.decode_step(prefix[:, L], cache)
            inc.append(time.perf_counter() - start)
            start = time.perf_counter()
            model.decode(memory, src_lengths, prefix, torch.full((B,), L + 1))
            rec.append(time.perf_counter() - start)
        rows.append({"L": L, "incremental_step_s": statistics.median(inc),
                     "recompute_step_s": statistics.median(rec),
                     "ratio": statistics.median(rec) / statistics.median(inc)})
    return rows


def train_and_evaluate(config: dict, workdir: Path) -> dict:
    """Run both measurements with ``config``; write ``results/decode_throughput.json``."""
    torch.set_num_threads(config["threads"])
    model, src, src_lengths = build(config)
    result = {"config": config, "torch": torch.__version__, "machine": platform.processor() or
              platform.machine(), "decode": time_decoding(config, model, src, src_lengths),
              "steps": time_steps(config, model, src, src_lengths)}
    name = "decode_throughput" + ("" if config["threads"] == 2 else f"_threads{config['threads']}")
    out = Path(workdir) / "results" / f"{name}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    return result


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small smoke run (T=32)")
    parser.add_argument("--threads", type=int, default=CONFIG["threads"],
                        help="torch CPU threads (default 2; 1 is steadier on a busy machine)")
    parser.add_argument("--workdir", type=Path, default=ROOT / "experiments",
                        help="results go to WORKDIR/results/decode_throughput.json")
    args = parser.parse_args(argv)
    config = {**(QUICK if args.quick else CONFIG), "threads": args.threads}
    result = train_and_evaluate(config, args.workdir)
    for name, row in result["decode"]["methods"].items():
        print(f"{name:16s} {row['tokens_per_second']:9.1f} tokens/s  "
              f"(incremental is {row['incremental_speedup']:.1f}x)")
    print(f"same tokens: {result['decode']['same_tokens']}")
    for row in result["steps"]:
        print(f"step at L={row['L']:4d}: incremental {row['incremental_step_s'] * 1e3:7.2f} ms, "
              f"recompute {row['recompute_step_s'] * 1e3:8.2f} ms ({row['ratio']:.1f}x)")
    return 0 if result["decode"]["same_tokens"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
