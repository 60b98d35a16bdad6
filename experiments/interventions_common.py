"""Shared method code of the ground-truth explanation studies on trained seq2seq runs
(interventions_reverse.py, interventions_translator.py): teacher-forced batches, the attention
scores (raw per layer and head, rollout, flow, gradient x input), the batched interventions
(token ablation, edge knockout, edge patching) and the top-1 / AUC metrics.

Notation: a source of S tokens s = 0..S-1, the target y_0..y_{n-1} (then EOS), decoder step t
predicts y_t (T = n + 1 decoder positions with BOS first); f_t = log p(y_t | teacher-forced
prefix). Cross edge s -> t: the edge from source node s to target t in every decoder layer l and
head h; alpha^{l,h}_{ts} its weight. Every score is a matrix [n (steps t), S (sources s)]; higher
= "more the source".

  * attention alpha^{l,h}_{ts} per decoder layer and head, their mean per layer and overall;
  * rollout: R_enc = prod_l (A_l + I)/2 over encoder layers (A_l = head mean); a decoder
    relevance R [T, S] starts at 0 and per decoder layer becomes R <- (A_self R + R)/2, then
    R <- (R + A_cross R_enc)/2 (the residual stream as a self edge, as Abnar & Zuidema);
  * flow: max-flow from encoder input node s to decoder output node t in the layered graph whose
    capacities are exactly the coefficients of that rollout (networkx ``maximum_flow_value``);
  * gradient x input: |<d f_t / d e_s, e_s>|, e_s = the encoder's input node features;
  * token ablation: f_t - f_t(source token s replaced by ``corrupt[s]``);
  * edge knockout: f_t - f_t(edge s -> t removed from the graph in every decoder layer and head,
    the softmax renormalising over the other sources);
  * edge patching: f_t - f_t(messages on edge s -> t, all layers and heads, taken from the run
    whose source token s was replaced; every other edge keeps its clean message).
Each (single edge, single t) intervention runs in its own copy of the sentence inside one batch
(a disjoint union), so no edit reaches another copy and t never sees the edit of another step.

Metrics over rows (one row = one output step t with its true source set s*): top-1 = the
argmax over s is in s* (ties share the credit), AUC = P(score(a) > score(b)) for a in s*, b not
in s* (ties count 1/2). Chance: top-1 = |s*| / S, AUC = 0.5.
"""
from __future__ import annotations

import json
from pathlib import Path

import networkx as nx
import torch

from gnn_attention.interpret import SiteEdit, execute, prepare, sites
from gnn_attention.training.data import BOS
from gnn_attention.training.loop import TrainConfig, load_run, train


def get_model(task: str, workdir: Path, preset: str, **overrides):
    """The run ``workdir/interventions_<task>`` (trained with ``preset`` if missing), in float64:
    ``(model, src_tok, tgt_tok, results.json)``."""
    run_dir = workdir / f"interventions_{task}"
    if not (run_dir / "checkpoint.pt").exists():
        train(TrainConfig.resolve(task, preset, **overrides), run_dir, progress=False,
              log=lambda *_: None)
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


def attention_scores(model, src_ids, tgt_ids, flow: bool = False):
    """Raw attention per (layer, head), rollout, gradient x input (and, with ``flow``, attention
    flow) on one clean copy: name -> ``[n, S]``."""
    S, T, n = len(src_ids), len(tgt_ids) + 1, len(tgt_ids)
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
                scores[f"attention L{layer} H{h}"] = a[h, :n]
            scores[f"attention L{layer} mean"] = a.mean(0)[:n]
    n_dec = sum(1 for k in dense if k[2] == "cross")
    scores["attention mean"] = torch.stack([dense[("decoder", i, "cross")].mean(0)[:n]
                                            for i in range(n_dec)]).mean(0)
    scores["rollout"] = rollout(dense, S, T)[:n]
    if flow:
        scores["flow"] = attention_flow(dense, S, T)[:n]
    grads = []
    lp = res.output.log_softmax(-1)[0]
    for t in range(n):
        g, = torch.autograd.grad(lp[t, tgt_ids[t]], x, retain_graph=True)
        grads.append((g * x).sum(-1).abs().detach())
    scores["gradient x input"] = torch.stack(grads)
    return scores


def _mixes(dense, S: int, T: int):
    """The rollout's per-layer coefficient matrices, in order: encoder ``(A + I)/2`` [S, S];
    per decoder layer the self mix ``(A_self + I)/2`` [T, T] and the cross weights
    ``A_cross / 2`` [T, S] (the other half of the cross step keeps R)."""
    eye = lambda n: torch.eye(n, dtype=torch.float64)
    enc = [0.5 * (dense[("encoder", i, "self")].mean(0).double() + eye(S))
           for i in sorted(k[1] for k in dense if k[0] == "encoder")]
    dec = [(0.5 * (dense[("decoder", i, "self")].mean(0).double() + eye(T)),
            0.5 * dense[("decoder", i, "cross")].mean(0).double())
           for i in sorted(k[1] for k in dense if k[2] == "cross")]
    return enc, dec


