"""Which explanation finds the true source on the number translator (digits -> English words),
where the word alignment is known by construction?

The alignment (``alignment``): num2words reads a number of L <= 4 digits d_0 .. d_{L-1} (left
to right, no leading zero) in groups: [word(d_0) "thousand"] if L = 4, [word(d_{L-3})
"hundred"] if L >= 3 and d_{L-3} != 0, then the tail word of the last two digits r = 10 d_{L-2}
+ d_{L-1} (english_words(r), one word token such as "forty-two"; none when r = 0). So every
output word has a source set by construction:

  * digit words, word(d_0) before "thousand" and word(d_{L-3}) before "hundred": the one digit
    they name; nothing else can change them (s* = {0} or {L-3});
  * scale words, "thousand" / "hundred": the digit of their group (same s*); they do not name
    its value (any non-zero digit gives the same word), so value-changing interventions miss them;
  * tail words: both last digits {L-2, L-1} (even "seven" in 2307 needs d_{L-2} = 0, and
    "forty" in 2340 needs d_{L-1} = 0), scored as a two-element source set.
Only digit and scale words have one unambiguous source; tail words are reported apart. "Unique"
digit rows: the named digit value occurs once in the number. EOS is not scored.

Methods, metrics and the batching are those of experiments/interventions_common.py (attention
per decoder layer and head and their means, rollout, flow, gradient x input, token ablation,
edge knockout, edge patching; top-1 and AUC with n); the replacement token of ablation and
patching is the smallest non-zero digit absent from the number (so a non-zero digit stays
non-zero and its group keeps its words).

Run: ``python experiments/interventions_translator.py`` (trains runs/interventions_digits-en
with the tiny preset if missing, ~1 minute; writes experiments/results/interventions_translator.json
and docs/figures/interventions_translator.png). ``--quick`` runs a 40-step model on 6 numbers in
a temporary folder and writes nothing (seconds; what the tests run).
"""
from __future__ import annotations

import argparse
import json
import os
import random
import tempfile
import time
from pathlib import Path

import torch
from interventions_common import attention_scores, get_model, intervention_scores, metrics

from gnn_attention.training.data import load_task
from gnn_attention.training.data.tasks import english_words

ROOT = Path(__file__).resolve().parents[1]
CONFIG = {"task": "digits-en", "examples": 150, "min_digits": 3, "seed": 0, "preset": "tiny",
          "train": {}}
QUICK = {**CONFIG, "examples": 6, "train": {"steps": 40, "warmup": 10, "val_examples": 8,
                                            "test_examples": 8, "eval_every": 40,
                                            "checkpoint_every": 40}}
CATEGORIES = ("digit", "digit (unique)", "scale", "tail")


def alignment(digits: str):
    """``[(word, category, true sources)]`` for the English words of ``digits`` (see the
    module docstring); the words joined by spaces are ``english_words(int(digits))``."""
    if not digits.isdigit() or len(digits) > 4 or (len(digits) > 1 and digits[0] == "0"):
        raise ValueError(f"expected a number 0..9999 without leading zeros, got {digits!r}")
    L, d = len(digits), [int(c) for c in digits]
    out = []
    if L == 4:
        out += [(english_words(d[0]), "digit", (0,)), ("thousand", "scale", (0,))]
    if L >= 3 and d[L - 3] != 0:
        out += [(english_words(d[L - 3]), "digit", (L - 3,)), ("hundred", "scale", (L - 3,))]
    r = int(digits[-2:])
    if r != 0 or int(digits) == 0:
        out.append((english_words(r), "tail", tuple(range(max(L - 2, 0), L))))
    return out


def corrupt_token(digits: str, src_tok) -> int:
    """The smallest non-zero digit that does not occur in ``digits``."""
    return src_tok.encode(next(c for c in "123456789" if c not in digits))[0]


