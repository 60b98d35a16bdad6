"""The attention benchmark as an experiment: a thin client of ``gnn_attention.bench``.

    python experiments/bench_attention.py                # the sweep cited in docs/benchmarks.md
    python experiments/bench_attention.py --quick        # seconds

Writes experiments/results/bench_attention.json and docs/figures/bench_*.png (same as
``gnn-attention bench --json ... --plot ...``).
"""
from __future__ import annotations

import sys
from pathlib import Path

from gnn_attention.cli.app import main

ROOT = Path(__file__).resolve().parent.parent


def train_and_evaluate(config: list, workdir: Path) -> int:
    """Run the benchmark command with ``config`` (its command-line flags), results in workdir."""
    return main(["bench", *config, "--json", str(workdir / "results" / "bench_attention.json"),
                 "--plot", str(ROOT / "docs" / "figures")])


if __name__ == "__main__":
    sys.exit(train_and_evaluate(sys.argv[1:], ROOT / "experiments"))
