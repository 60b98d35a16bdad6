"""R13: t(PyG TransformerConv) / t(gnn_attention TransformerConv), forward + backward, on CPU.

N = 5000 nodes, E = 50000 random edges (unsorted, no duplicates), heads = 4, in_channels = 128,
out_channels = 32 per head, edge_dim None and 16. Weights are copied (``from_pyg``), outputs
compared (max |diff|) before timing. Both layers are timed interleaved in one process (median of
``reps`` repetitions after warm-up). Ours runs three ways:

* ``ours_edge_index``: the same raw ``[2, E]`` tensor at every call, as PyG users call a layer in
  full-batch training (sorted once, then memoised on the tensor and checked at every call);
* ``ours_edge_index_cold``: a differently ordered copy of the edges (and their features) at every
  call, so each call pays the sort and the CSR build (a new mini-batch per step);
* ``ours_token_graph``: a TokenGraph built once (``graphs.from_edge_index``).

    python experiments/bench_transformer_conv.py  [--reps 15] [--threads 2 [1 ...]] [--out ...json]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch_geometric
from torch_geometric.nn import TransformerConv as PyGTransformerConv

from gnn_attention import graphs
from gnn_attention.attention.transformer_conv import TransformerConv
from gnn_attention.graphs.pyg import stable_argsort


@dataclass(frozen=True)
class Config:
    N: int = 5000
    E: int = 50000
    heads: int = 4
    in_channels: int = 128
    out_channels: int = 32
    reps: int = 15
    threads: int = 2
    seed: int = 0


def random_edges(N: int, E: int, gen: torch.Generator) -> torch.Tensor:
    key = torch.randperm(N * N, generator=gen)[:E]  # distinct (src, dst) pairs, random order
    return torch.stack([key % N, key // N])


def reordered(ei: torch.Tensor, a, gen: torch.Generator):
    """The same edges (and their features) in a new random order, as new tensors."""
    perm = torch.randperm(ei.size(1), generator=gen)
    return ei[:, perm], None if a is None else a[perm]


def step(conv, x, edge_index, edge_attr):
    out = conv(x, edge_index, edge_attr)
    out.square().mean().backward()
    return out


def timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def case(cfg: Config, edge_dim, gen) -> dict:
    ref = PyGTransformerConv(cfg.in_channels, cfg.out_channels, heads=cfg.heads, edge_dim=edge_dim)
    ours = TransformerConv.from_pyg(ref)
    x = torch.randn(cfg.N, cfg.in_channels, generator=gen)
    ei = random_edges(cfg.N, cfg.E, gen)
    a = None if edge_dim is None else torch.randn(cfg.E, edge_dim, generator=gen)
    t0 = time.perf_counter()
    g = graphs.from_edge_index(ei, [cfg.N], [cfg.N], edge_attr=a)
    build_s = time.perf_counter() - t0
    ga = None if a is None else g.edge_attr
    # one new edge order per call of the cold variant (warm-up included): never a cache hit
    cold = [reordered(ei, a, gen) for _ in range(cfg.reps + 2)]
    with torch.no_grad():
        diff = (ref(x, ei, a) - ours(x, ei, a)).abs().max().item()
        diff_g = (ref(x, ei, a) - ours(x, g, ga)).abs().max().item()
        other = reordered(ei, a, gen)
        diff_c = (ref(x, *other) - ours(x, *other)).abs().max().item()
    runs = {"pyg": lambda: step(ref, x, ei, a), "ours_edge_index": lambda: step(ours, x, ei, a),
            "ours_edge_index_cold": lambda: step(ours, x, *cold.pop()),
            "ours_token_graph": lambda: step(ours, x, g, ga)}
    times = {k: [] for k in runs}
    for _ in range(2):  # warm-up (the graph's CSR plan is built here)
        for fn in runs.values():
            fn()
    for _ in range(cfg.reps):  # interleaved: the machine's load hits every variant alike
        for k, fn in runs.items():
            times[k].append(timed(fn))
    med = {k: statistics.median(v) for k, v in times.items()}
    return {"edge_dim": edge_dim, "max_abs_diff": diff, "max_abs_diff_token_graph": diff_g,
            "max_abs_diff_cold": diff_c, "median_s": med, "graph_build_s": build_s,
            "R13_edge_index": med["pyg"] / med["ours_edge_index"],
            "R13_edge_index_cold": med["pyg"] / med["ours_edge_index_cold"],
            "R13_token_graph": med["pyg"] / med["ours_token_graph"]}


def host_sort_ms(cfg: Config, gen: torch.Generator, reps: int = 21) -> dict:
    """Median ms of the raw path's host sort of the (target, source) keys: the radix passes the
    layer uses (``graphs.pyg.stable_argsort``) and numpy's int64 stable sort."""
    ei = random_edges(cfg.N, cfg.E, gen).numpy()
    key = ei[1] * cfg.N + ei[0]
    assert np.array_equal(stable_argsort(key), np.argsort(key, kind="stable"))
    sorts = {"radix_16bit": stable_argsort,
             "numpy_stable": lambda k: np.argsort(k, kind="stable")}
    times = {name: [] for name in sorts}
    for _ in range(reps):  # interleaved, as the layers
        for name, fn in sorts.items():
            times[name].append(timed(lambda fn=fn: fn(key)))
    return {name: 1e3 * statistics.median(t) for name, t in times.items()}


def run(cfg: Config) -> dict:
    """Both edge_dim cases and the host sort at ``cfg.threads`` threads, with the load average
    before and after (the machine is shared: the load, not the layer, can set the figures)."""
    torch.set_num_threads(cfg.threads)
    gen = torch.Generator().manual_seed(cfg.seed)
    load_before = os.getloadavg()
    rows = [case(cfg, d, gen) for d in (None, 16)]
    sort_ms = host_sort_ms(cfg, gen)
    return {"config": asdict(cfg), "threads": torch.get_num_threads(),
            "loadavg_before": load_before, "loadavg_after": os.getloadavg(), "cases": rows,
            "host_sort_ms": sort_ms}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--reps", type=int, default=Config.reps)
    p.add_argument("--threads", type=int, nargs="+", default=[Config.threads],
                   help="one run per thread count (default: 2)")
    p.add_argument("--out", default="experiments/results/bench_transformer_conv.json")
    args = p.parse_args()
    if args.reps < 1 or min(args.threads) < 1:
        p.error("--reps and --threads must be positive")
    runs = [run(Config(reps=args.reps, threads=t)) for t in args.threads]
    result = {"torch": torch.__version__, "pyg": torch_geometric.__version__, "device": "cpu",
              "runs": runs}
    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(result, f, indent=2)
    for r in runs:
        print(f"threads={r['threads']}, load average before {r['loadavg_before']}, after "
              f"{r['loadavg_after']}; host sort of the keys (ms): {r['host_sort_ms']}")
        for c in r["cases"]:
            print(f"  edge_dim={c['edge_dim']}: R13 {c['R13_edge_index']:.2f} (edge_index), "
                  f"{c['R13_edge_index_cold']:.2f} (edge_index, new order every call), "
                  f"{c['R13_token_graph']:.2f} (TokenGraph); max|diff| {c['max_abs_diff']:.1e}; "
                  f"medians {c['median_s']}")


if __name__ == "__main__":
    main()
