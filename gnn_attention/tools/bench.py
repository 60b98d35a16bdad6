"""The attention benchmark: patterns P1-P9 against the baselines of the benchmark protocol.

Notation: B sequences, H heads, D head width, T target / S source length, E edges, w window,
d dilation, k average in-degree. Dense tensors are ``[B, H, T, D]`` (the layout SDPA is fast in);
the library gets the same numbers as packed node tensors ``[N, H, D]`` plus a TokenGraph.

For every (pattern, T) the runner times, interleaving the methods rep by rep so that load drifts
hit all of them alike (median of ``reps``; the naive baseline in a loop of its own, see ``_timed``):
    library       graph_attention(q, k, v, graph), backend "auto" (kernel name recorded)
    sdpa          SDPA on the padded dense tensors ignoring sparsity (no mask)
    sdpa_masked   SDPA with the pattern's boolean mask (True = allowed); the reference output
    sdpa_causal   SDPA is_causal=True (P2)
    flex          FlexAttention with a block mask, compiled, forward only (CPU; P3/P4)
    naive         gather -> torch_geometric.utils.softmax -> scatter (skipped past ``naive_bytes``)
forward and forward+backward separately (median and min), the library's one-off preprocessing (first call on a
fresh graph minus a cached call), peak extra memory (process peak RSS above the level before the
call), and max |output - sdpa_masked output| for every method (the correctness check).
:mod:`gnn_attention.tools.bench_report` turns the rows into the ratios R1-R9, a table and plots.
"""
from __future__ import annotations

import ctypes
import math
import os
import platform
import statistics
import time
from dataclasses import asdict, dataclass, field, replace

import torch
import torch.nn.functional as F

from gnn_attention import graphs
from gnn_attention.attention.functional import graph_attention
from gnn_attention.attention.kernels import choose

PATTERNS = ("P1", "P2", "P3", "P4", "P5", "P6", "P7", "P8", "P9")


@dataclass(frozen=True)
class BenchConfig:
    Ts: tuple = (256, 1024, 4096)
    B: int = 1
    H: int = 4
    D: int = 32
    patterns: tuple = PATTERNS
    reps: int = 10
    window: int = 64
    dilation: int = 2
    degree: int = 32
    batch_ragged: int = 8          # P6: sequences per batch, lengths uniform in [T/8, T]
    naive_bytes: int = 2**29       # skip the naive baseline past this many bytes of [E, H, D]
    flex_Ts: tuple = (4096,)       # FlexAttention compiles per shape (~100 s): P3/P4 at these T
    ragged_T_max: int = 1024       # P6 only up to this T (a batch of 8 long sequences is slow)
    methods: tuple = ("library", "sdpa", "sdpa_masked", "sdpa_causal", "flex", "naive")
    memory: bool = True
    seed: int = 0
    extra: dict = field(default_factory=dict)


QUICK = BenchConfig(Ts=(256,), B=2, H=2, D=8, reps=2, window=8, degree=4, flex_Ts=(), memory=False)


@dataclass
class Case:
    """One pattern at one size: the graph, its dense mask and how SDPA would run it."""

    pattern: str
    graph: graphs.TokenGraph
    mask: torch.Tensor            # [B, 1, T, S] bool, True = allowed (padding blocked)
    T: int
    S: int
    dst_valid: torch.Tensor       # [B, T] bool: real (non-padding) query slots
    src_valid: torch.Tensor       # [B, S]
    mask_mod: object = None       # FlexAttention mask_mod(b, h, q, kv) or None


def _lengths_mask(lengths, width):
    return torch.arange(width).view(1, -1) < torch.as_tensor(lengths).view(-1, 1)


