"""``gnn-attention plot patterns|attention|alignment``: the figures of :mod:`gnn_attention.viz`.

Notation: T tokens of the sentence (targets = queries), S source tokens (cross-attention), L layers,
H heads, ``alpha [E, H]`` the weights of one layer's edges j -> i.

Attention comes from a model with random weights (``--model random``, seeded: the figures show how
attention is *drawn*, not what a trained model learned) or from a pretrained BERT encoder
(``--model minilm``: all-MiniLM-L6-v2 via :mod:`gnn_attention.pretrained`).
"""
from __future__ import annotations

from pathlib import Path

import torch

from gnn_attention.cli.errors import UserError

PATTERNS = ("full", "causal", "window")
MAX_PATTERN_LENGTH = 64  # full attention draws T^2 arcs: 4096 at T=64, unreadable beyond


def register(sub) -> None:
    p = sub.add_parser("plot", help="figures: patterns, attention graphs, alignments")
    kinds = p.add_subparsers(dest="kind", required=True, metavar="KIND")

    pat = kinds.add_parser("patterns", help="each pattern as a graph beside its dense mask")
    pat.add_argument("--length", type=int, default=8, metavar="T", help="tokens (default 8)")
    pat.add_argument("--window", type=int, default=1, metavar="W", help="window radius (default 1)")
    pat.add_argument("--dilation", type=int, default=2, metavar="D", help="dilation (default 2)")
    pat.add_argument("--out", required=True, metavar="PNG")
    pat.set_defaults(func=run_patterns)

    att = kinds.add_parser("attention", help="attention over a sentence as a weighted graph")
    att.add_argument("text", help="the sentence (random model: split on spaces)")
    att.add_argument("--model", choices=("random", "minilm"), default="random")
    att.add_argument("--model-dir", metavar="DIR", help="BERT directory for --model minilm")
    att.add_argument("--pattern", choices=PATTERNS, default="full",
                     help="attention graph of the random model (default full)")
    att.add_argument("--num-layers", type=int, default=2, help="random model depth (default 2)")
    att.add_argument("--num-heads", type=int, default=4, help="random model heads (default 4)")
    att.add_argument("--seed", type=int, default=0)
    att.add_argument("--layer", type=int, default=0, help="layer drawn (0-based; default 0)")
    att.add_argument("--head", default="mean", help="head index or 'mean' (default mean)")
    att.add_argument("--top-k", type=int, metavar="K", help="keep the K heaviest edges per token")
    att.add_argument("--threshold", type=float, metavar="W", help="keep edges weighing >= W")
    att.add_argument("--out", metavar="PNG", help="the attention graph figure")
    att.add_argument("--heatmap", metavar="PNG", help="also the weights as a heatmap")
    att.add_argument("--html", metavar="PATH", help="interactive page (every layer and head)")
    att.set_defaults(func=run_attention)

    ali = kinds.add_parser("alignment", help="cross-attention of a target over a source sentence")
    ali.add_argument("--src", required=True, help="source sentence")
    ali.add_argument("--tgt", help="target sentence (random model; split on spaces)")
    ali.add_argument("--run", metavar="DIR", help="a trained translation run: translate --src "
                                                  "and plot its cross-attention")
    ali.add_argument("--layer", type=int, default=-1, help="decoder layer with --run (default "
                                                           "last)")
    ali.add_argument("--num-heads", type=int, default=4)
    ali.add_argument("--seed", type=int, default=0)
    ali.add_argument("--head", default="mean", help="head index or 'mean' (default mean)")
    ali.add_argument("--threshold", type=float, default=0.1)
    ali.add_argument("--no-lines", action="store_true",
                     help="matrix only (long, e.g. character-level, targets)")
    ali.add_argument("--out", required=True, metavar="PNG")
    ali.set_defaults(func=run_alignment)


def _save(fig, path: str, dpi: int = 80) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi)
    print(f"wrote {path}")


def _head(value: str, num_heads: int):
    if value == "mean":
        return "mean"
    try:
        h = int(value)
    except ValueError:
        raise UserError(f"--head must be an integer or 'mean', got {value!r}") from None
    if not 0 <= h < num_heads:
        raise UserError(f"--head must be in 0..{num_heads - 1} or 'mean', got {h}")
    return h


