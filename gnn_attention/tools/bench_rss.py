"""Peak resident memory of one attention forward on a long causal sequence: the conv on an implicit
``graphs.causal([T])`` against the SDPA call it runs.

Notation: T tokens, C = H D channels, one sequence.

Each measurement runs in a fresh Python process (Linux: the peak is ``VmHWM``, reset through
``/proc/self/clear_refs`` just before the call, so the imports' own peak does not count), runs
the forward once under ``no_grad`` (after a warm-up call on 16 tokens) and reports ``extra = peak RSS - RSS before``:

    sdpa  F.scaled_dot_product_attention(q, k, v, is_causal=True), [1, H, T, D] each: what SDPA
          needs, its q, k, v and its output ("before" is taken before q, k, v exist)
    conv  MultiheadAttentionConv(C, H)(x [T, C], graphs.causal([T])): the projections, the SDPA
          call and the output projection ("before" is taken once x and the weights exist)

    ratio = extra(conv) / extra(sdpa)          target < 3

The graph is built inside the timed process and never materialised (``graph.materialized`` is
reported): a causal graph at T = 16384 would hold 134M edges (3.2 GiB of int64 indices).
"""
from __future__ import annotations

import json
import subprocess
import sys

TARGET = 3.0

_CHILD = r"""
import json, resource, sys, torch
kind, T, H, D = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
torch.set_num_threads(int(sys.argv[5]))
def rss():  # current resident set, bytes (Linux /proc)
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize()
def hwm():  # peak resident set since the last reset, bytes
    with open("/proc/self/status") as f:
        return next(int(l.split()[1]) * 1024 for l in f if l.startswith("VmHWM"))
torch.manual_seed(0)
with torch.no_grad():
    # warm-up on 16 tokens: first calls load kernels and grow thread pools (not the call's need)
    w = torch.randn(1, H, 16, D)
    torch.nn.functional.scaled_dot_product_attention(w, w, w, is_causal=True)
    if kind == "conv":
        from gnn_attention import graphs
        from gnn_attention.attention.conv import MultiheadAttentionConv
        MultiheadAttentionConv(H * D, H).eval()(torch.randn(16, H * D), graphs.causal([16]))
    before = rss()  # sdpa: its q, k, v count (the conv makes them from x)
    if kind == "sdpa":
        q, k, v = (torch.randn(1, H, T, D) for _ in range(3))
        run = lambda: torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)
        graph = None
    else:
        conv = MultiheadAttentionConv(H * D, H).eval()
        x = torch.randn(T, H * D)
        graph = graphs.causal([T])
        run = lambda: conv(x, graph)
        before = rss()  # conv: x and the weights are the caller's
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset the peak to the current RSS (the imports' own peak is not the call's)
    out = run()
    peak = hwm()
print(json.dumps({"kind": kind, "extra_bytes": peak - before,
                  "output_bytes": out.numel() * out.element_size(),
                  "materialized": None if graph is None else graph.materialized}))
"""


def measure(kind: str, T: int, H: int, D: int, threads: int = 2) -> dict:
    """One forward in a fresh process: ``{"kind", "extra_bytes", "output_bytes", "materialized"}``."""
    done = subprocess.run([sys.executable, "-c", _CHILD, kind, str(T), str(H), str(D),
                           str(threads)], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"the {kind} measurement failed: {done.stderr.strip().splitlines()[-1:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def peak_rss_ratio(T: int = 16384, H: int = 8, D: int = 64, threads: int = 2) -> dict[str, object]:
    """Both measurements and ``ratio = extra(conv) / extra(sdpa)``."""
    sdpa, conv = measure("sdpa", T, H, D, threads), measure("conv", T, H, D, threads)
    return {"T": T, "H": H, "D": D, "threads": threads, "sdpa": sdpa, "conv": conv,
            "ratio": conv["extra_bytes"] / max(sdpa["extra_bytes"], 1), "target": TARGET}
