"""R14: peak memory and time of PyG GPSConv vs gnn_attention's GPSLayer on ragged batches
(graph sizes uniform in 10..500), a thin client of ``gnn_attention.graph_models.bench``.

    python experiments/graph_lab_bench.py           # the sweep cited in docs/graph_transformers.md
    python experiments/graph_lab_bench.py quick     # seconds

Writes experiments/results/graph_lab_bench.json (or graph_lab_bench_quick.json).
"""
from __future__ import annotations

import sys
from dataclasses import asdict, replace
from pathlib import Path

from gnn_attention.graph_models.bench import QUICK, GPSBenchConfig, gps_benchmark, write_json

ROOT = Path(__file__).resolve().parent.parent


def train_and_evaluate(config: GPSBenchConfig, workdir: Path, name: str) -> dict:
    result = None
    for G in config.num_graphs:  # one batch size at a time, the file rewritten after each
        part = gps_benchmark(replace(config, num_graphs=(G,)))
        if result is None:
            result = {**part, "config": asdict(config)}
        else:
            result["rows"] += part["rows"]
            result["load_average_after"] = part["load_average_after"]
        write_json(result, str(workdir / "results" / f"{name}.json"))
    for r in result["rows"]:
        print(f"G={r['num_graphs']:5d} dropout={r['attn_dropout']}: memory x{r['memory_ratio_ours']:.2f}"
              f" (recompute x{r['memory_ratio_ours_recompute']:.2f}), fwd+bwd time "
              f"x{r['time_ratio_fwd_bwd_ours']:.2f} (recompute x{r['time_ratio_fwd_bwd_ours_recompute']:.2f})"
              f", err {r['max_abs_err_eval']:.1e}")
    return result


if __name__ == "__main__":
    quick = sys.argv[1:] == ["quick"]
    train_and_evaluate(QUICK if quick else GPSBenchConfig(), ROOT / "experiments",
                       "graph_lab_bench_quick" if quick else "graph_lab_bench")