def _words(text: str, what: str):
    words = text.split()
    if not words:
        raise UserError(f"{what} must contain at least one token")
    return words


def run_patterns(args) -> int:
    from gnn_attention.viz import static as viz

    if args.length < 2 or args.window < 0 or args.dilation < 1:
        raise UserError("need --length >= 2, --window >= 0 and --dilation >= 1")
    if args.length > MAX_PATTERN_LENGTH:
        raise UserError(f"--length {args.length} is too long to draw: at most "
                        f"{MAX_PATTERN_LENGTH} tokens (full attention draws T^2 arcs)")
    fig = viz.plot_patterns(viz.pattern_gallery(args.length, args.window, args.dilation))
    _save(fig, args.out)
    return 0


def _embed(words, width: int, gen: torch.Generator) -> torch.Tensor:
    """Random token embeddings (one per distinct word) plus random position embeddings, so that
    repeated words share a vector and positions still differ."""
    vocab = {w: k for k, w in enumerate(dict.fromkeys(words))}
    table = torch.randn(len(vocab), width, generator=gen)
    pos = 0.5 * torch.randn(len(words), width, generator=gen)
    return table[torch.tensor([vocab[w] for w in words])] + pos


def random_attention(words, pattern: str = "full", num_layers: int = 2, num_heads: int = 4,
                     seed: int = 0, width: int = 48):
    """``(graph, [alpha_l [E, H] for each layer])`` of a seeded random encoder over ``words``."""
    from gnn_attention import graphs
    from gnn_attention.models.layers import Encoder, EncoderLayer

    if num_layers < 1 or num_heads < 1:
        raise UserError("--num-layers and --num-heads must be at least 1")
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)  # the layers' initialisation
    width = width - width % num_heads or num_heads
    T = len(words)
    g = {"full": lambda: graphs.full([T]), "causal": lambda: graphs.causal([T]),
         "window": lambda: graphs.window([T], 2)}[pattern]()
    enc = Encoder(EncoderLayer(width, num_heads, dim_feedforward=2 * width, dropout=0.0),
                  num_layers).eval()
    with torch.no_grad():
        _, _, alphas = enc(_embed(words, width, gen), g, need_weights=True)
    return g, alphas


def minilm_attention(text: str, model_dir=None):
    """Word pieces, the complete graph and per-layer ``alpha [E, H]`` of a BERT encoder
    (default all-MiniLM-L6-v2) on ``text``."""
    from gnn_attention.cli.commands.embed import check_lengths
    from gnn_attention.pretrained import bert as pretrained

    try:
        directory = model_dir or pretrained.minilm_directory()
        model, tok = pretrained.load_bert(directory), pretrained.load_tokenizer(directory)
    except (FileNotFoundError, ImportError) as err:
        raise UserError(str(err)) from None
    check_lengths(tok, [text])
    return bert_layers(model, tok, text)


def bert_layers(model, tok, text: str):
    """Word pieces, the complete graph and per-layer ``alpha [E, H]`` of a loaded BERT encoder
    on ``text`` (the input of :func:`gnn_attention.viz.to_html`)."""
    from gnn_attention import graphs
    from gnn_attention.pretrained import bert as pretrained

    batch = pretrained.encode(tok, [text])
    with torch.no_grad():
        _, _, attentions = model(batch["input_ids"], batch["attention_mask"],
                                 batch["token_type_ids"], return_attention=True)
    T = batch["input_ids"].size(1)
    g = graphs.from_edge_index(attentions[0][0], [T], [T])
    # from_edge_index sorts edges by (target, source): reorder every alpha the same way.
    order = torch.argsort(attentions[0][0][1] * T + attentions[0][0][0], stable=True)
    return pretrained.tokens(tok, text), g, [a[order] for _, a in attentions]


