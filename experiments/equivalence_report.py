"""How far is attention-as-message-passing from dense attention, by length, depth, dtype and pattern?

Notation: T tokens (one sequence), H heads, D head width, C = d_model, L stacked layers; "graph" =
this library (edges + segment softmax), "dense" = PyTorch's matrix attention with the equivalent
mask; "golden" = the dense computation in float64. err(x) = max |x - golden| over all entries.

Two sweeps, both judged against a float64 golden so that graph and dense errors in a low precision
are measured with the same ruler (graph error <= k x dense error is the claim, not graph == dense):
  * function level: ``graph_attention`` vs ``F.scaled_dot_product_attention`` (bool mask, True =
    allowed) for T in ``lengths``: outputs and the gradients of q, k, v;
  * model level: a stack of L post-norm encoder layers (``gnn_attention.models.layers.Encoder``) vs
    ``nn.TransformerEncoder`` with the same weights, output after each of L = 1..``depth`` layers.

Run: ``python experiments/equivalence_report.py`` (writes experiments/results/equivalence_report.json,
docs/figures/equivalence_length.png and docs/figures/equivalence_depth.png).
"""
from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from gnn_attention import graphs
from gnn_attention.attention.functional import graph_attention
from gnn_attention.models.layers import Encoder, EncoderLayer

CONFIG = {"lengths": [16, 64, 256, 512], "heads": 4, "head_dim": 16, "depth": 12, "depth_T": 64,
          "d_model": 64, "dim_feedforward": 128, "window": 8, "seed": 0,
          "patterns": ["full", "causal", "window", "bigbird_like"],
          "dtypes": ["float64", "float32", "bfloat16"]}
ROOT = Path(__file__).resolve().parents[1]


def make_graph(pattern: str, T: int, window: int):
    if pattern == "full":
        return graphs.full([T])
    if pattern == "causal":
        return graphs.causal([T])
    if pattern == "window":
        return graphs.window([T], window)
    if pattern == "bigbird_like":  # window + 2 global tokens + 1 random block of 8 per query block
        return graphs.bigbird([T], w=window // 2, global_tokens=(0, T - 1), block=8, random_blocks=1)
    raise ValueError(pattern)


KINDS = ("graph", "reference", "dense")


def _kernel(g) -> str:
    """The kernel ``backend="auto"`` picks for this graph (reported next to its errors)."""
    from gnn_attention.attention import kernels

    return kernels.choose(g) if hasattr(kernels, "choose") else "reference"


def _err(x: torch.Tensor, golden: torch.Tensor) -> float:
    return float((x.double() - golden).abs().max())


def function_level(T: int, pattern: str, cfg: dict) -> list:
    """Rows of {dtype, graph/dense output and gradient errors} for one (T, pattern)."""
    H, D = cfg["heads"], cfg["head_dim"]
    gen = torch.Generator().manual_seed(cfg["seed"] + T)
    q, k, v, w = (torch.randn(T, H, D, generator=gen, dtype=torch.float64) for _ in range(4))
    g = make_graph(pattern, T, cfg["window"])
    allowed = graphs.to_dense_mask(g, "sdpa")  # [1, T, T], True = allowed

    def run(kind: str, dtype: torch.dtype):
        x = [t.detach().to(dtype).clone().requires_grad_() for t in (q, k, v)]
        if kind in ("graph", "reference"):
            out = graph_attention(*x, g, backend="auto" if kind == "graph" else "reference")
        else:  # [B, H, T, D] layout for SDPA
            qd, kd, vd = (t.transpose(0, 1).unsqueeze(0) for t in x)
            out = F.scaled_dot_product_attention(qd, kd, vd, attn_mask=allowed.unsqueeze(1))
            out = out.squeeze(0).transpose(0, 1)
        (out * w.to(dtype)).sum().backward()
        return out.detach(), [t.grad for t in x]

    golden, golden_grads = run("dense", torch.float64)
    rows = []
    for name in cfg["dtypes"]:
        dtype = getattr(torch, name)
        row = {"T": T, "pattern": pattern, "dtype": name, "edges": g.num_edges,
               "kernel": _kernel(g)}
        for kind in KINDS:
            out, grads = run(kind, dtype)
            row[f"{kind}_out"] = _err(out, golden)
            row[f"{kind}_grad"] = max(_err(a, b) for a, b in zip(grads, golden_grads))
        rows.append(row)
    return rows


def model_level(pattern: str, cfg: dict) -> list:
    """Rows of {dtype, depth, graph/dense error of the hidden state after that many layers}."""
    T, C, L = cfg["depth_T"], cfg["d_model"], cfg["depth"]
    torch.manual_seed(cfg["seed"])
    layer = nn.TransformerEncoderLayer(C, cfg["heads"], cfg["dim_feedforward"], dropout=0.0,
                                       batch_first=True, dtype=torch.float64)
    dense = nn.TransformerEncoder(layer, L, enable_nested_tensor=False)
    graph_model = Encoder(EncoderLayer(C, cfg["heads"], cfg["dim_feedforward"], dropout=0.0,
                                       dtype=torch.float64), L)
    graph_model.load_state_dict(dense.state_dict())
    g = make_graph(pattern, T, cfg["window"])
    blocked = graphs.to_dense_mask(g, "mha")[0]  # [T, T], True = blocked (nn.MultiheadAttention)
    x0 = torch.randn(1, T, C, generator=torch.Generator().manual_seed(cfg["seed"]),
                     dtype=torch.float64)

    def dense_hidden(dtype):
        m = dense.to(dtype).train()  # train mode (dropout 0) keeps torch off its fused fast path
        h, out = x0.to(dtype), []
        for lay in m.layers:
            h = lay(h, src_mask=blocked)
            out.append(h[0])
        return out

    def graph_hidden(dtype, backend):
        m = graph_model.to(dtype).eval()
        for lay in m.layers:
            lay.self_attn.backend = backend
        _, hidden, _ = m(x0[0].to(dtype), g, need_weights=True)
        return hidden[1:]

    with torch.no_grad():
        golden = dense_hidden(torch.float64)
        rows = []
        for name in cfg["dtypes"]:
            dtype = getattr(torch, name)
            hid = {"graph": graph_hidden(dtype, "auto"), "reference": graph_hidden(dtype, "reference"),
                   "dense": dense_hidden(dtype)}
            for depth in range(1, L + 1):
                rows.append({"pattern": pattern, "dtype": name, "depth": depth, "T": T,
                             "kernel": _kernel(g), **{k: _err(hid[k][depth - 1], golden[depth - 1])
                                                      for k in KINDS}})
    return rows


FLOOR = 1e-17  # an exact 0 is drawn here (log axis)
STYLE = {"float64": "#2c7fb8", "float32": "#41ab5d", "bfloat16": "#d95f0e"}


def plot(rows: list, x: str, ys: list, cfg: dict, ylabels: list):
    from matplotlib.figure import Figure

    pats = cfg["patterns"]
    fig = Figure(figsize=(3.1 * len(pats), 2.6 * len(ys)), layout="constrained")
    axes = fig.subplots(len(ys), len(pats), squeeze=False, sharey="row")
    for r, (y, ylab) in enumerate(zip(ys, ylabels)):
        for c, pat in enumerate(pats):
            ax = axes[r, c]
            for name in cfg["dtypes"]:
                sel = [row for row in rows if row["pattern"] == pat and row["dtype"] == name]
                xs = [row[x] for row in sel]
                for kind, ls in (("graph", "-"), ("reference", ":"), ("dense", "--")):
                    key = f"{kind}{y}"
                    ax.plot(xs, [max(row[key], FLOOR) for row in sel], ls, marker="o", ms=3,
                            color=STYLE[name], label=f"{kind} {name}")
            ax.set_yscale("log")
            if x == "T":
                ax.set_xscale("log", base=2)
            ax.set_xticks(xs, [str(v) for v in xs], fontsize=7)
            ax.minorticks_off()
            ax.set_title(pat, fontsize=9)
            ax.set_xlabel(x)
            ax.grid(alpha=0.3)
        axes[r, 0].set_ylabel(ylab + f"\n(exact 0 drawn at {FLOOR:g})", fontsize=8)
    handles, labels = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncol=len(cfg["dtypes"]) * 3 // 2,
               fontsize=7)
    return fig


