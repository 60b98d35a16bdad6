"""``gnn-attention explain``: attention weights next to measured single-edge knockout effects.

Notation: a unit = one edge j -> i in one layer l and head h; alpha its weight; ko its knockout
effect (:func:`gnn_attention.interpret.effects.knockout_effects`: the run with only that unit
removed, the other weights of i renormalising):

    sentence, all-MiniLM-L6-v2 (encoder self-attention):  ko = || h_i - h_i(without u) ||_2
        (h = the final hidden states, i = the edge's target token)
    --run DIR TEXT, a trained translator (decoder cross-attention, source s -> output step t):
        ko = log p(y_t) - log p(y_t | without u), y = the greedy output of TEXT (and <eos>),
        teacher-forced

Writes the interactive page (``--html``: weights and knockout side by side) and the numbers
(``--json``); without either it prints the units with the largest effect and their weights.
"""
from __future__ import annotations

import json
import math
import time
from pathlib import Path

import torch

from gnn_attention.cli.errors import UserError

MINILM_TOP_K = 1  # 6 layers x 12 heads x T targets units: 1152 for T = 16 (docs/interpretability.md)


def register(sub) -> None:
    p = sub.add_parser("explain", help="attention weights beside measured knockout effects "
                                       "(all-MiniLM-L6-v2 or a trained run)")
    p.add_argument("text", metavar="TEXT", help="the sentence (or, with --run, the input)")
    p.add_argument("--run", metavar="DIR", help="a trained translation run directory: explain "
                                                "its decoder cross-attention on TEXT")
    p.add_argument("--model-dir", metavar="DIR",
                   help="a Hugging Face BERT directory (default: the installed all-MiniLM-L6-v2)")
    p.add_argument("--layer", type=int, metavar="L", help="only layer L (0-based)")
    p.add_argument("--top-k", metavar="K", help=f"knock out only the K heaviest incoming edges "
                   f"of each target per head, or 'all' (default: {MINILM_TOP_K} for MiniLM, "
                   f"all for --run)")
    p.add_argument("--html", metavar="PATH", help="write the interactive page")
    p.add_argument("--json", metavar="PATH", help="write weights and knockout effects as JSON")
    p.set_defaults(func=run)


def _top_k(value, default):
    if value is None:
        return default
    if value == "all":
        return None
    try:
        k = int(value)
    except ValueError:
        raise UserError(f"--top-k must be a whole number >= 1 or 'all', got {value!r}") from None
    if k < 1:
        raise UserError(f"--top-k must be >= 1 or 'all', got {k}")
    return k


def _layers(layer, count: int, stack: str, kind: str):
    if layer is not None and not 0 <= layer < count:
        raise UserError(f"--layer must be in 0..{count - 1}, got {layer}")
    return [(stack, i, kind) for i in (range(count) if layer is None else [layer])]


def _minilm(args):
    """(model, forward args, labels, sites, src tokens, tokens, label, name) for a sentence."""
    from gnn_attention.cli.commands.embed import check_lengths, load_model, resolve
    from gnn_attention.pretrained import bert as pretrained

    directory, tokenizer = resolve(args.model_dir)
    check_lengths(tokenizer, [args.text])
    top_k = _top_k(args.top_k, MINILM_TOP_K)
    sites = _layers(args.layer, pretrained.bert_config(directory).num_layers, "encoder", "self")
    model = load_model(directory)
    b = pretrained.encode(tokenizer, [args.text])
    toks = pretrained.tokens(tokenizer, args.text)
    return {"model": model, "args": (b["input_ids"], b["attention_mask"], b["token_type_ids"]),
            "labels": None, "sites": sites, "top_k": top_k, "src": toks, "dst": toks,
            "label": "L2 change of the target's final state",
            "name": Path(directory).name if args.model_dir else "all-MiniLM-L6-v2"}