def run_alignment_weights(run_dir: str, text: str, device: str = "cpu"):
    """Translate ``text`` greedily with a trained run, then read the cross-attention of every
    decoder layer on (source, output + <eos>): ``(src_tokens, out_tokens, [W_l [H, T, S]])``."""
    from gnn_attention.cli.commands.translate import load_trained, source_ids
    from gnn_attention.models.decoding import greedy_decode

    cfg, model, src_tok, tgt_tok, state = load_trained(run_dir, device)
    src_ids = source_ids(text, src_tok, model.config.max_len, cfg.task)
    src = torch.tensor([src_ids])
    n = torch.tensor([len(src_ids)])
    with torch.no_grad():
        out = greedy_decode(model, src, n, tgt_tok.bos_id, tgt_tok.eos_id,
                            int(state.get("max_target_len", 64)) + 5)[0]
        tgt_in = torch.tensor([[tgt_tok.bos_id] + out])
        _, cross = model(src, n, tgt_in, torch.tensor([tgt_in.size(1)]),
                         return_cross_attention=True)
    return ([src_tok.vocab[i] for i in src_ids], [tgt_tok.vocab[i] for i in out] + ["<eos>"],
            [c[0].float() for c in cross])


def run_attention(args) -> int:
    from gnn_attention.viz import html as viz_html
    from gnn_attention.viz import static as viz

    if not (args.out or args.heatmap or args.html):
        raise UserError("give at least one of --out, --heatmap, --html")
    if args.top_k is not None and args.top_k < 1:
        raise UserError(f"--top-k must be >= 1, got {args.top_k}")
    if args.threshold is not None and not 0 <= args.threshold <= 1:
        raise UserError(f"--threshold is a weight in [0, 1], got {args.threshold}")
    if args.model == "random":
        words = _words(args.text, "the sentence")
        g, alphas = random_attention(words, args.pattern, args.num_layers, args.num_heads,
                                     args.seed)
        where = f"random {args.pattern}-attention encoder, seed {args.seed}"
    else:
        words, g, alphas = minilm_attention(args.text, args.model_dir)
        where = "all-MiniLM-L6-v2"
    if not 0 <= args.layer < len(alphas):
        raise UserError(f"--layer must be in 0..{len(alphas) - 1}, got {args.layer}")
    head = _head(args.head, alphas[0].size(1))
    alpha = alphas[args.layer]
    title = f"{where}: layer {args.layer}, " + ("mean over heads" if head == "mean"
                                                 else f"head {head}")
    if args.out:
        _save(viz.attention_graph(g, alpha, labels=words, head=head, top_k=args.top_k,
                                  threshold=args.threshold, title=title), args.out)
    if args.heatmap:
        _save(viz.attention_heatmap(viz.dense_weights(g, alpha, head), words, words, title=title),
              args.heatmap)
    if args.html:
        path = viz_html.to_html(words, [(g, a) for a in alphas], args.html, title=where)
        print(f"wrote {path}")
    return 0


def run_alignment(args) -> int:
    from gnn_attention import MultiheadAttentionConv, graphs
    from gnn_attention.viz import static as viz

    if args.run:
        src, tgt, cross = run_alignment_weights(args.run, args.src)
        if not -len(cross) <= args.layer < len(cross):
            raise UserError(f"--layer must be in 0..{len(cross) - 1} (or -1), got {args.layer}")
        W = cross[args.layer]
        head = _head(args.head, W.size(0))
        W = W.mean(0) if head == "mean" else W[head]
        layer = args.layer % len(cross)
        _save(viz.alignment_plot(W, src, tgt, threshold=args.threshold, lines=not args.no_lines,
                                 title=f"trained run, decoder layer {layer + 1} of {len(cross)}, "
                                       + ("mean over heads" if head == "mean" else f"head {head}")),
              args.out)
        return 0
    if not args.tgt:
        raise UserError("give --tgt (random model) or --run DIR (a trained translator)")
    src, tgt = _words(args.src, "--src"), _words(args.tgt, "--tgt")
    if args.num_heads < 1:
        raise UserError("--num-heads must be at least 1")
    head = _head(args.head, args.num_heads)
    gen = torch.Generator().manual_seed(args.seed)
    torch.manual_seed(args.seed)
    width = 12 * args.num_heads
    g = graphs.cross([len(src)], [len(tgt)])
    conv = MultiheadAttentionConv(width, args.num_heads).eval()
    with torch.no_grad():
        x = (_embed(src, width, gen), _embed(tgt, width, gen))
        _, (_, alpha) = conv(x, g, return_attention_weights=True)
    W = viz.dense_weights(g, alpha, head)
    _save(viz.alignment_plot(W, src, tgt, threshold=args.threshold, lines=not args.no_lines,
                             title=f"cross-attention of a random layer (seed {args.seed})"),
          args.out)
    return 0
