"""The attention benchmark on an accelerator: graph_attention vs SDPA vs FlexAttention.

    python experiments/gpu_bench.py --device cuda --json OUT.json            # protocol sizes
    python experiments/gpu_bench.py --device cpu --json OUT.json --quick     # tiny, seconds

Notation: B sequences, H heads, D head width, T length (S = T here), N = sum of lengths (packed
nodes), w window. Dense tensors are ``[B, H, T, D]``; the library gets the same numbers packed as
``[N, H, D]`` plus a TokenGraph built on the device.

Cases: every (T, dtype, pattern) of ``Ts x dtypes x PATTERNS``, shortest T first so that a budget
cut drops the largest sizes. One predicate ``allow(b, q, kv)`` per pattern defines the case: the
library's graph is the builder with the same rule, SDPA gets ``is_causal`` or the boolean mask the
predicate evaluates to (True = allowed), FlexAttention gets it as ``mask_mod`` in a block mask.
    full     every key of the sequence               SDPA: no mask     ours: graphs.full
    causal   kv <= q (top-left)                      SDPA: is_causal   ours: graphs.causal
    window   |q - kv| <= w                           SDPA: band mask   ours: graphs.window(w)
    ragged   kv < L_b, L_b uniform in [T/8, T]       SDPA: key mask    ours: graphs.full(L)
In the ragged case SDPA and Flex also compute the padding query rows (they attend real keys, so
no row is empty); outputs are compared on real rows only and the output gradient is zero on
padding rows, so every method's gradients mean the same thing.

Per method: forward median/min ms under no_grad, forward+backward median/min ms (``out.backward``
with a fixed output gradient), timed with CUDA events after warm-up (perf_counter on the CPU);
the first call's seconds (compilation, plan); peak memory above the level before one forward+
backward (``torch.cuda.max_memory_allocated``; None on the CPU); max |out - reference| on a slice
(sequence 0, every head, the first and last ``slice_rows`` real queries) where the reference is
the predicate's masked softmax in float64 on the same (rounded) inputs. For ours also
max |grad - SDPA grad| over q, k, v on real rows. Ratios ours/SDPA and ours/Flex per case.
A failing method or case is recorded (``status: "error"`` and the message) and the run goes on;
the JSON is rewritten after every case, so a killed run leaves what it measured.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from gnn_attention.attention.functional import graph_attention
from gnn_attention.attention.kernels import choose

sys.path.insert(0, str(Path(__file__).resolve().parent))
from gpu_bench_cases import (
    PATTERNS,
    Timer,
    case_lengths,
    dense_mask,
    flex_functions,
    library_graph,
    peak_mib,
    predicate,
    reference_slice,
)

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
# Accuracy criterion: ours' slice error <= K * max(SDPA's slice error, FLOOR[dtype]). SDPA in the
# same dtype is the yardstick (its own rounding sets what is reachable); the floor keeps a lucky
# near-exact SDPA from demanding the impossible: a few ulps of outputs of magnitude ~0.1-1.
K = 4.0
FLOOR = {"fp32": 1e-5, "bf16": 1.6e-2, "fp16": 2e-3}


@dataclass(frozen=True)
class Config:
    Ts: tuple = (1024, 4096, 8192)
    B: int = 8
    H: int = 8
    D: int = 64
    window: int = 256
    dtypes: tuple = ("fp32", "bf16", "fp16")
    patterns: tuple = PATTERNS
    reps: int = 10
    warmup: int = 2
    slice_rows: int = 64
    flex: str = "compiled"        # "compiled" | "eager" | "off"
    budget_s: float = 240.0       # no new case starts after this many seconds
    seed: int = 0


QUICK = Config(Ts=(64,), B=2, H=2, D=16, window=8, reps=2, warmup=1, slice_rows=8, budget_s=60.0)


def run_case(pattern: str, T: int, dtype_name: str, cfg: Config, device, flex, timer) -> dict:
    dtype = DTYPES[dtype_name]
    B, H, D = cfg.B, cfg.H, cfg.D
    lengths = case_lengths(pattern, cfg, T)
    L = torch.tensor(lengths, device=device)
    allow = predicate(pattern, cfg.window, L)
    g = torch.Generator(device=device).manual_seed(cfg.seed + T)
    q4, k4, v4, go4 = (torch.randn(B, H, T, D, generator=g, device=device).to(dtype)
                       for _ in range(4))
    valid = torch.arange(T, device=device).view(1, -1) < L.view(-1, 1)    # [B, T] real rows
    go4 = go4 * valid.view(B, 1, T, 1)                                     # no gradient from padding
    packed = [x.transpose(1, 2)[valid].contiguous() for x in (q4, k4, v4, go4)]  # [N, H, D]
    graph = library_graph(pattern, lengths, cfg.window, device)
    row = {"pattern": pattern, "T": T, "B": B, "H": H, "D": D, "dtype": dtype_name,
           "lengths": lengths, "edges": int(graph.num_edges), "kernel": choose(graph),
           "methods": {}}
    idx, ref = reference_slice(q4, k4, v4, allow, lengths[0], cfg.slice_rows)

    def sdpa(q, k, v):
        if pattern == "causal":
            return F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    mask = None if allow is None or pattern == "causal" else dense_mask(allow, B, T, device)
    if pattern == "ragged":  # depends on b and kv only: [B, 1, 1, T]
        mask = mask[:, :, :1]
    methods = {"ours": (lambda q, k, v: graph_attention(q, k, v, graph), packed),
               "sdpa": (sdpa, (q4, k4, v4, go4))}
    if isinstance(flex, str):
        row["methods"]["flex"] = {"status": "skipped", "reason": flex}
    else:
        fn, create_block_mask = flex
        try:
            bm = None if allow is None else create_block_mask(
                allow, B if pattern == "ragged" else None, None, T, T, device=device)
            methods["flex"] = (lambda q, k, v: fn(q, k, v, block_mask=bm), (q4, k4, v4, go4))
        except Exception as e:  # noqa: BLE001 - recorded, the other methods still run
            row["methods"]["flex"] = {"status": "error", "reason": _reason(e)}
    grads = {}
    for name, (f, (q, k, v, go)) in methods.items():
        row["methods"][name] = measure(name, f, (q, k, v, go), idx, ref, valid, cfg, device,
                                       timer, grads)
    if "ours" in grads and "sdpa" in grads:
        row["methods"]["ours"]["grad_max_abs_diff_vs_sdpa"] = max(
            (a.float() - b.float()).abs().max().item() for a, b in zip(grads["ours"], grads["sdpa"]))
    row["ratios"] = ratios(row["methods"])
    ours, ref_err = row["methods"]["ours"], row["methods"]["sdpa"].get("max_abs_diff")
    row["accuracy_ok"] = None if "max_abs_diff" not in ours or ref_err is None else \
        ours["max_abs_diff"] <= K * max(ref_err, FLOOR[dtype_name])
    return row


def measure(name, f, tensors, idx, ref, valid, cfg: Config, device, timer, grads: dict) -> dict:
    """One method on one case, phase by phase (accuracy, fwd, fwd_bwd); a failing phase is
    recorded under ``errors`` and the next one still runs. Fills ``grads[name]`` (packed rows)."""
    q, k, v, go = tensors
    r, errors = {}, {}
    leaves = [x.detach().requires_grad_() for x in (q, k, v)]

    def clear():
        for x in leaves:
            x.grad = None

    def accuracy():
        out = f(q, k, v)  # ours: packed [N, H, D], sequence 0 first; the others [B, H, T, D]
        got = out[idx].transpose(0, 1) if name == "ours" else out[0, :, idx]
        r["max_abs_diff"] = (got.double() - ref).abs().max().item()

    def backward():
        r["fwd_bwd"] = timer(lambda: f(*leaves).backward(go), cfg.reps, cfg.warmup, clear)
        clear()
        r["peak_mib"] = peak_mib(lambda: f(*leaves).backward(go), device)
        grads[name] = [x.grad if name == "ours" else x.grad.transpose(1, 2)[valid]
                       for x in leaves]

    phases = {"accuracy": accuracy, "fwd": lambda: r.update(fwd=timer(lambda: f(q, k, v),
                                                                       cfg.reps, cfg.warmup)),
              "fwd_bwd": backward}
    if name == "flex" and device.type == "cpu":  # torch: "FlexAttention does not support
        del phases["fwd_bwd"]                       # backward on CPU"
        r["skipped"] = {"fwd_bwd": "FlexAttention has no backward on the CPU"}
    for phase, run_phase in phases.items():
        try:
            with torch.set_grad_enabled(phase == "fwd_bwd"):  # forward figures under no_grad
                run_phase()
        except Exception as e:  # noqa: BLE001 - an OOM or a compile failure is a result too
            errors[phase] = _reason(e)
            clear()
            if device.type == "cuda":
                torch.cuda.empty_cache()
    r["status"] = "ok" if not errors else ("error" if len(errors) == len(phases) else "partial")
    if errors:
        r["errors"] = errors
    return r


def ratios(methods: dict) -> dict:
    """ours / baseline median ms (> 1: ours slower); None where either side has no figure."""
    out = {}
    for base in ("sdpa", "flex"):
        for phase in ("fwd", "fwd_bwd"):
            a, b = methods.get("ours", {}).get(phase), methods.get(base, {}).get(phase)
            out[f"ours/{base}_{phase}"] = a["median_ms"] / b["median_ms"] if a and b else None
    return out


def _reason(e: Exception) -> str:
    return f"{type(e).__name__}: {(str(e).strip().splitlines() or [''])[0][:300]}"


def environment(device: torch.device) -> dict:
    env = {"device": str(device), "torch": torch.__version__, "cuda": torch.version.cuda,
           "name": None, "python": sys.version.split()[0]}
    if device.type == "cuda":
        env["name"] = torch.cuda.get_device_name(device)
        env["capability"] = list(torch.cuda.get_device_capability(device))
        env["memory_gib"] = torch.cuda.get_device_properties(device).total_memory / 2**30
    return env


def run(cfg: Config, device: torch.device, out_path: Path | None = None, log=print) -> dict:
    """The sweep; ``{"schema", "environment", "config", "cases", "elapsed_s", "complete"}``."""
    start = time.perf_counter()
    timer, flex = Timer(device), flex_functions(cfg.flex)
    result = {"schema": "gpu_bench/1", "environment": environment(device), "config": asdict(cfg),
              "criterion": {"K": K, "floor": FLOOR}, "cases": [], "complete": False}
    todo = [(T, d, p) for T in cfg.Ts for d in cfg.dtypes for p in cfg.patterns]
    for T, d, p in todo:
        t0 = time.perf_counter()
        if t0 - start > cfg.budget_s:
            row = {"pattern": p, "T": T, "dtype": d, "status": "skipped",
                   "reason": f"budget of {cfg.budget_s:g} s spent"}
        else:
            try:
                row = {"status": "ok", **run_case(p, T, d, cfg, device, flex, timer)}
            except Exception as e:  # noqa: BLE001 - the case is recorded, the sweep goes on
                row = {"pattern": p, "T": T, "dtype": d, "status": "error", "reason": _reason(e)}
            if device.type == "cuda":
                torch.cuda.empty_cache()
        row["seconds"] = time.perf_counter() - t0
        result["cases"].append(row)
        result["elapsed_s"] = time.perf_counter() - start
        log(summary_line(row))
        if out_path is not None:
            out_path.write_text(json.dumps(result, indent=1) + "\n")
    result["complete"] = True
    if out_path is not None:
        out_path.write_text(json.dumps(result, indent=1) + "\n")
    return result


def summary_line(row: dict) -> str:
    head = f"{row['pattern']:>6} T={row['T']:<5} {row['dtype']}"
    if row["status"] != "ok":
        return f"{head}  {row['status']}: {row['reason']}"
    parts = []
    for name, m in row["methods"].items():
        ms = "/".join(f"{m[p]['median_ms']:.3g}" if p in m else "-" for p in ("fwd", "fwd_bwd"))
        err = f" err {m['max_abs_diff']:.1e}" if "max_abs_diff" in m else ""
        parts.append(f"{name} {ms} ms{err}" + ("" if m["status"] == "ok" else f" ({m['status']})"))
    return f"{head}  [{row['kernel']}] " + ", ".join(parts) + f"  acc_ok={row['accuracy_ok']}"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda", help="cuda, cuda:N or cpu (default cuda)")
    p.add_argument("--json", metavar="OUT", required=True, help="where to write the results")
    p.add_argument("--quick", action="store_true", help="tiny sizes (seconds; any device)")
    p.add_argument("--T", type=int, nargs="+", help="lengths (default 1024 4096 8192)")
    p.add_argument("--dtypes", nargs="+", choices=list(DTYPES))
    p.add_argument("--patterns", nargs="+", choices=list(PATTERNS))
    p.add_argument("--reps", type=int)
    p.add_argument("--flex", choices=["compiled", "eager", "off"],
                   help="FlexAttention mode (default: compiled on CUDA, eager on the CPU)")
    p.add_argument("--budget-s", type=float, help="start no new case after this many seconds")
    a = p.parse_args(argv)
    try:
        device = torch.device(a.device)
    except RuntimeError:
        p.exit(2, f"gpu_bench: bad --device {a.device!r}\n")
    if device.type == "cuda" and not torch.cuda.is_available():
        p.exit(2, "gpu_bench: --device cuda but CUDA is not available (use --device cpu)\n")
    if a.T and min(a.T) < 1 or a.reps is not None and a.reps < 1:
        p.exit(2, "gpu_bench: --T and --reps must be >= 1\n")
    if device.type == "cpu":
        torch.set_num_threads(1)  # a quick run on a shared machine
    cfg = QUICK if a.quick else Config()
    over = {"Ts": tuple(a.T or ()), "dtypes": tuple(a.dtypes or ()),
            "patterns": tuple(a.patterns or ()), "reps": a.reps, "budget_s": a.budget_s,
            "flex": a.flex or ("compiled" if device.type == "cuda" else "eager")}
    cfg = Config(**{**asdict(cfg), **{k: v for k, v in over.items() if v not in (None, ())}})
    out = Path(a.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    res = run(cfg, device, out)
    n = {k: sum(c["status"] == k for c in res["cases"]) for k in ("ok", "error", "skipped")}
    bad_acc = sum(c.get("accuracy_ok") is False for c in res["cases"])
    failed = sum(m["status"] in ("error", "partial") for c in res["cases"]
                 for m in c.get("methods", {}).values())
    print(f"gpu_bench: {len(res['cases'])} cases in {res['elapsed_s']:.0f} s: {n['ok']} ran, "
          f"{n['error']} failed, {n['skipped']} skipped; {bad_acc} outside the accuracy "
          f"criterion; {failed} method runs with an error; wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
