"""Which explanation finds the true source? Attention vs interventions on the trained reverse/copy
models, where the source of every output character is known exactly.

Notation: a source string of S characters s = 0..S-1, the target y_0..y_{S-1} (then EOS), decoder
step t predicts y_t; for ``reverse`` its true source is s* = S-1-t, for ``copy`` s* = t. f_t =
log p(y_t | teacher-forced prefix). Cross edge s -> t is the edge from source node s to target t
in every decoder layer l and head h; alpha^{l,h}_{ts} its weight.

Scores of source s for output t (higher = "more the source"):
  * attention alpha^{l,h}_{ts} per decoder layer and head, their mean per layer and overall;
  * rollout: R_enc = prod_l (A_l + I)/2 over encoder layers (A_l = head mean); a decoder
    relevance R [T, S] starts at 0 and per decoder layer becomes R <- (A_self R + R)/2, then
    R <- (R + A_cross R_enc)/2 (residual stream as a self edge, as Abnar & Zuidema);
  * gradient x input: |<d f_t / d e_s, e_s>|, e_s = the encoder's input node features;
  * token ablation: f_t - f_t(source token s replaced by a letter absent from the source);
  * edge knockout: f_t - f_t(edge s -> t removed from the graph in every decoder layer and head,
    the softmax renormalising over the other sources);
  * edge patching: f_t - f_t(messages on edge s -> t, all layers and heads, taken from the run
    whose source token s was replaced; every other edge keeps its clean message).
Each (single edge, single t) intervention runs in its own copy of the sentence inside one batch
(a disjoint union), so no edit reaches another copy and t never sees the edit of another step.

Metrics over rows (one row = one output step t of one test sentence): top-1 = the argmax over s
is s* (ties share the credit), AUC = P(score(s*) > score(s)) over the other sources s (ties
count 1/2). Chance: top-1 = mean 1/S, AUC = 0.5. "unique" rows: the character y_t occurs once in
the source, so no other position carries the same symbol.

Run: ``python experiments/interventions_reverse.py`` (trains runs/interventions_{reverse,copy}
with the tiny preset if missing, about a minute each; writes
experiments/results/interventions_reverse.json and docs/figures/interventions_reverse.png).
"""
from __future__ import annotations

import argparse
import json
import os
import random
import time
from pathlib import Path

import torch

from gnn_attention.interpret import SiteEdit, execute, prepare, sites
from gnn_attention.training.data import BOS, load_task
from gnn_attention.training.loop import TrainConfig, load_run, train

ROOT = Path(__file__).resolve().parents[1]
CONFIG = {"tasks": ["reverse", "copy"], "examples": 60, "min_len": 4, "seed": 0, "preset": "tiny"}


def get_model(task: str, workdir: Path, preset: str):
    run_dir = workdir / f"interventions_{task}"
    if not (run_dir / "checkpoint.pt").exists():
        train(TrainConfig.resolve(task, preset), run_dir, progress=False, log=lambda *_: None)
    _, model, src_tok, tgt_tok, _ = load_run(run_dir)
    return model.double(), src_tok, tgt_tok, json.loads((run_dir / "results.json").read_text())


def batch(src_ids, tgt_ids, copies: int, replace=None):
    """``copies`` copies of one pair (teacher forcing: tgt_in = BOS + y); ``replace[c] = (s, tok)``
    puts token ``tok`` at source position s of copy c."""
    src = torch.tensor([src_ids] * copies)
    for c, (s, tok) in enumerate(replace or []):
        src[c, s] = tok
    tgt = torch.tensor([[BOS] + tgt_ids] * copies)
    return (src, torch.full((copies,), len(src_ids)), tgt, torch.full((copies,), len(tgt_ids) + 1))


def logp(output, tgt_ids, steps):
    """f_t for copy c at step ``steps[c]``: log p(y_t) at decoder position t. -> ``[copies]``."""
    lp = output.log_softmax(-1)
    y = torch.tensor(tgt_ids)[steps]
    return lp[torch.arange(len(steps)), steps, y]


def cross_edge_mask(graph, S: int, T: int, pairs):
    """bool [E, 1]: in copy c, the single cross edge (s, t) = pairs[c]."""
    ei = graph.edge_index
    c = ei[1] // T
    s_of, t_of = (torch.tensor([p[i] for p in pairs]) for i in (0, 1))
    return ((ei[0] - c * S == s_of[c]) & (ei[1] - c * T == t_of[c])).unsqueeze(1)