def rollout(dense, S: int, T: int):
    """Rollout relevance ``[T, S]`` (see the module docstring)."""
    eye = lambda n: torch.eye(n, dtype=torch.float64)
    r_enc = eye(S)
    layers = sorted(k[1] for k in dense if k[0] == "encoder")
    for i in layers:
        r_enc = 0.5 * (dense[("encoder", i, "self")].mean(0) + eye(S)) @ r_enc
    r = torch.zeros(T, S, dtype=torch.float64)
    for i in sorted(k[1] for k in dense if k[2] == "cross"):
        r = 0.5 * (dense[("decoder", i, "self")].mean(0) @ r + r)
        r = 0.5 * (r + dense[("decoder", i, "cross")].mean(0) @ r_enc)
    return r


def attention_flow(dense, S: int, T: int):
    """Max-flow ``[T, S]`` from encoder input node s to decoder output node t through the
    layered graph of the rollout's coefficients: encoder layer edges (l-1, j) -> (l, i) with
    capacity ((A + I)/2)[i, j]; per decoder layer a self step with ((A_self + I)/2)[t, t'] from
    the previous decoder layer, then a cross step into t from its own state (capacity 1/2) and
    from each encoder output node s (capacity A_cross[t, s] / 2)."""
    enc, dec = _mixes(dense, S, T)
    G = nx.DiGraph()
    for layer, a in enumerate(enc, start=1):
        for i in range(S):
            for j in range(S):
                if a[i, j] > 0:
                    G.add_edge(("e", layer - 1, j), ("e", layer, i), capacity=float(a[i, j]))
    top = ("e", len(enc))
    for layer, (a_self, a_cross) in enumerate(dec):
        for t in range(T):
            if layer > 0:  # the decoder's inputs carry no source flow: nothing into layer 0's self
                for u in range(T):
                    if a_self[t, u] > 0:
                        G.add_edge(("d", layer - 1, "x", u), ("d", layer, "s", t),
                                   capacity=float(a_self[t, u]))
                G.add_edge(("d", layer, "s", t), ("d", layer, "x", t), capacity=0.5)
            for s in range(S):
                if a_cross[t, s] > 0:
                    G.add_edge((*top, s), ("d", layer, "x", t), capacity=float(a_cross[t, s]))
    last = len(dec) - 1
    return torch.tensor([[nx.maximum_flow_value(G, ("e", 0, s), ("d", last, "x", t))
                          if G.has_node(("e", 0, s)) and G.has_node(("d", last, "x", t)) else 0.0
                          for s in range(S)] for t in range(T)], dtype=torch.float64)


def intervention_scores(model, src_ids, tgt_ids, corrupt):
    """Token ablation, edge knockout and edge patching effects ``[n (steps t), S (sources s)]``;
    ``corrupt``: one replacement token for every position, or one per position."""
    S, T, n = len(src_ids), len(tgt_ids) + 1, len(tgt_ids)
    corrupt = [corrupt] * S if isinstance(corrupt, int) else list(corrupt)
    pairs = [(s, t) for t in range(n) for s in range(S)]
    steps = torch.tensor([t for _, t in pairs])
    with torch.no_grad():
        clean = logp(execute(prepare(model, *batch(src_ids, tgt_ids, len(pairs)))).output,
                     tgt_ids, steps)
        corr_plan = prepare(model, *batch(src_ids, tgt_ids, S, [(s, corrupt[s]) for s in
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
    view = lambda v: v.view(n, S)  # rows t, columns s
    return {"token ablation": view(clean - ablate), "edge knockout": view(clean - knocked),
            "edge patching": view(clean - patched)}


def metrics(rows):
    """rows: list of (scores [S], true s or set of true s) -> top-1 and AUC with n."""
    top1 = auc = 0.0
    for score, true in rows:
        true = {true} if isinstance(true, int) else set(true)
        best = score.max()
        ties = (score == best).nonzero().flatten().tolist()
        top1 += len(true & set(ties)) / len(ties)
        others = score[[s for s in range(score.numel()) if s not in true]]
        auc += sum(((score[a] > others).double().mean() + 0.5 * (score[a] == others).double()
                    .mean()).item() for a in true) / len(true)
    n = len(rows)
    return {"top1": top1 / n, "auc": auc / n, "n": n}