def make_case(pattern: str, T: int, cfg: BenchConfig) -> Case:
    """Build pattern ``P1``..``P9`` at size T (see the protocol's pattern table)."""
    g = torch.Generator().manual_seed(cfg.seed + T)
    B, w, d = cfg.B, cfg.window, cfg.dilation
    full_T = [T] * B
    if pattern == "P6":
        n = torch.randint(max(1, T // 8), T + 1, (cfg.batch_ragged,), generator=g).tolist()
        gr = graphs.full(n)
        return _case(pattern, gr, T, T, n, n)
    if pattern == "P9":  # decoder T/2 queries (ragged) over encoder memories of T keys (ragged)
        src = torch.randint(T // 2, T + 1, (B,), generator=g).tolist()
        dst = torch.randint(T // 4, T // 2 + 1, (B,), generator=g).tolist()
        return _case(pattern, graphs.cross(src, dst), T // 2, T, dst, src)
    if pattern == "P1":
        gr = graphs.full(full_T)
    elif pattern == "P2":
        gr = graphs.causal(full_T)
    elif pattern in ("P3", "P4", "P5"):
        gr = graphs.window(full_T, w, causal=pattern == "P4", dilation=d if pattern == "P5" else 1)
    elif pattern == "P7":
        b = max(1, min(64, T // 8))  # BigBird blocks of b tokens; the first block is global
        gr = graphs.bigbird(full_T, w=b, global_tokens=range(b), block=b, random_blocks=3,
                            seed=int(torch.randint(0, 2**31, (1,), generator=g)))
    elif pattern == "P8":
        gr = _random_graph(B, T, cfg.degree, g)
    else:
        raise ValueError(f"unknown pattern {pattern!r}; expected one of {PATTERNS}")
    return _case(pattern, gr, T, T, full_T, full_T, _mask_mod(pattern, w))


def _case(pattern, gr, T, S, dst_len, src_len, mask_mod=None) -> Case:
    mask = graphs.to_dense_mask(gr, "sdpa")
    mask = torch.nn.functional.pad(mask, (0, S - mask.size(2), 0, T - mask.size(1))).unsqueeze(1)
    return Case(pattern, gr, mask, T, S, _lengths_mask(dst_len, T), _lengths_mask(src_len, S),
                mask_mod)


def _random_graph(B: int, T: int, k: int, g: torch.Generator) -> graphs.TokenGraph:
    """Every target draws min(k, T) distinct sources of its own sequence."""
    k = min(k, T)
    src = torch.rand(B * T, T, generator=g).argsort(1)[:, :k]
    src = src + (torch.arange(B * T) // T * T).view(-1, 1)
    dst = torch.arange(B * T).view(-1, 1).expand(-1, k)
    return graphs.from_edge_index(torch.stack([src.flatten(), dst.flatten()]), [T] * B, [T] * B,
                                  graphs.Pattern("random"))


def _mask_mod(pattern: str, w: int):
    """FlexAttention's ``mask_mod(b, h, q_idx, kv_idx)`` for P3/P4 (None otherwise)."""
    mods = {"P3": lambda b, h, q, kv: (q - kv).abs() <= w,
            "P4": lambda b, h, q, kv: (kv <= q) & (q - kv <= w)}
    return mods.get(pattern)


# ---------------------------------------------------------------------------------------------
# Methods: each maps (case, dense q/k/v, packed q/k/v) to a function returning the padded output


def _methods(case: Case, cfg: BenchConfig, q4, k4, v4, qp, kp, vp, flex):
    """name -> (callable returning [B, H, T, D] output, supports backward)."""
    dv = case.dst_valid
    gr, mask = case.graph, case.mask

    padded = not bool(dv.all())  # once: a tensor -> bool sync per call is harness, not library

    def unpack(out):  # packed [N, H, D] -> padded [B, H, T, D]
        if padded:
            full = out.new_zeros(dv.size(0), dv.size(1), out.size(1), out.size(2))
            return full.index_put((dv,), out).transpose(1, 2)
        return out.view(dv.size(0), dv.size(1), out.size(1), out.size(2)).transpose(1, 2)

    m = {"library": (lambda: unpack(graph_attention(qp, kp, vp, gr)), True),
         "sdpa": (lambda: F.scaled_dot_product_attention(q4, k4, v4), True),
         "sdpa_masked": (lambda: F.scaled_dot_product_attention(q4, k4, v4, attn_mask=mask), True)}
    if case.pattern == "P2":
        m["sdpa_causal"] = (lambda: F.scaled_dot_product_attention(q4, k4, v4, is_causal=True), True)
    if flex is not None and case.pattern in ("P3", "P4") and case.T in cfg.flex_Ts:
        fn, block_mask = flex(case)
        m["flex"] = (lambda: fn(q4, k4, v4, block_mask=block_mask), False)
    E, H, D = gr.num_edges, q4.size(1), q4.size(3)
    if E * H * D * 4 * 4 <= cfg.naive_bytes:
        m["naive"] = (lambda: unpack(_naive(qp, kp, vp, gr.edge_index, gr.num_dst)), True)
    return {k: f for k, f in m.items() if k in cfg.methods or k == "sdpa_masked"}


def _naive(q, k, v, edge_index, n_dst):
    """The textbook PyG formulation: per-edge gathers, utils.softmax, scatter-sum."""
    from torch_geometric.utils import scatter, softmax

    src, dst = edge_index
    s = (q[dst] * k[src]).sum(-1) / math.sqrt(q.size(-1))
    alpha = softmax(s, dst, num_nodes=n_dst)
    return scatter(alpha.unsqueeze(-1) * v[src], dst, dim=0, dim_size=n_dst, reduce="sum")


def flex_compiler():
    """``case -> (compiled flex_attention, block mask)``, or None if FlexAttention cannot run."""
    try:
        from torch.nn.attention.flex_attention import create_block_mask, flex_attention
    except ImportError:  # pragma: no cover - older torch
        return None
    fn = torch.compile(flex_attention)

    def build(case: Case):
        bm = create_block_mask(case.mask_mod, None, None, case.T, case.S, device="cpu")
        return fn, bm
    return build


# ---------------------------------------------------------------------------------------------
# Measurement


def _peak_extra(fn) -> int:
    """Peak resident memory above the level before ``fn()`` (Linux: VmHWM after a reset)."""
    def status(key):
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) * 1024 for line in f if line.startswith(key))
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)  # return freed memory so the baseline is honest
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        return -1
    before = status("VmRSS:")
    fn()
    return status("VmHWM:") - before


def _timed(fns: dict, reps: int) -> dict:
    """:func:`_interleaved`, with the naive baseline timed in a loop of its own: its hundreds of MiB
    of ``[E, H, D]`` temporaries evict the caches, which slowed whichever method ran next by ~0.2 ms
    (P1, T=256: library 0.57 -> 0.45 ms fwd with naive left out, SDPA unchanged)."""
    heavy = {k: f for k, f in fns.items() if k == "naive"}
    light = {k: f for k, f in fns.items() if k not in heavy}
    return {**_interleaved(light, reps), **(_interleaved(heavy, reps) if heavy else {})}


def _interleaved(fns: dict, reps: int) -> dict:
    """(median, min) seconds per function, timing them in turn within each repetition."""
    for f in fns.values():  # warm-up (compilation, caches, plan)
        f()
    times = {name: [] for name in fns}
    for _ in range(reps):
        for name, f in fns.items():
            t0 = time.perf_counter()
            f()
            times[name].append(time.perf_counter() - t0)
    return {name: (statistics.median(ts), min(ts)) for name, ts in times.items()}


def run_case(case: Case, cfg: BenchConfig, flex=None) -> list:
    """Time, check and measure every method on one case; one row per method."""
    g = torch.Generator().manual_seed(cfg.seed)
    B, T, S, H, D = case.mask.size(0), case.T, case.S, cfg.H, cfg.D
    q4, k4, v4 = (torch.randn(B, H, n, D, generator=g) for n in (T, S, S))
    qp, kp, vp = (x.transpose(1, 2)[valid].contiguous()
                  for x, valid in ((q4, case.dst_valid), (k4, case.src_valid), (v4, case.src_valid)))
    methods = _methods(case, cfg, q4, k4, v4, qp, kp, vp, flex)
    with torch.no_grad():
        ref = methods["sdpa_masked"][0]()
        valid = case.dst_valid.unsqueeze(1).unsqueeze(-1).expand_as(ref)
        err = {name: (f() - ref)[valid].abs().max().item() for name, (f, _) in methods.items()}
        fwd = _timed({n: f for n, (f, _) in methods.items()}, cfg.reps)
    leaves = [x.requires_grad_() for x in (q4, k4, v4, qp, kp, vp)]

    def fwd_bwd(f):
        return lambda: f().sum().backward()
    bwd = _timed({n: fwd_bwd(f) for n, (f, b) in methods.items() if b}, cfg.reps)
    for x in leaves:
        x.grad = None
    pre = _preprocessing(case.graph, qp.detach(), kp.detach(), vp.detach(), cfg.reps)
    rows = []
    for name, (f, b) in methods.items():
        peak = _peak_extra(fwd_bwd(f)) if cfg.memory and b else None
        rows.append({"pattern": case.pattern, "T": T, "S": S, "B": B, "H": H, "D": D,
                     "E": case.graph.num_edges, "method": name,
                     "kernel": choose(case.graph) if name == "library" else name,
                     "exact": name != "sdpa" or case.pattern == "P1",
                     "fwd_s": fwd[name][0], "fwdbwd_s": bwd[name][0] if b else None,
                     "fwd_min_s": fwd[name][1], "fwdbwd_min_s": bwd[name][1] if b else None,
                     "pre_s": pre if name == "library" else None,
                     "max_abs_err": err[name], "peak_extra_bytes": peak})
    return rows


def _preprocessing(gr: graphs.TokenGraph, q, k, v, reps: int) -> float:
    """Median over reps of (first call on an emptied plan cache) - (a cached call)."""
    with torch.no_grad():
        diffs = []
        for _ in range(max(3, reps // 2)):
            gr.cache.clear()
            t0 = time.perf_counter()
            graph_attention(q, k, v, gr)
            t1 = time.perf_counter()
            graph_attention(q, k, v, gr)
            diffs.append((t1 - t0) - (time.perf_counter() - t1))
    return max(0.0, statistics.median(diffs))


def sgemm_gflops(n: int = 2048, reps: int = 5) -> float:
    """Measured fp32 matrix-multiply throughput (GFLOP/s) at the current thread count."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    t = _interleaved({"mm": lambda: a @ b}, reps)["mm"][1]
    return 2 * n**3 / t / 1e9


def environment() -> dict:
    return {"torch": torch.__version__, "python": platform.python_version(), "device": "cpu",
            "cpu": platform.processor() or platform.machine(), "threads": torch.get_num_threads(),
            "load_average": list(os.getloadavg()), "cpu_count": os.cpu_count()}


def run(cfg: BenchConfig, threads: int = 2, progress=print) -> dict:
    """The whole sweep: ``{"environment", "config", "sgemm_gflops", "rows"}``."""
    torch.set_num_threads(threads)
    env_before = environment()
    flex = flex_compiler() if cfg.flex_Ts else None
    rows = []
    for pattern in cfg.patterns:
        for T in cfg.Ts:
            if pattern == "P6" and T > cfg.ragged_T_max:
                continue
            case = make_case(pattern, T, cfg)
            t0 = time.perf_counter()
            rows += run_case(case, cfg, flex)
            progress(f"{pattern} T={T}: {time.perf_counter() - t0:.1f} s")
    env = environment()
    env["load_average_before"] = env_before["load_average"]
    return {"environment": env, "config": asdict(replace(cfg, extra={})),
            "sgemm_gflops": sgemm_gflops(), "rows": rows}
