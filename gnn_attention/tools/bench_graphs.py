"""Graph builder cost (ratio R12): time and peak memory of ``full``/``causal``/``window``/``cross``
versus T, building the implicit graph and, separately, materialising its edges.

Notation: B sequences of T tokens (cross: T sources and T targets), E edges, w window reach.

For every (pattern, B, T):
    build           median wall time over ``reps`` fresh builds, peak extra RSS of one build
    materialise     first read of ``edge_index`` on a fresh graph (median over ``materialise_reps``,
                    peak extra RSS of one), only up to ``max_edges`` edges (its result is 16 E bytes)
The builders run before any edge is needed, so only the first column is paid by kernels that run
structured patterns without edges (dense, tiled); the second is what the CSR kernel, the
reference and conversions pay on first use. Results (with torch version, threads and load) go to
a JSON file; docs/graphs.md cites it.
"""
from __future__ import annotations

import json
import statistics
import time
from pathlib import Path

import torch

from gnn_attention import graphs
from gnn_attention.tools.bench import _peak_extra, environment

BUILDERS = {
    "full": lambda B, T: graphs.full([T] * B),
    "causal": lambda B, T: graphs.causal([T] * B),
    "window": lambda B, T: graphs.window([T] * B, 64),
    "cross": lambda B, T: graphs.cross([T] * B, [T] * B),
}


def _median_ms(fn, reps: int) -> float:
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def measure_case(pattern: str, B: int, T: int, reps: int = 10, materialise_reps: int = 3,
                 max_edges: int = 150_000_000) -> dict:
    """One row: build and (when E <= ``max_edges``) materialisation cost of one pattern."""
    build = BUILDERS[pattern]
    build(B, T)  # warm-up: first calls pay for imports and allocator growth
    g = build(B, T)
    row = {"pattern": pattern, "B": B, "T": T, "edges": g.num_edges,
           "edge_index_bytes": 16 * g.num_edges, "materialized_after_build": g.materialized,
           "build_ms": _median_ms(lambda: build(B, T), reps),
           "build_peak_bytes": _peak_extra(lambda: build(B, T)),
           "materialise_ms": None, "materialise_peak_bytes": None}
    if g.num_edges <= max_edges:
        fresh = [build(B, T) for _ in range(materialise_reps)]
        row["materialise_ms"] = statistics.median(
            _median_ms(lambda: f.edge_index, 1) for f in fresh)
        del fresh
        row["materialise_peak_bytes"] = _peak_extra(lambda: build(B, T).edge_index)
    return row


def run(Ts=(1024, 2048, 4096, 8192, 16384), Bs=(1, 8), patterns=tuple(BUILDERS), reps: int = 10,
        materialise_reps: int = 3, max_edges: int = 150_000_000, threads: int = 2,
        path=None, progress=print) -> dict:
    """The sweep; written to ``path`` as JSON when given. ``{"environment", "config", "rows"}``."""
    torch.set_num_threads(threads)
    env = environment()
    rows = []
    for pattern in patterns:
        for B in Bs:
            for T in Ts:
                rows.append(measure_case(pattern, B, T, reps, materialise_reps,
                                         max_edges if B == 1 else 0))
                progress(_line(rows[-1]))
    env["load_average_after"] = environment()["load_average"]
    out = {"environment": env, "config": {"Ts": list(Ts), "Bs": list(Bs), "reps": reps,
                                          "materialise_reps": materialise_reps,
                                          "max_edges": max_edges, "window": 64},
           "rows": rows}
    if path is not None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(json.dumps(out, indent=1))
    return out


def _line(r: dict) -> str:
    mat = ("" if r["materialise_ms"] is None else
           f", materialise {r['materialise_ms']:.1f} ms / {r['materialise_peak_bytes'] / 2**20:.0f} MiB")
    return (f"{r['pattern']:7s} B={r['B']} T={r['T']:6d} E={r['edges']:>11d}: build "
            f"{r['build_ms']:.3f} ms / {r['build_peak_bytes'] / 2**10:.0f} KiB{mat}")


def table(result: dict) -> str:
    """A markdown table of the rows (times in ms, memory in MiB)."""
    lines = ["| pattern | B | T | E | build ms | build peak MiB | materialise ms | "
             "materialise peak MiB |", "|---|---|---|---|---|---|---|---|"]
    for r in result["rows"]:
        m_ms = "-" if r["materialise_ms"] is None else f"{r['materialise_ms']:.0f}"
        m_mb = "-" if r["materialise_peak_bytes"] is None else \
            f"{r['materialise_peak_bytes'] / 2**20:.0f}"
        lines.append(f"| {r['pattern']} | {r['B']} | {r['T']} | {r['edges']} | "
                     f"{r['build_ms']:.3f} | {max(r['build_peak_bytes'], 0) / 2**20:.2f} | "
                     f"{m_ms} | {m_mb} |")
    return "\n".join(lines)