def train_and_evaluate(cfg: dict, workdir: Path) -> dict:
    torch.set_num_threads(2)
    t0 = time.time()
    fn_rows = [r for T in cfg["lengths"] for p in cfg["patterns"] for r in function_level(T, p, cfg)]
    model_rows = [r for p in cfg["patterns"] for r in model_level(p, cfg)]
    env = {"torch": torch.__version__, "python": platform.python_version(), "device": "cpu",
           "threads": torch.get_num_threads(), "seconds": round(time.time() - t0, 1)}
    result = {"config": cfg, "environment": env, "function_level": fn_rows,
              "model_level": model_rows}
    (workdir / "experiments/results").mkdir(parents=True, exist_ok=True)
    (workdir / "experiments/results/equivalence_report.json").write_text(json.dumps(result,
                                                                                    indent=1))
    figs = workdir / "docs/figures"
    figs.mkdir(parents=True, exist_ok=True)
    plot(fn_rows, "T", ["_out", "_grad"], cfg,
         ["max |output - golden|", "max |grad q,k,v - golden|"]).savefig(
        figs / "equivalence_length.png", dpi=80)
    plot(model_rows, "depth", [""], cfg, ["max |hidden - golden|"]).savefig(
        figs / "equivalence_depth.png", dpi=80)
    return result


def summary(result: dict) -> str:
    head = "".join(f"{k + ' ' + w:>15}" for w in ("out", "grad") for k in KINDS)
    lines = ["function level (largest T per pattern), max abs error vs the float64 golden:",
             f"{'pattern':<13}{'kernel':<10}{'dtype':<10}{'T':>5}{head}"]
    T = max(result["config"]["lengths"])
    for r in result["function_level"]:
        if r["T"] == T:
            lines.append(f"{r['pattern']:<13}{r['kernel']:<10}{r['dtype']:<10}{T:>5}" + "".join(
                f"{r[k + '_' + w]:>15.2e}" for w in ("out", "grad") for k in KINDS))
    lines.append(f"model level (T={result['config']['depth_T']}), depth 1 and "
                 f"{result['config']['depth']}:")
    for r in result["model_level"]:
        if r["depth"] in (1, result["config"]["depth"]):
            lines.append(f"{r['pattern']:<13}{r['kernel']:<10}{r['dtype']:<10}L={r['depth']:<3}"
                         + "  ".join(f"{k} {r[k]:.2e}" for k in KINDS))
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", default=str(ROOT), help="repository root (default: this one)")
    args = parser.parse_args()
    print(summary(train_and_evaluate(CONFIG, Path(args.workdir))))


if __name__ == "__main__":
    main()