def attention_scores(model, src_ids, tgt_ids):
    """Raw attention per (layer, head), rollout, gradient x input on one clean copy."""
    S, T = len(src_ids), len(tgt_ids) + 1
    plan = prepare(model, *batch(src_ids, tgt_ids, 1))
    x = plan.inputs["encoder"].detach().requires_grad_(True)
    plan = type(plan)(**{**plan.__dict__, "inputs": {**plan.inputs, "encoder": x}})
    res = execute(plan, record=True)
    scores = {}
    dense = {}
    for (stack, layer, kind), rec in res.records.items():
        rows, cols = rec.edge_index[1], rec.edge_index[0]
        n_dst, n_src = (T, S) if kind == "cross" else ((S, S) if stack == "encoder" else (T, T))
        a = torch.zeros(rec.alpha.size(1), n_dst, n_src, dtype=rec.alpha.dtype)
        a[:, rows, cols] = rec.alpha.detach().T
        dense[(stack, layer, kind)] = a
        if kind == "cross":
            for h in range(a.size(0)):
                scores[f"attention L{layer} H{h}"] = a[h, :S]
            scores[f"attention L{layer} mean"] = a.mean(0)[:S]
    n_dec = sum(1 for k in dense if k[2] == "cross")
    scores["attention mean"] = torch.stack([dense[("decoder", i, "cross")].mean(0)[:S]
                                            for i in range(n_dec)]).mean(0)
    scores["rollout"] = rollout(dense, S, T)[:S]
    grads = []
    lp = res.output.log_softmax(-1)[0]
    for t in range(S):
        g, = torch.autograd.grad(lp[t, tgt_ids[t]], x, retain_graph=True)
        grads.append((g * x).sum(-1).abs().detach())
    scores["gradient x input"] = torch.stack(grads)
    return scores


def rollout(dense, S: int, T: int):
    eye = lambda n: torch.eye(n, dtype=torch.float64)  # noqa: E731
    r_enc = eye(S)
    layers = sorted(k[1] for k in dense if k[0] == "encoder")
    for i in layers:
        r_enc = 0.5 * (dense[("encoder", i, "self")].mean(0) + eye(S)) @ r_enc
    r = torch.zeros(T, S, dtype=torch.float64)
    for i in sorted(k[1] for k in dense if k[2] == "cross"):
        r = 0.5 * (dense[("decoder", i, "self")].mean(0) @ r + r)
        r = 0.5 * (r + dense[("decoder", i, "cross")].mean(0) @ r_enc)
    return r


def intervention_scores(model, src_ids, tgt_ids, corrupt_tok):
    """Token ablation, edge knockout and edge patching effects ``[S (steps t), S (sources s)]``."""
    S, T = len(src_ids), len(tgt_ids) + 1
    pairs = [(s, t) for t in range(S) for s in range(S)]
    steps = torch.tensor([t for _, t in pairs])
    with torch.no_grad():
        clean = logp(execute(prepare(model, *batch(src_ids, tgt_ids, len(pairs)))).output,
                     tgt_ids, steps)
        corr_plan = prepare(model, *batch(src_ids, tgt_ids, S, [(s, corrupt_tok) for s in
                                                                 range(S)]))
        corr = execute(corr_plan, record=True)
        plan = prepare(model, *batch(src_ids, tgt_ids, len(pairs)))
        cross = [k for k in sites(plan) if k[2] == "cross"]
        g = plan.graphs["cross"]
        one = cross_edge_mask(g, S, T, pairs)
        knocked = logp(execute(plan, {k: SiteEdit(remove=one) for k in cross}).output, tgt_ids,
                       steps)
        # Message of edge (s -> t) in copy (s, t) = the message of s -> t in corrupted copy s.
        cg = corr_plan.graphs["cross"]
        k_of = cg.edge_index[1] // T
        lookup = torch.empty(S, T, S, dtype=torch.long)
        lookup[k_of, cg.edge_index[1] - k_of * T, cg.edge_index[0] - k_of * S] = \
            torch.arange(cg.num_edges)
        c = g.edge_index[1] // T
        s_loc, t_loc = g.edge_index[0] - c * S, g.edge_index[1] - c * T
        src_edge = lookup[s_loc, t_loc, s_loc]
        patch = {k: SiteEdit(patch=one.expand(-1, corr.records[k].messages.size(1)),
                             messages=corr.records[k].messages[src_edge]) for k in cross}
        patched = logp(execute(plan, patch).output, tgt_ids, steps)
        lp = corr.output.log_softmax(-1)  # copy s: source token s replaced
        ablate = lp[steps.new_tensor([s for s, _ in pairs]), steps, torch.tensor(tgt_ids)[steps]]
    view = lambda v: v.view(S, S)  # noqa: E731  rows t, columns s
    return {"token ablation": view(clean - ablate), "edge knockout": view(clean - knocked),
            "edge patching": view(clean - patched)}