def _translator(args):
    """The same for a trained run: greedy output of TEXT, teacher-forced, cross-attention."""
    from gnn_attention.cli.commands.translate import check_domain, load_trained, source_ids
    from gnn_attention.models.decoding import greedy_decode

    cfg, model, src_tok, tgt_tok, state = load_trained(args.run, "cpu")
    ids = source_ids(args.text, src_tok, model.config.max_len, cfg.task)
    check_domain([args.text], cfg.task, cfg.task_params)
    top_k = _top_k(args.top_k, None)
    sites = _layers(args.layer, model.config.num_decoder_layers, "decoder", "cross")
    src, n = torch.tensor([ids]), torch.tensor([len(ids)])
    with torch.no_grad():
        out = greedy_decode(model, src, n, tgt_tok.bos_id, tgt_tok.eos_id,
                            int(state.get("max_target_len", 64)) + 5)[0]
    tgt_in = torch.tensor([[tgt_tok.bos_id] + out])
    return {"model": model, "args": (src, n, tgt_in, torch.tensor([tgt_in.size(1)])),
            "labels": torch.tensor(out + [tgt_tok.eos_id]), "sites": sites, "top_k": top_k,
            "src": [src_tok.vocab[i] for i in ids],
            "dst": [tgt_tok.vocab[i] for i in out] + ["<eos>"],
            "label": "drop of log p(y_t)", "name": f"{Path(args.run).name} ({cfg.task})",
            "output": tgt_tok.decode(out)}


def run(args) -> int:
    from gnn_attention.interpret.effects import knockout_effects

    if not args.text.strip():
        raise UserError("TEXT is empty")
    job = _translator(args) if args.run else _minilm(args)
    start = time.perf_counter()
    eff = knockout_effects(job["model"], *job["args"], sites=job["sites"], labels=job["labels"],
                           top_k=job["top_k"])
    seconds = time.perf_counter() - start
    units = sum(int((~e.isnan()).sum()) for e in eff.effect.values())
    print(f"{job['name']}: {len(job['src'])} source and {len(job['dst'])} target tokens; "
          f"{units} units knocked out one at a time in {seconds:.1f} s "
          f"(top-k {job['top_k'] or 'all'}); knockout = {job['label']}")
    if "output" in job:
        print(f"output: {job['output']}")
    layers = [{"site": list(s), "edges": eff.edge_index[s].t().tolist(),
               "alpha": eff.alpha[s].tolist(),
               "knockout": [[None if math.isnan(v) else v for v in row]  # NaN: not measured
                            for row in eff.effect[s].tolist()]} for s in job["sites"]]
    if args.json:
        data = {"model": job["name"], "text": args.text, "readout": eff.readout,
                "knockout_label": job["label"], "top_k": job["top_k"], "src_tokens": job["src"],
                "tokens": job["dst"], "layers": layers, "seconds": round(seconds, 2)}
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(data, indent=1, allow_nan=False))
        print(f"wrote {args.json}")
    if args.html:
        from gnn_attention.viz import html as viz_html

        path = viz_html.to_html(job["dst"], [(eff.edge_index[s], eff.alpha[s])
                                             for s in job["sites"]], args.html,
                                src_tokens=job["src"], title=f"{job['name']}: {args.text}",
                                knockout=[eff.effect[s] for s in job["sites"]],
                                knockout_label=job["label"])
        print(f"wrote {path}")
    if not (args.json or args.html):
        _print_top(eff, job)
    return 0


def _print_top(eff, job, count: int = 8) -> None:
    """The units with the largest |ko|, each with its weight and its weight's rank among the
    incoming edges of its target in that head (1 = the heaviest)."""
    rows = []
    for s in job["sites"]:
        e, a, ei = eff.effect[s], eff.alpha[s], eff.edge_index[s]
        for k, h in (~e.isnan()).nonzero().tolist():
            into = ei[1] == ei[1, k]
            rank = int((a[into, h] > a[k, h]).sum()) + 1
            rows.append((abs(float(e[k, h])), s[1], h, int(ei[0, k]), int(ei[1, k]),
                         float(e[k, h]), float(a[k, h]), rank))
    rows.sort(reverse=True)
    print("layer  head  edge (source -> target)          knockout   weight  weight rank")
    for _, layer, h, j, i, ko, w, rank in rows[:count]:
        edge = f"{job['src'][j]} -> {job['dst'][i]}"
        print(f"{layer:>5}  {h:>4}  {edge:<30} {ko:>9.4f}  {w:>7.3f}  {rank:>11}")
