"""``gnn-attention bench``: the attention benchmark (:mod:`gnn_attention.tools.bench`) as tables,
ratios R1-R9 with their targets (:mod:`gnn_attention.tools.bench_report`), JSON and plots.

Notation: t(.) median seconds, fwd = forward, fb = forward + backward, T sequence length.
"""
from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

from gnn_attention.cli.errors import UserError
from gnn_attention.tools import bench
from gnn_attention.tools.bench_report import format_ratios, format_rows, plot, ratios

TOL = 1e-5  # fp32 max |output - masked SDPA| every timed case must meet


def register(sub) -> None:
    p = sub.add_parser("bench", help="time graph attention against SDPA, FlexAttention and PyG")
    p.add_argument("--quick", action="store_true", help="tiny sizes, seconds (a smoke run)")
    p.add_argument("--json", metavar="PATH", help="write environment, config, rows and ratios")
    p.add_argument("--plot", metavar="DIR", help="write bench_time.png and bench_memory.png")
    p.add_argument("--T", type=int, nargs="+", help="sequence lengths (default 256 1024 4096)")
    p.add_argument("--B", type=int, help="batch size (default 1)")
    p.add_argument("--H", type=int, help="heads (default 4)")
    p.add_argument("--D", type=int, help="head width (default 32)")
    p.add_argument("--reps", type=int, help="timed repetitions per method (default 10)")
    p.add_argument("--patterns", nargs="+", choices=bench.PATTERNS, help="default: all")
    p.add_argument("--flex-T", type=int, nargs="*", dest="flex_T",
                   help="lengths at which to compile FlexAttention (default 1024 4096; none: off)")
    p.add_argument("--no-memory", action="store_true", help="skip the peak-memory measurement")
    p.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    p.set_defaults(func=run, output_dirs=("plot",))  # --plot names a folder


def config_from(args) -> bench.BenchConfig:
    cfg = bench.QUICK if args.quick else bench.BenchConfig()
    over = {"Ts": tuple(args.T) if args.T else None, "B": args.B, "H": args.H, "D": args.D,
            "reps": args.reps, "patterns": tuple(args.patterns) if args.patterns else None,
            "flex_Ts": tuple(args.flex_T) if args.flex_T is not None else None}
    cfg = replace(cfg, **{k: v for k, v in over.items() if v is not None})
    if args.no_memory:
        cfg = replace(cfg, memory=False)
    bad = [f"{k}={v}" for k, v in (("B", cfg.B), ("H", cfg.H), ("D", cfg.D), ("reps", cfg.reps))
           if v < 1] + [f"T={t}" for t in cfg.Ts if t < 8]
    if bad or args.threads < 1:
        raise UserError(f"sizes must be positive (T >= 8), got {', '.join(bad) or 'threads'}")
    return cfg


def run(args) -> int:
    cfg = config_from(args)
    result = bench.run(cfg, threads=args.threads)
    result["ratios"] = ratios(result, smoke=args.quick)
    result["ratios_min"] = ratios(result, "min", smoke=args.quick)
    print(format_rows(result["rows"]))
    print("\nRatios from the median of the repetitions (the protocol):")
    print(format_ratios(result["ratios"]))
    print("\nThe same ratios from the fastest repetition (stalls of a loaded machine filtered out):")
    print(format_ratios(result["ratios_min"]))
    env = result["environment"]
    print(f"\ntorch {env['torch']}, {env['device']}, {env['threads']} threads, load average "
          f"{env['load_average_before'][0]:.1f} -> {env['load_average'][0]:.1f}")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(result, indent=1))
        print(f"wrote {args.json}")
    if args.plot:
        for path in plot(result, Path(args.plot)):
            print(f"wrote {path}")
    failed = [r for r in result["rows"] if r["exact"] and r["max_abs_err"] > TOL]
    for r in failed:
        print(f"INCORRECT: {r['pattern']} T={r['T']} {r['method']}: max |diff| {r['max_abs_err']:.2e}")
    return 1 if failed else 0
