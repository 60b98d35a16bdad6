"""``gnn-attention equivalence``: the sweep of :mod:`gnn_attention.equivalence` as a table."""
from __future__ import annotations

import json
import platform
from dataclasses import asdict
from pathlib import Path

import torch

from gnn_attention.tools import equivalence

# Tolerances the sweep is judged by (float32 against torch; float64 is ~1e-13 in practice).
TOLERANCE = {"float32": (1e-5, 1e-4), "float64": (1e-10, 1e-9)}


def register(sub) -> None:
    p = sub.add_parser("equivalence", help="compare graph attention with nn.MultiheadAttention/SDPA")
    p.add_argument("--json", metavar="PATH", help="also write the rows and environment as JSON")
    p.add_argument("--quick", action="store_true", help="smallest size only")
    p.set_defaults(func=run)


def run(args) -> int:
    sizes = equivalence.SIZES[:1] if args.quick else equivalence.SIZES
    rows = equivalence.sweep(sizes=sizes)
    print(equivalence.format_table(rows))
    failed = [r for r in rows if max(r.mha_out, r.sdpa_out) > TOLERANCE[r.dtype][0]
              or max(r.mha_grad, r.sdpa_grad) > TOLERANCE[r.dtype][1]]
    print(f"\n{len(rows) - len(failed)} of {len(rows)} cases within tolerance "
          f"(float32: outputs <= 1e-5, gradients <= 1e-4; float64: 1e-10 / 1e-9)")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        env = {"torch": torch.__version__, "python": platform.python_version(),
               "device": "cpu", "threads": torch.get_num_threads()}
        Path(args.json).write_text(json.dumps({"environment": env, "tolerance": TOLERANCE,
                                               "rows": [asdict(r) for r in rows]}, indent=2))
        print(f"wrote {args.json}")
    return 1 if failed else 0
