"""``gnn-attention evaluate RUN_DIR``: score a trained run on its held-out test split."""
from __future__ import annotations

import json
from pathlib import Path

from gnn_attention.cli.errors import UserError


def register(sub) -> None:
    p = sub.add_parser("evaluate", help="score a trained run on its held-out test (or val) split")
    p.add_argument("run_dir", metavar="RUN_DIR")
    p.add_argument("--split", default="test", choices=["val", "test"])
    p.add_argument("--beam", type=int, default=1, help="beam size (1 = greedy)")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--examples", type=int, default=3, help="held-out examples to print")
    p.add_argument("--json", metavar="PATH", help="also write the scores as JSON")
    p.set_defaults(func=run)


def run(args) -> int:
    from gnn_attention.cli.commands.translate import load_trained
    from gnn_attention.training.data import load_task
    from gnn_attention.training.metrics import evaluate

    if args.beam < 1:
        raise UserError(f"--beam must be >= 1, got {args.beam}")
    if args.examples < 0:
        raise UserError(f"--examples must be >= 0, got {args.examples}")
    cfg, model, src_tok, tgt_tok, _ = load_trained(args.run_dir, args.device)
    pairs = load_task(cfg.task, **cfg.task_params).split(args.split)
    device = next(model.parameters()).device
    ev = evaluate(model, pairs, src_tok, tgt_tok, device, cfg.eval_batch_size, args.beam)
    scores = {"task": cfg.task, "split": args.split, "examples": len(pairs), "beam": args.beam,
              **{k: ev[k] for k in ("exact_match", "token_accuracy", "bleu", "loss")}}
    print(f"{cfg.task} {args.split} ({len(pairs)} held-out pairs, beam {args.beam}): "
          f"exact match {ev['exact_match']:.4f}, token accuracy {ev['token_accuracy']:.4f}, "
          f"BLEU {ev['bleu']:.2f}")
    for (src, ref), pred in list(zip(pairs, ev["predictions"]))[:args.examples]:
        mark = "ok" if pred == ref else f"expected {ref!r}"
        print(f"  {src!r} -> {pred!r} ({mark})")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        with open(args.json, "w") as f:
            json.dump(scores, f, indent=2)
    return 0
