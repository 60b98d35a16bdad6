"""``gnn-attention embed``: sentence embeddings of a pretrained BERT encoder and their cosines.

Notation: B sentences, C embedding width. Embeddings are unit vectors (mean pooling + L2, as
all-MiniLM-L6-v2), so the cosine similarity matrix is ``E @ E^T``, ``[B, B]``.
"""
from __future__ import annotations

from ..cli import UserError


def register(sub) -> None:
    p = sub.add_parser("embed", help="sentence embeddings (all-MiniLM-L6-v2) and cosine similarities")
    p.add_argument("sentences", nargs="+", metavar="SENTENCE", help="one or more sentences")
    p.add_argument("--model-dir", metavar="DIR",
                   help="a Hugging Face BERT directory (default: the installed all-MiniLM-L6-v2)")
    p.set_defaults(func=run)


def load(model_dir):
    """Model and tokenizer for the CLI; missing weights or packages become one-line errors."""
    from .. import pretrained

    try:
        directory = model_dir or pretrained.minilm_directory()
        return pretrained.load_bert(directory), pretrained.load_tokenizer(directory)
    except (FileNotFoundError, ImportError) as err:
        raise UserError(str(err)) from None


def run(args) -> int:
    from .. import pretrained

    if any(not s.strip() for s in args.sentences):
        raise UserError("sentences must not be empty")
    model, tokenizer = load(args.model_dir)
    emb = pretrained.sentence_embeddings(model, tokenizer, args.sentences)
    counts = pretrained.encode(tokenizer, args.sentences)["attention_mask"].sum(1)
    print(f"{len(args.sentences)} sentence(s), embedding dimension {emb.size(1)}")
    print(f"{'#':>3}  {'tokens':>6}  {'norm':>6}  sentence")
    for b, (s, n, e) in enumerate(zip(args.sentences, counts.tolist(), emb)):
        print(f"{b:>3}  {n:>6}  {e.norm().item():>6.4f}  {s}")
    cos = emb @ emb.T
    print("\ncosine similarity")
    print("     " + "".join(f"{b:>8}" for b in range(len(args.sentences))))
    for b, row in enumerate(cos.tolist()):
        print(f"{b:>3}  " + "".join(f"{c:>8.4f}" for c in row))
    return 0
