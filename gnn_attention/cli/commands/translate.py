"""``gnn-attention translate RUN_DIR TEXT...``: decode new inputs with a trained run, optionally
plotting the cross-attention alignment (target tokens x source tokens) of the last decoder layer."""
from __future__ import annotations

import sys
from pathlib import Path

import torch

from gnn_attention.cli.errors import UserError


def register(sub) -> None:
    p = sub.add_parser("translate", help="translate inputs with a trained run")
    p.add_argument("run_dir", metavar="RUN_DIR")
    p.add_argument("texts", nargs="+", metavar="TEXT", help='e.g. "three hundred forty-two"')
    p.add_argument("--beam", type=int, default=1, help="beam size (1 = greedy)")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--plot", metavar="PATH",
                   help="write the cross-attention alignment of the first TEXT (PNG/PDF/SVG)")
    p.set_defaults(func=run)


def load_trained(run_dir: str, device: str = "auto"):
    """:func:`gnn_attention.train.load_run` with the user's mistakes as one-line errors: a run
    directory that does not exist, holds no checkpoint or a corrupted one, ``--device cuda``
    without CUDA."""
    from gnn_attention.training.checkpoint import CheckpointError
    from gnn_attention.training.loop import TrainingError, load_run

    if not Path(run_dir).is_dir():
        raise UserError(f"run directory {run_dir} does not exist (train one with "
                        f"'gnn-attention train --run-dir {run_dir}')")
    try:
        return load_run(run_dir, device)
    except (CheckpointError, TrainingError) as err:
        raise UserError(str(err)) from None


def source_ids(text: str, src_tok, max_len: int, task: str) -> list:
    """Source ids of ``text``; unknown symbols (named), empty input and an input longer than the
    model's ``max_len`` positions are user errors, caught before any computation."""
    shown = repr(text) if len(text) <= 40 else repr(text[:37] + "...")
    unknown = list(dict.fromkeys(src_tok.unknown(text)))  # each unknown symbol once, in order
    if unknown:
        kind = "characters" if src_tok.level == "char" else "words"
        raise UserError(f"{shown} cannot be read by the {task} model: unknown {kind} "
                        + " ".join(repr(u) for u in unknown))
    ids = src_tok.encode(text)
    if not ids:
        raise UserError(f"{shown} cannot be read by the {task} model: empty input")
    if len(ids) > max_len:
        raise UserError(f"{shown} is {len(ids)} {src_tok.level}s long; the {task} model reads at "
                        f"most {max_len} (its max_len)")
    return ids


def check_domain(texts, task: str, params) -> None:
    """Refuse inputs outside a number task's sources (its domain is exact); warn, on stderr, for
    dates and symbol strings the task would not generate (see ``training.data.domain``)."""
    from gnn_attention.training.data.domain import domain, outside_message

    dom = domain(task, params)
    for text in texts:
        if not dom.contains(text):
            if dom.strict:
                raise UserError(outside_message(text, task, dom))
            print(f"gnn-attention translate: warning: {outside_message(text, task, dom)}",
                  file=sys.stderr)


def run(args) -> int:
    from gnn_attention.models.decoding import beam_search, greedy_decode
    from gnn_attention.training.data import pad_sources

    if args.beam < 1:
        raise UserError(f"--beam must be >= 1, got {args.beam}")
    cfg, model, src_tok, tgt_tok, state = load_trained(args.run_dir, args.device)
    for text in args.texts:
        source_ids(text, src_tok, model.config.max_len, cfg.task)
    check_domain(args.texts, cfg.task, cfg.task_params)
    device = next(model.parameters()).device
    src, lengths = pad_sources([src_tok.encode(t) for t in args.texts])
    src, lengths = src.to(device), lengths.to(device)
    max_len = int(state.get("max_target_len", 64)) + 5
    with torch.no_grad():
        if args.beam == 1:
            outs = greedy_decode(model, src, lengths, tgt_tok.bos_id, tgt_tok.eos_id, max_len)
        else:
            outs = beam_search(model, src, lengths, tgt_tok.bos_id, tgt_tok.eos_id, max_len,
                               beam_size=args.beam)
    for text, ids in zip(args.texts, outs):
        print(f"{text} -> {tgt_tok.decode(ids)}")
    if args.plot:
        plot_alignment(model, src_tok, tgt_tok, args.texts[0], outs[0], args.plot, device)
        print(f"wrote {args.plot}")
    return 0


def plot_alignment(model, src_tok, tgt_tok, text, out_ids, path, device) -> None:
    """Heatmap of the last decoder layer's cross-attention, averaged over heads: row t = output
    token t (and EOS), column s = source token s; each row sums to 1 (softmax over edges s -> t)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    src_ids = src_tok.encode(text)
    tgt_in = torch.tensor([[tgt_tok.bos_id] + list(out_ids)], device=device)
    with torch.no_grad():
        _, cross = model(torch.tensor([src_ids], device=device),
                         torch.tensor([len(src_ids)], device=device), tgt_in,
                         torch.tensor([tgt_in.size(1)], device=device),
                         return_cross_attention=True)
    weights = cross[-1][0].float().mean(0).cpu()  # [T, S], heads averaged
    rows = [tgt_tok.vocab[i] for i in out_ids] + ["<eos>"]
    cols = [src_tok.vocab[i] for i in src_ids]
    fig, ax = plt.subplots(figsize=(max(4.5, 0.45 * len(cols) + 1.5), max(3, 0.3 * len(rows) + 1)))
    im = ax.imshow(weights.numpy(), cmap="viridis", vmin=0, vmax=1, aspect="auto")
    ax.set_xticks(range(len(cols)), cols, rotation=60, ha="right")
    ax.set_yticks(range(len(rows)), rows)
    ax.set_xlabel("source token s (key/value node)")
    ax.set_ylabel("output token t (query node)")
    ax.set_title("cross-attention (last layer, mean of heads)", fontsize=8)
    fig.colorbar(im, ax=ax, fraction=0.05)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
