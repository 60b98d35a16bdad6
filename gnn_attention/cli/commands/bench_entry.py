"""``gnn-attention bench-entry``: speed at the entry points users take, with their ratio targets.

Parts (``--parts``, default all):

    mha      R10  drop-in MultiheadAttention / nn.MultiheadAttention, eval and train, masks none,
                  key padding, causal, float mask (:mod:`gnn_attention.tools.bench_entry`)  <= 1.10
    compile  R11  torch.compile / eager: the conv (fullgraph) and a Transformer training step
                  (:mod:`gnn_attention.tools.bench_compile`)          <= 1.10, zero graph breaks
    graphs   R12  builder time and memory against T (:mod:`gnn_attention.tools.bench_graphs`)
                  < 5 ms at T = 16384
    rss           peak RSS of a conv forward on causal([T]) / SDPA's own
                  (:mod:`gnn_attention.tools.bench_rss`)               < 3

``--quick`` runs every part on tiny sizes in seconds: a smoke run, so no target is judged (the
targets are defined at the protocol sizes). ``--json PATH`` writes every row and verdict.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from gnn_attention.cli.errors import UserError
from gnn_attention.tools import bench_compile, bench_entry, bench_graphs, bench_rss

PARTS = ("mha", "compile", "graphs", "rss")
R12_TARGET_MS = 5.0


def register(sub) -> None:
    p = sub.add_parser("bench-entry", help="time the entry points (drop-in MHA, torch.compile, "
                                           "graph builders, peak memory) against their targets")
    p.add_argument("--parts", nargs="+", choices=PARTS, default=list(PARTS))
    p.add_argument("--quick", action="store_true", help="tiny sizes, seconds; targets not judged")
    p.add_argument("--T", type=int, nargs="+", help="R10 lengths (default 128 256 512 1024)")
    p.add_argument("--reps", type=int, default=10, help="timed repetitions (default 10)")
    p.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    p.add_argument("--json", metavar="PATH", help="write the rows and verdicts")
    p.set_defaults(func=run)


def _verdict(ok: bool, quick: bool) -> str:
    return "(smoke run: not judged)" if quick else ("met" if ok else "MISSED")


def _mha(args, quick):
    Ts = tuple(args.T or ((8,) if quick else (128, 256, 512, 1024)))
    sizes = {"B": 2, "C": 16, "H": 2} if quick else {}
    res = bench_entry.entry_point_ratios(T_values=Ts, reps=args.reps, threads=args.threads,
                                         **sizes)
    worst = max(r["ratio"] for r in res["rows"])
    print(bench_entry.table(res))
    print(f"R10 worst {worst:.2f} (target <= {bench_entry.TARGET}) "
          f"{_verdict(worst <= bench_entry.TARGET, quick)}")
    return res, worst <= bench_entry.TARGET


def _compile(args, quick):
    kw = {"backends": ("aot_eager",), "conv_T": (16,), "reps": args.reps,
              "sizes": {"B": 2, "C": 16, "H": 2, "S": 6, "d": 16, "layers": 1}} if quick else {"reps": args.reps}
    rows = bench_compile.compile_ratios(**kw)
    for r in rows:
        print(f"{r['backend']:9s} {r['case']}: eager {r['eager_s'] * 1e3:.2f} ms, compiled "
              f"{r['compiled_s'] * 1e3:.2f} ms, ratio {r['ratio']:.2f}, "
              f"{r['graph_breaks']} graph breaks")
    ok = all(r["ratio"] <= bench_compile.TARGET and r["graph_breaks"] == 0 for r in rows)
    print(f"R11 worst {max(r['ratio'] for r in rows):.2f}, graph breaks "
          f"{sum(r['graph_breaks'] for r in rows)} (target <= {bench_compile.TARGET}, 0) "
          f"{_verdict(ok, quick)}")
    return rows, ok


def _graphs(args, quick):
    kw = {"Ts": (64, 128), "Bs": (1,), "reps": 2, "materialise_reps": 1} if quick else {}
    res = bench_graphs.run(threads=args.threads, progress=lambda line: None, **kw)
    print(bench_graphs.table(res))
    top = max(r["T"] for r in res["rows"])
    worst = max(r["build_ms"] for r in res["rows"] if r["T"] == top)
    print(f"R12 slowest build at T={top}: {worst:.3f} ms (target < {R12_TARGET_MS} ms at "
          f"T=16384) {_verdict(worst < R12_TARGET_MS, quick)}")
    return res, worst < R12_TARGET_MS


def _rss(args, quick):
    res = bench_rss.peak_rss_ratio(T=256 if quick else 16384, threads=args.threads,
                                   **({"H": 2, "D": 8} if quick else {}))
    mib = lambda r: r["extra_bytes"] / 2**20
    print(f"peak RSS, causal T={res['T']}: SDPA {mib(res['sdpa']):.0f} MiB, conv "
          f"{mib(res['conv']):.0f} MiB (edges built: {res['conv']['materialized']}), ratio "
          f"{res['ratio']:.2f} (target < {bench_rss.TARGET}) "
          f"{_verdict(res['ratio'] < bench_rss.TARGET, quick)}")
    return res, res["ratio"] < bench_rss.TARGET


def run(args) -> int:
    if args.reps < 1 or args.threads < 1 or any(t < 8 for t in args.T or ()):
        raise UserError("--reps and --threads must be >= 1 and every --T >= 8")
    quick = args.quick
    reps = 1 if quick and args.reps == 10 else args.reps
    args.reps = reps
    previous = torch.get_num_threads()
    torch.set_num_threads(args.threads)
    out = {"quick": quick, "torch": torch.__version__, "threads": args.threads,
           "load_average_before": list(os.getloadavg())}
    try:
        for part in args.parts:
            print(f"\n== {part} ==")
            result, ok = {"mha": _mha, "compile": _compile, "graphs": _graphs,
                          "rss": _rss}[part](args, quick)
            out[part] = {"result": result, "met": None if quick else ok}
    finally:
        torch.set_num_threads(previous)
    out["load_average_after"] = list(os.getloadavg())
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(out, indent=1))
        print(f"wrote {args.json}")
    return 0
