"""R14: peak memory and time of PyG's ``GPSConv`` against :class:`~.gps.GPSLayer` on ragged batches.

Notation: G graphs per batch, sizes uniform in ``[min_size, max_size]``, N nodes, C channels,
H heads, P = sum_g N_g^2 attention pairs, M = the largest graph.

Both layers hold the same weights (``GPSLayer.from_pyg``) and run in training mode; each case is
first checked for equality in eval mode (max |delta|, fp32). Times are medians of interleaved
repetitions (one process, methods alternating, so machine load hits all alike); peak memory is the
process's peak resident memory above its level before one forward + backward (CPU), or
``torch.cuda.max_memory_allocated`` above the allocated level (CUDA). ``GPSConv`` pads to
``[G, M, C]`` and, with attention dropout (SDPA's math path), holds ``[G, H, M, M]`` weights;
``GPSLayer`` attends over size buckets (``max_padding`` 0.1) and, with ``recompute``, holds one
bucket's weights at a time (``max_pairs = P / 8``).
"""
from __future__ import annotations

import ctypes
import json
import os
import platform
import statistics
import time
from dataclasses import asdict, dataclass
from typing import Callable, Dict

import torch

from gnn_attention.graph_models.edge_sets import pair_buckets
from gnn_attention.graph_models.gps import GPSLayer


@dataclass(frozen=True)
class GPSBenchConfig:
    num_graphs: tuple = (64, 256)
    min_size: int = 10
    max_size: int = 500
    channels: int = 64
    heads: int = 4
    attn_dropouts: tuple = (0.0, 0.5)
    reps: int = 10
    threads: int = 2
    seed: int = 0
    device: str = "cpu"


QUICK = GPSBenchConfig(num_graphs=(4,), min_size=3, max_size=20, channels=12, heads=2, reps=2)


def _peak_extra(fn: Callable[[], None], device: torch.device) -> int:
    """Bytes above the starting level at the peak of ``fn()`` (-1 where it cannot be read)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        fn()
        torch.cuda.synchronize(device)
        return torch.cuda.max_memory_allocated(device) - before

    def status(key: str) -> int:
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) * 1024 for line in f if line.startswith(key))
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)  # hand freed memory back: an honest baseline
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # reset VmHWM to the current RSS
    except OSError:
        return -1
    before = status("VmRSS:")
    fn()
    return status("VmHWM:") - before


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _interleaved(fns: Dict[str, Callable[[], None]], reps: int, device) -> Dict[str, float]:
    times = {k: [] for k in fns}
    for _ in range(reps):
        for name, fn in fns.items():
            _sync(device)
            t = time.perf_counter()
            fn()
            _sync(device)
            times[name].append(time.perf_counter() - t)
    return {k: statistics.median(v) for k, v in times.items()}


def _case(cfg: GPSBenchConfig, G: int, p: float) -> dict:
    from torch_geometric.nn import GPSConv  # the baseline: only the benchmark needs it

    dev = torch.device(cfg.device)
    gen = torch.Generator().manual_seed(cfg.seed + G)
    sizes = torch.randint(cfg.min_size, cfg.max_size + 1, (G,), generator=gen)
    batch = torch.repeat_interleave(torch.arange(G), sizes).to(dev)
    x = torch.randn(int(sizes.sum()), cfg.channels, generator=gen).to(dev).requires_grad_()
    ei = torch.empty(2, 0, dtype=torch.long, device=dev)
    pairs = int((sizes ** 2).sum())
    torch.manual_seed(cfg.seed)
    pyg = GPSConv(cfg.channels, None, heads=cfg.heads, attn_kwargs={"dropout": p}).to(dev)
    ours = GPSLayer.from_pyg(pyg)
    lean = GPSLayer.from_pyg(pyg, max_pairs=max(pairs // 8, 1), recompute=True)
    t = time.perf_counter()
    buckets = pair_buckets(batch, ours.max_padding)
    prep = time.perf_counter() - t
    lean_buckets = pair_buckets(batch, lean.max_padding, lean.max_pairs)
    with torch.no_grad():
        for m in (pyg, ours):
            m.eval()
        err = float((pyg(x, ei, batch) - ours(x, ei, batch, buckets=buckets)).abs().max())
        for m in (pyg, ours, lean):
            m.train()
    calls = {"pyg": lambda: pyg(x, ei, batch), "ours": lambda: ours(x, ei, batch, buckets=buckets),
             "ours_recompute": lambda: lean(x, ei, batch, buckets=lean_buckets)}

    def fwd_bwd(call):
        return lambda: call().sum().backward()

    def fwd(call):
        def run():
            with torch.no_grad():
                call()
        return run
    for f in calls.values():  # warm up
        fwd_bwd(f)()
    peak = {k: _peak_extra(fwd_bwd(f), dev) for k, f in calls.items()}
    t_fb = _interleaved({k: fwd_bwd(f) for k, f in calls.items()}, cfg.reps, dev)
    t_f = _interleaved({k: fwd(f) for k, f in calls.items()}, cfg.reps, dev)
    row = {"num_graphs": G, "nodes": int(sizes.sum()), "max_graph": int(sizes.max()),
           "pairs": pairs, "padded_pairs": G * int(sizes.max()) ** 2, "attn_dropout": p,
           "buckets": len(buckets.parts), "buckets_recompute": len(lean_buckets.parts),
           "max_abs_err_eval": err, "bucket_prep_s": prep}
    for k in calls:
        row[f"{k}_peak_bytes"], row[f"{k}_fwd_s"], row[f"{k}_fwd_bwd_s"] = peak[k], t_f[k], t_fb[k]
    for k in ("ours", "ours_recompute"):
        row[f"memory_ratio_{k}"] = peak["pyg"] / max(peak[k], 1)
        row[f"time_ratio_fwd_bwd_{k}"] = t_fb["pyg"] / t_fb[k]
        row[f"time_ratio_fwd_{k}"] = t_f["pyg"] / t_f[k]
    row["prep_over_4_layers"] = prep / (4 * t_fb["ours"])
    return row


def gps_benchmark(cfg: GPSBenchConfig = GPSBenchConfig()) -> dict:
    """Run every (number of graphs, attention dropout) case of ``cfg``; a JSON-ready dict with the
    environment (torch version, device, threads, load average) and one row per case."""
    threads = torch.get_num_threads()
    torch.set_num_threads(cfg.threads)
    try:
        load = os.getloadavg()
        rows = [_case(cfg, G, p) for G in cfg.num_graphs for p in cfg.attn_dropouts]
    finally:
        torch.set_num_threads(threads)
    return {"config": asdict(cfg), "torch": torch.__version__, "device": cfg.device,
            "machine": platform.machine(), "threads": cfg.threads,
            "load_average_before": load, "load_average_after": os.getloadavg(), "rows": rows}


def write_json(result: dict, path: str) -> None:
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with open(path, "w") as f:
        json.dump(result, f, indent=1)