def study(cfg: dict, workdir: Path) -> dict:
    model, src_tok, tgt_tok, results = get_model(cfg["task"], workdir, cfg["preset"],
                                                 **cfg["train"])
    pairs = [p for p in load_task(cfg["task"]).test if len(p[0]) >= cfg["min_digits"]]
    pairs = random.Random(cfg["seed"]).sample(pairs, min(cfg["examples"], len(pairs)))
    rows = {c: {} for c in CATEGORIES}
    chance = {c: [] for c in CATEGORIES}
    for src, tgt in pairs:
        words = alignment(src)
        assert " ".join(w for w, _, _ in words) == tgt, (src, tgt)  # the construction holds
        s_ids, t_ids = src_tok.encode(src), tgt_tok.encode(tgt)
        scores = {**attention_scores(model, s_ids, t_ids, flow=True),
                  **intervention_scores(model, s_ids, t_ids, corrupt_token(src, src_tok))}
        for t, (word, cat, true) in enumerate(words):
            cats = [cat]
            if cat == "digit" and src.count(src[true[0]]) == 1:
                cats.append("digit (unique)")
            for c in cats:
                chance[c].append(len(true) / len(src))
                for name, sc in scores.items():
                    rows[c].setdefault(name, []).append((sc[t].double(), true))
    return {"model": {"run": f"runs/interventions_{cfg['task']}",
                      "test_exact_match": results.get("test_exact_match"),
                      "test_examples": results.get("test_examples")},
            "numbers": len(pairs),
            "chance_top1": {c: sum(v) / len(v) for c, v in chance.items() if v},
            "rows": {c: {k: metrics(v) for k, v in r.items()} for c, r in rows.items() if r}}


def figure(out: dict, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cats = [c for c in ("digit", "scale", "tail") if c in out["rows"]]
    names = [k for k in out["rows"][cats[0]] if " H" not in k]
    fig, axes = plt.subplots(1, 2, figsize=(11, 0.36 * len(names) + 1.6), sharey=True)
    for ax, metric in zip(axes, ("top1", "auc")):
        for j, cat in enumerate(cats):
            vals = [out["rows"][cat][n][metric] for n in names]
            n_rows = out["rows"][cat][names[0]]["n"]
            ax.barh([i + 0.27 * j for i in range(len(names))], vals, height=0.27,
                    label=f"{cat} words (n={n_rows})")
        ax.set_yticks([i + 0.27 for i in range(len(names))], names)
        ax.set_xlim(0, 1)
        ax.set_xlabel(f"{metric} of the true source")
        if metric == "auc":
            ax.axvline(0.5, color="k", lw=0.8, ls="--")
    axes[0].invert_yaxis()
    fig.legend(*axes[0].get_legend_handles_labels(), loc="lower center", ncol=3, fontsize=8)
    fig.suptitle("digits -> English words: which method points at the digit a word comes from",
                 fontsize=10)
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    fig.savefig(path, dpi=120)
    plt.close(fig)


def train_and_evaluate(cfg: dict, workdir: Path) -> dict:
    start = time.time()
    out = {"config": cfg, "torch": torch.__version__, "threads": torch.get_num_threads(),
           **study(cfg, workdir)}
    out["seconds"] = round(time.time() - start, 1)
    out["load_average"] = [round(x, 2) for x in os.getloadavg()]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", default=str(ROOT / "runs"))
    parser.add_argument("--examples", type=int, default=CONFIG["examples"])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--quick", action="store_true", help="a 40-step model, 6 numbers, "
                                                             "nothing written")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.quick:
        with tempfile.TemporaryDirectory() as tmp:
            out = train_and_evaluate(QUICK, Path(tmp))
    else:
        out = train_and_evaluate({**CONFIG, "examples": args.examples}, Path(args.workdir))
        (ROOT / "experiments/results/interventions_translator.json").write_text(
            json.dumps(out, indent=1))
        figure(out, ROOT / "docs/figures/interventions_translator.png")
    print(json.dumps({c: {k: v for k, v in r.items() if " H" not in k}
                      for c, r in out["rows"].items()}, indent=1))


if __name__ == "__main__":
    main()
