"""Do attention weights explain a model? Attention vs gradient x input and leave-one-out.

Notation: L layers, H heads, T tokens (queries i, keys j), alpha^{l,h}_{ij} the weight of edge
j -> i in layer l, head h; A_l = 0.5 mean_h alpha^{l,.} + 0.5 I (the residual stream as a self
edge); e_j the input (word) embedding of token j.

Attributions of input token j for an output at position i:
  * gradient x input: |<d f_i / d e_j, e_j>|;
  * leave-one-out (LOO): how much the output moves when token j is replaced ([MASK] / <unk>);
Attention-based scores of j for i:
  * raw attention alpha^{l,h}_{ij}, per layer and head, and its head mean;
  * rollout R_l = A_l ... A_1 (products of the layer matrices, Abnar & Zuidema 2020);
  * flow: max-flow from input node (0, j) to output node (L, i) in the layered graph whose edge
    (l-1, j) -> (l, i) has capacity A_l[i, j] (networkx ``maximum_flow_value``).
Agreement = Spearman rank correlation over the keys j != i of one query (rows with >= 3 keys),
averaged over rows; every mean comes with its number of rows n.

Models: all-MiniLM-L6-v2 (f_i = ||h_i^L||, LOO = ||h_i^L - h_i^L(without j)||) on a fixed list of
sentences; a trained translator (``--run DIR``: f_t = log p(y_t), LOO = drop of log p(y_t) when
source token s becomes <unk>; attention = decoder cross-attention), when a run directory is given.

Run: ``python experiments/explanation_study.py --run runs/ende_tiny`` (writes
experiments/results/explain_study.json, docs/figures/explain_minilm.png,
docs/figures/explain_trophy.png and, with --run, docs/figures/explain_translator.png).
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import networkx as nx
import torch
from scipy.stats import spearmanr

ROOT = Path(__file__).resolve().parents[1]
TROPHY = ["The trophy did not fit in the suitcase because it was too big.",
          "The trophy did not fit in the suitcase because it was too small."]
SENTENCES = TROPHY + [
    "The cat sat on the mat because it was warm.",
    "A quick brown fox jumps over the lazy dog near the river.",
    "She gave her brother the book that he had asked for.",
    "The city council refused the demonstrators a permit because they feared violence.",
    "Graphs let us see attention as messages passed between tokens.",
    "The old man the boats while the young sleep on the shore.",
    "After the storm the farmers repaired the fences and fed the animals.",
    "Paris is the capital of France and Berlin is the capital of Germany.",
    "The scientist who won the prize thanked her students in a short speech.",
    "If it rains tomorrow we will move the party into the large hall.",
]
CONFIG = {"sentences": SENTENCES, "translator_examples": 60, "seed": 0}


# ---------------------------------------------------------------------------------------------
# Graph-native aggregates


def rollout(maps: list) -> list:
    """``R_l = A_l R_{l-1}``, ``R_0 = I`` with ``A_l = 0.5 mean_h(alpha_l) + 0.5 I``; returns
    ``[R_1 .. R_L]`` (each ``[T, T]``, rows sum to 1). ``maps``: L tensors ``[H, T, T]``."""
    T = maps[0].size(-1)
    R, out = torch.eye(T, dtype=torch.float64), []
    for a in maps:
        A = 0.5 * a.double().mean(0) + 0.5 * torch.eye(T, dtype=torch.float64)
        R = A @ R
        out.append(R)
    return out


def attention_flow(maps: list, queries, keys) -> torch.Tensor:
    """Max-flow from input token j to output token i through the layered graph with
    capacities ``A_l[i, j]``: ``[len(queries), len(keys)]``."""
    T = maps[0].size(-1)
    G = nx.DiGraph()
    for layer, a in enumerate(maps, start=1):
        A = (0.5 * a.double().mean(0) + 0.5 * torch.eye(T, dtype=torch.float64)).tolist()
        for i in range(T):
            for j in range(T):
                if A[i][j] > 0:
                    G.add_edge((layer - 1, j), (layer, i), capacity=A[i][j])
    L = len(maps)
    return torch.tensor([[nx.maximum_flow_value(G, (0, j), (L, i)) for j in keys]
                         for i in queries], dtype=torch.float64)


def spearman_rows(score: torch.Tensor, ref: torch.Tensor, queries, keys,
                  exclude_self: bool = True):
    """Spearman rho between ``score[i, keys]`` and ``ref[i, keys]`` per query (keys != i unless
    ``exclude_self`` is False, e.g. for cross-attention where keys are other nodes)."""
    rhos = []
    for r, i in enumerate(queries):
        ks = [c for c, j in enumerate(keys) if j != i or not exclude_self]
        if len(ks) < 3:
            continue
        a, b = score[r, ks].tolist(), ref[r, ks].tolist()
        if len(set(a)) < 2 or len(set(b)) < 2:  # a constant row has no ranking
            continue
        rhos.append(float(spearmanr(a, b).statistic))
    return rhos


def _mean(xs):
    return {"mean": statistics.mean(xs) if xs else None,
            "std": statistics.stdev(xs) if len(xs) > 1 else None, "n": len(xs)}


# ---------------------------------------------------------------------------------------------
# MiniLM


def minilm_sentence(model, tok, sentence: str) -> dict:
    """Attention maps, rollout, flow, gradient x input and LOO of one sentence (content tokens)."""
    from gnn_attention.pretrained import bert as pretrained

    batch = pretrained.encode(tok, [sentence])
    ids = batch["input_ids"]
    T = ids.size(1)
    content = list(range(1, T - 1))  # [CLS] and [SEP] are left out as queries and as keys
    captured = {}

    def keep(_, __, out):  # the embeddings e_j, kept for d f / d e_j
        out.retain_grad()
        captured["e"] = out

    handle = model.word_embeddings.register_forward_hook(keep)
    try:
        hidden, _, attentions = model(ids, batch["attention_mask"], batch["token_type_ids"],
                                      return_attention=True)
    finally:
        handle.remove()
    maps = [m[0].detach() for m in pretrained.dense_attention_maps(
        [(ei, a.detach()) for ei, a in attentions], batch["attention_mask"])]   # L x [H, T, T]
    h, e = hidden[0], captured["e"]
    gxi = torch.zeros(len(content), len(content), dtype=torch.float64)
    for r, i in enumerate(content):
        e.grad = None
        h[i].norm().backward(retain_graph=True)
        gxi[r] = (e.grad[0, content] * e[0, content]).sum(-1).abs().double().detach()
    mask_id = tok.token_to_id("[MASK]")
    loo = torch.zeros_like(gxi)
    with torch.no_grad():
        base = h.detach()
        for c, j in enumerate(content):
            alt = ids.clone()
            alt[0, j] = mask_id
            h2 = model(alt, batch["attention_mask"], batch["token_type_ids"])[0]
            loo[:, c] = (base[content] - h2[content]).norm(dim=-1).double()
    idx = torch.tensor(content)
    return {"tokens": pretrained.tokens(tok, sentence), "content": content,
            "maps": [m[:, idx][:, :, idx] for m in maps],
            "rollout": [R[idx][:, idx] for R in rollout(maps)],
            "flow": attention_flow(maps, content, content), "gxi": gxi, "loo": loo}


def minilm_study(sentences) -> tuple:
    from gnn_attention.pretrained import bert as pretrained

    d = pretrained.minilm_directory()
    model, tok = pretrained.load_bert(d), pretrained.load_tokenizer(d)
    per = [minilm_sentence(model, tok, s) for s in sentences]
    L, H = len(per[0]["maps"]), per[0]["maps"][0].size(0)
    res = {"layers": L, "heads": H, "sentences": len(sentences)}
    for ref in ("gxi", "loo"):
        def rows(get, ref=ref):
            return [r for p in per for r in spearman_rows(get(p), p[ref], range(len(p["content"])),
                                                           range(len(p["content"])))]
        res[ref] = {
            "head": [[_mean(rows(lambda p, l=l, h=h: p["maps"][l][h])) for h in range(H)]
                     for l in range(L)],
            "head_mean": [_mean(rows(lambda p, l=l: p["maps"][l].mean(0))) for l in range(L)],
            "rollout": [_mean(rows(lambda p, l=l: p["rollout"][l])) for l in range(L)],
            "flow": _mean(rows(lambda p: p["flow"])),
            # A baseline that needs no model: nearer tokens matter more.
            "proximity": _mean(rows(lambda p: -(torch.arange(len(p["content"]))[:, None]
                                                 - torch.arange(len(p["content"]))).abs()
                                    .double())),
        }
    # Single-pair max-flow is capped by the unit in-capacity of the output node: count how often
    # it hits the cap (ties make flow a coarse ranking).
    flows = torch.cat([p["flow"].flatten() for p in per])
    res["flow_saturated_fraction"] = float((flows >= 0.999).double().mean())
    res["gxi_vs_loo"] = _mean([r for p in per for r in spearman_rows(
        p["gxi"], p["loo"], range(len(p["content"])), range(len(p["content"])))])
    return res, per[:2]  # the trophy pair comes first


def trophy_table(pair) -> list:
    """Where "it" goes: scores of the keys "trophy" and "suitcase" for the query "it"."""
    out = []
    for p in pair:
        toks = [p["tokens"][c] for c in p["content"]]
        i, a, b = toks.index("it"), toks.index("trophy"), toks.index("suitcase")
        row = {"sentence_end": toks[-2], "methods": {}}
        L = len(p["maps"])
        for name, m in ([(f"attention L{l + 1}", p["maps"][l].mean(0)) for l in range(L)]
                        + [(f"rollout L{L}", p["rollout"][-1]), ("flow", p["flow"]),
                           ("grad x input", p["gxi"]), ("leave-one-out", p["loo"])]):
            row["methods"][name] = {"trophy": float(m[i, a]), "suitcase": float(m[i, b])}
        out.append(row)
    return out


# ---------------------------------------------------------------------------------------------
# Trained translator (cross-attention of the decoder over the source)


def translator_study(run_dir: str, n_examples: int, seed: int) -> dict:
    """Cross-attention vs gradient x input and LOO on the source tokens, per decoder layer/head,
    for the log-probability of each greedily emitted output token (and <eos>)."""
    from gnn_attention.models.decoding import greedy_decode
    from gnn_attention.training.data.tasks import load_task
    from gnn_attention.training.loop import load_run

    cfg, model, src_tok, tgt_tok, state = load_run(run_dir)
    pairs = [p for p in load_task(cfg.task).split("test") if len(src_tok.encode(p[0])) >= 4]
    gen = torch.Generator().manual_seed(seed)
    pairs = [pairs[k] for k in torch.randperm(len(pairs), generator=gen)[:n_examples].tolist()]
    rows = {"gxi": {}, "loo": {}}
    correct = 0
    for src_text, ref in pairs:
        ids = src_tok.encode(src_text)
        src, n = torch.tensor([ids]), torch.tensor([len(ids)])
        with torch.no_grad():
            out = greedy_decode(model, src, n, tgt_tok.bos_id, tgt_tok.eos_id,
                                int(state.get("max_target_len", 64)) + 5)[0]
        correct += tgt_tok.decode(out) == ref
        tgt_in, target = torch.tensor([[tgt_tok.bos_id] + out]), torch.tensor(out + [tgt_tok.eos_id])
        tl = torch.tensor([tgt_in.size(1)])
        captured = {}

        def keep(_, __, o, store=captured):
            o.retain_grad()
            store["e"] = o

        handle = model.src_embed.register_forward_hook(keep)
        try:
            logits, cross = model(src, n, tgt_in, tl, return_cross_attention=True)
        finally:
            handle.remove()
        logp = logits[0].log_softmax(-1).gather(1, target[:, None])[:, 0]   # [T]
        e, T, S = captured["e"], target.numel(), len(ids)
        gxi = torch.zeros(T, S, dtype=torch.float64)
        for t in range(T):
            e.grad = None
            logp[t].backward(retain_graph=True)
            gxi[t] = (e.grad[0] * e[0]).sum(-1).abs().double().detach()
        loo = torch.zeros_like(gxi)
        with torch.no_grad():
            for s in range(S):
                alt = src.clone()
                alt[0, s] = src_tok.unk_id
                lp2 = model(alt, n, tgt_in, tl)[0].log_softmax(-1).gather(1, target[:, None])[:, 0]
                loo[:, s] = (logp.detach() - lp2).double()
        maps = [c[0].detach() for c in cross]   # L x [H, T, S]
        for ref_name, ref_m in (("gxi", gxi), ("loo", loo)):
            for l, m in enumerate(maps):
                for h in list(range(m.size(0))) + ["mean"]:
                    a = m.mean(0) if h == "mean" else m[h]
                    rows[ref_name].setdefault((l, h), []).extend(
                        spearman_rows(a, ref_m, range(T), range(S), exclude_self=False))
    L, H = len(maps), maps[0].size(0)
    res = {"run": Path(run_dir).name, "task": cfg.task, "examples": len(pairs),
           "greedy_exact_match": correct / max(len(pairs), 1), "layers": L, "heads": H}
    for ref_name in ("gxi", "loo"):
        res[ref_name] = {"head": [[_mean(rows[ref_name][(l, h)]) for h in range(H)]
                                  for l in range(L)],
                         "head_mean": [_mean(rows[ref_name][(l, "mean")]) for l in range(L)]}
    return res


# ---------------------------------------------------------------------------------------------
# Figures


def _grid(ax, res_ref: dict, title: str):
    M = [[c["mean"] if c["mean"] is not None else float("nan") for c in row]
         for row in res_ref["head"]]
    im = ax.imshow(M, cmap="RdBu_r", vmin=-1, vmax=1, aspect="auto")
    for l, row in enumerate(M):
        for h, v in enumerate(row):
            ax.text(h, l, f"{v:.2f}".replace("0.", "."), ha="center", va="center", fontsize=5.5)
    ax.set_xticks(range(len(M[0])), [str(h) for h in range(len(M[0]))], fontsize=7)
    ax.set_yticks(range(len(M)), [str(l + 1) for l in range(len(M))], fontsize=7)
    ax.set_xlabel("head")
    ax.set_ylabel("layer")
    ax.set_title(title, fontsize=8)
    return im


def figure_rho(res: dict, name: str, extra: bool):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(13 if extra else 8, 3.4), layout="constrained")
    axes = fig.subplots(1, 3 if extra else 2, width_ratios=[1, 1, 0.9] if extra else [1, 1])
    for ax, ref, lab in ((axes[0], "gxi", "gradient x input"), (axes[1], "loo", "leave-one-out")):
        n = res[ref]["head"][0][0]["n"]
        im = _grid(ax, res[ref], f"{name}: attention vs {lab}\n(mean Spearman rho over n={n} "
                                 f"query rows)")
    fig.colorbar(im, ax=list(axes[:2]), label="mean Spearman rho")
    if extra:
        ax = axes[2]
        layers = range(1, res["layers"] + 1)
        for ref, ls in (("gxi", "-"), ("loo", "--")):
            ax.plot(layers, [c["mean"] for c in res[ref]["head_mean"]], ls, marker="o", ms=3,
                    color="C0", label=f"attention (head mean) vs {ref}")
            ax.plot(layers, [c["mean"] for c in res[ref]["rollout"]], ls, marker="s", ms=3,
                    color="C1", label=f"rollout vs {ref}")
            ax.axhline(res[ref]["flow"]["mean"], ls=ls, color="C2", label=f"flow vs {ref}")
            ax.axhline(res[ref]["proximity"]["mean"], ls=ls, color="0.5",
                       label=f"proximity -|i-j| vs {ref}")
        ax.axhline(res["gxi_vs_loo"]["mean"], color="k", lw=0.8, label="gxi vs loo")
        ax.set_xlabel("layer")
        ax.set_ylabel("mean Spearman rho")
        ax.set_ylim(-0.2, 1)
        ax.legend(fontsize=5.5, loc="upper left", ncol=2)
        ax.set_title("aggregates across layers", fontsize=8)
        ax.grid(alpha=0.3)
    return fig


def figure_trophy(table: list):
    from matplotlib.figure import Figure

    methods = list(table[0]["methods"])
    fig = Figure(figsize=(7.5, 3), layout="constrained")
    ax = fig.add_subplot()
    for k, (row, colour) in enumerate(zip(table, ("C3", "C0"))):
        share = [m["trophy"] / (m["trophy"] + m["suitcase"]) if m["trophy"] + m["suitcase"] > 0
                 else float("nan") for m in (row["methods"][x] for x in methods)]
        ax.bar([i + 0.38 * k for i in range(len(methods))], share, width=0.38, color=colour,
               label=f'"... too {row["sentence_end"]}."')
    ax.axhline(0.5, color="k", lw=0.8)
    ax.set_xticks([i + 0.19 for i in range(len(methods))], methods, rotation=35, ha="right",
                  fontsize=7)
    ax.set_ylabel('"it": share on "trophy"\n(trophy / (trophy + suitcase))', fontsize=8)
    ax.set_ylim(0, 1)
    ax.set_title('Where "it" goes: above 0.5 = more on "trophy" (correct for "big"), below = '
                 'more on "suitcase" (correct for "small")', fontsize=8)
    ax.legend(fontsize=7)
    return fig


def _jsonable(x):
    if isinstance(x, torch.Tensor):
        return x.tolist()
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    return x


def train_and_evaluate(cfg: dict, workdir: Path, run_dir=None) -> dict:
    torch.manual_seed(cfg["seed"])
    t0 = time.time()
    minilm, pair = minilm_study(cfg["sentences"])
    result = {"minilm": minilm, "trophy": trophy_table(pair), "config": cfg}
    figs = workdir / "docs/figures"
    figs.mkdir(parents=True, exist_ok=True)
    figure_rho(minilm, "all-MiniLM-L6-v2", True).savefig(figs / "explain_minilm.png", dpi=90)
    figure_trophy(result["trophy"]).savefig(figs / "explain_trophy.png", dpi=90)
    if run_dir:
        result["translator"] = translator_study(run_dir, cfg["translator_examples"], cfg["seed"])
        figure_rho(result["translator"], "translator", False).savefig(
            figs / "explain_translator.png", dpi=90)
    result["seconds"] = round(time.time() - t0, 1)
    (workdir / "experiments/results").mkdir(parents=True, exist_ok=True)
    (workdir / "experiments/results/explain_study.json").write_text(
        json.dumps(_jsonable(result), indent=1))
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", metavar="DIR", help="a trained translation run directory")
    parser.add_argument("--workdir", default=str(ROOT), help="repository root (default: this one)")
    args = parser.parse_args()
    res = train_and_evaluate(CONFIG, Path(args.workdir), args.run)
    print(json.dumps(_jsonable({k: v for k, v in res.items() if k != "config"}), indent=1))


if __name__ == "__main__":
    main()
