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

The method code is shared with the translator study (experiments/interventions_common.py).

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
from interventions_common import attention_scores, get_model, intervention_scores, metrics

from gnn_attention.training.data import load_task

ROOT = Path(__file__).resolve().parents[1]
CONFIG = {"tasks": ["reverse", "copy"], "examples": 60, "min_len": 4, "seed": 0, "preset": "tiny"}


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