def metrics(rows):
    """rows: list of (scores [S], true s) -> top-1 and AUC with n."""
    top1 = auc = 0.0
    for score, true in rows:
        best = score.max()
        ties = (score == best).sum().item()
        top1 += (1.0 / ties) if score[true] == best else 0.0
        others = torch.cat([score[:true], score[true + 1:]])
        auc += ((score[true] > others).double().mean() + 0.5 * (score[true] == others).double()
                .mean()).item()
    n = len(rows)
    return {"top1": top1 / n, "auc": auc / n, "n": n}


def study_task(task: str, cfg: dict, workdir: Path) -> dict:
    model, src_tok, tgt_tok, results = get_model(task, workdir, cfg["preset"])
    pairs = [p for p in load_task(task).test if len(p[0]) >= cfg["min_len"]]
    pairs = random.Random(cfg["seed"]).sample(pairs, cfg["examples"])
    letters = [i for i, tok in enumerate(src_tok.vocab) if len(tok) == 1]
    per_method, unique_rows, chance = {}, {}, []
    for src, tgt in pairs:
        s_ids, t_ids = src_tok.encode(src), tgt_tok.encode(tgt)
        S = len(s_ids)
        absent = [i for i in letters if i not in s_ids]
        corrupt = absent[0] if absent else letters[(letters.index(s_ids[0]) + 1) % len(letters)]
        scores = {**attention_scores(model, s_ids, t_ids),
                  **intervention_scores(model, s_ids, t_ids, corrupt)}
        for t in range(S):
            true = S - 1 - t if task == "reverse" else t
            unique = tgt[t] in src and src.count(tgt[t]) == 1
            chance.append(1.0 / S)
            for name, sc in scores.items():
                row = (sc[t].double(), true)
                per_method.setdefault(name, []).append(row)
                if unique:
                    unique_rows.setdefault(name, []).append(row)
    return {"model": {"run": f"runs/interventions_{task}", "test_exact_match":
                      results["test_exact_match"], "test_examples": results["test_examples"]},
            "sentences": len(pairs), "chance_top1": sum(chance) / len(chance),
            "all_rows": {k: metrics(v) for k, v in per_method.items()},
            "unique_rows": {k: metrics(v) for k, v in unique_rows.items()}}


def figure(out: dict, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = list(out["tasks"])
    names = [k for k in out["tasks"][tasks[0]]["all_rows"] if " H" not in k]
    fig, axes = plt.subplots(1, 2, figsize=(11, 0.32 * len(names) + 1.5), sharey=True)
    for ax, metric in zip(axes, ("top1", "auc")):
        for j, task in enumerate(tasks):
            vals = [out["tasks"][task]["all_rows"][n][metric] for n in names]
            ax.barh([i + 0.4 * j for i in range(len(names))], vals, height=0.4, label=task)
        ax.set_yticks([i + 0.2 for i in range(len(names))], names)
        ax.set_xlim(0, 1)
        ax.set_xlabel(f"{metric} of the true source (all rows)")
        ax.axvline(0.5 if metric == "auc" else out["tasks"][tasks[0]]["chance_top1"], color="k",
                   lw=0.8, ls="--")
    axes[0].invert_yaxis()
    axes[1].legend(loc="lower left")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def train_and_evaluate(cfg: dict, workdir: Path) -> dict:
    start = time.time()
    out = {"config": cfg, "torch": torch.__version__, "threads": torch.get_num_threads(),
           "tasks": {task: study_task(task, cfg, workdir) for task in cfg["tasks"]}}
    out["seconds"] = round(time.time() - start, 1)
    out["load_average"] = [round(x, 2) for x in os.getloadavg()]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", default=str(ROOT / "runs"))
    parser.add_argument("--examples", type=int, default=CONFIG["examples"])
    args = parser.parse_args()
    cfg = {**CONFIG, "examples": args.examples}
    out = train_and_evaluate(cfg, Path(args.workdir))
    (ROOT / "experiments/results/interventions_reverse.json").write_text(json.dumps(out, indent=1))
    figure(out, ROOT / "docs/figures/interventions_reverse.png")
    print(json.dumps({t: {k: v for k, v in r["all_rows"].items() if " H" not in k}
                      for t, r in out["tasks"].items()}, indent=1))


if __name__ == "__main__":
    main()
