"""``gnn-attention attention``: where one token of a sentence attends, per layer and head.

Notation: L layers, H heads, T tokens of the sentence ([CLS] and [SEP] included). The query token
at position t is a target node; ``alpha[l, h, s]`` is the weight of its incoming edge from key s
in layer l, head h (each row sums to 1 over the T keys).
"""
from __future__ import annotations

from pathlib import Path

from gnn_attention.cli.commands.embed import check_lengths, load_model, resolve
from gnn_attention.cli.errors import UserError


def register(sub) -> None:
    p = sub.add_parser("attention", help="where a token attends, per layer and head "
                                         "(all-MiniLM-L6-v2)")
    p.add_argument("sentence", help="the sentence, e.g. 'The trophy did not fit in the suitcase "
                                    "because it was too big.'")
    p.add_argument("--token", required=True, help="the query token (a word piece of the sentence)")
    p.add_argument("--occurrence", type=int, default=1, metavar="K",
                   help="use the K-th occurrence of the token (default 1)")
    p.add_argument("--layer", type=int, metavar="L", help="only layer L (0-based)")
    p.add_argument("--head", type=int, metavar="H", help="only head H (0-based)")
    p.add_argument("--top", type=int, default=3, metavar="K", help="keys shown per row (default 3)")
    p.add_argument("--keys", nargs="+", metavar="TOKEN",
                   help="also show the weight on these tokens (e.g. trophy suitcase)")
    p.add_argument("--plot", metavar="PATH", help="save a heatmap figure (layers x heads x keys)")
    p.add_argument("--html", metavar="PATH",
                   help="write the interactive page of the sentence (every layer and head)")
    p.add_argument("--model-dir", metavar="DIR",
                   help="a Hugging Face BERT directory (default: the installed all-MiniLM-L6-v2)")
    p.set_defaults(func=run)


def _position(toks, token: str, occurrence: int = 1) -> int:
    """Position of the ``occurrence``-th word piece equal to ``token`` (case-insensitive)."""
    hits = [t for t, piece in enumerate(toks) if piece.lower() == token.lower()]
    if not hits:
        raise UserError(f"token {token!r} is not in the sentence; its tokens are: {' '.join(toks)}")
    if not 1 <= occurrence <= len(hits):
        raise UserError(f"token {token!r} occurs {len(hits)} time(s); --occurrence must be in "
                        f"1..{len(hits)}")
    return hits[occurrence - 1]


def _check_index(value, count: int, what: str) -> range:
    if value is None:
        return range(count)
    if not 0 <= value < count:
        raise UserError(f"--{what} must be in 0..{count - 1}, got {value}")
    return range(value, value + 1)


def _row(label: str, w, toks, top: int, key_pos) -> str:
    order = w.argsort(descending=True)[:top].tolist()
    cells = "  ".join(f"{toks[s]:>10} {w[s].item():.3f}" for s in order)
    extra = "".join(f"  {w[s].item():>10.3f}" for s in key_pos)
    return f"{label}  {cells}{extra}"


def run(args) -> int:
    from gnn_attention.pretrained import bert as pretrained

    if args.top < 1:
        raise UserError(f"--top must be at least 1, got {args.top}")
    directory, tokenizer = resolve(args.model_dir)
    check_lengths(tokenizer, [args.sentence])
    toks = pretrained.tokens(tokenizer, args.sentence)
    t = _position(toks, args.token, args.occurrence)
    key_pos = [_position(toks, k) for k in args.keys or []]
    cfg = pretrained.bert_config(directory)  # sizes, to check --layer/--head before loading
    layers = _check_index(args.layer, cfg.num_layers, "layer")
    heads = _check_index(args.head, cfg.nhead, "head")
    model = load_model(directory)
    alpha = pretrained.token_attention(model, tokenizer, args.sentence, t)      # [L, H, T]

    print(f"tokens ({len(toks)}): {' '.join(toks)}")
    print(f"query: {toks[t]!r} at position {t}; weights of its incoming edges (keys), "
          f"top {args.top} per row")
    keys_head = "".join(f"  {toks[s]:>10}" for s in key_pos)
    print(f"layer  head  {'top keys (weight)':<{18 * min(args.top, len(toks)) - 2}}{keys_head}")
    for layer in layers:
        for head in heads:
            print(_row(f"{layer:>5}  {head:>4}", alpha[layer, head], toks, args.top, key_pos))
        if len(heads) > 1:
            print(_row(f"{layer:>5}  mean", alpha[layer].mean(0), toks, args.top, key_pos))
    if args.plot:
        _plot(alpha, toks, t, layers, heads, args.plot)
        print(f"wrote {args.plot}")
    if args.html:
        from gnn_attention.cli.commands.plot import bert_layers
        from gnn_attention.viz import html as viz_html

        words, g, alphas = bert_layers(model, tokenizer, args.sentence)
        path = viz_html.to_html(words, [(g, a) for a in alphas], args.html,
                                title=Path(directory).name)
        print(f"wrote {path}")
    return 0


def _plot(alpha, toks, t, layers, heads, path) -> None:
    """One heatmap per layer: heads (rows) x keys (columns), colour = attention weight."""
    import matplotlib

    matplotlib.use("Agg")  # files only; never open a window from the CLI
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(layers), 1, squeeze=False,
                             figsize=(0.45 * len(toks) + 2, 0.28 * len(heads) * len(layers) + 1.5))
    vmax = float(alpha[list(layers)][:, list(heads)].max())
    for ax, layer in zip(axes[:, 0], layers):
        im = ax.imshow(alpha[layer, list(heads)].numpy(), aspect="auto", cmap="viridis",
                       vmin=0.0, vmax=vmax)
        ax.set_ylabel(f"layer {layer}\nhead")
        ax.set_yticks(range(len(heads)), [str(h) for h in heads], fontsize=6)
        ax.set_xticks(range(len(toks)), toks if ax is axes[-1, 0] else [""] * len(toks),
                      rotation=90)
    axes[0, 0].set_title(f"attention of {toks[t]!r} (position {t}) to each key")
    fig.colorbar(im, ax=axes[:, 0].tolist(), label="weight", fraction=0.04, pad=0.02)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=150, bbox_inches="tight")
    plt.close(fig)
