"""``gnn-attention embed``: sentence embeddings of a pretrained BERT encoder and their cosines.

Notation: B sentences, C embedding width. Embeddings are unit vectors (mean pooling + L2, as
all-MiniLM-L6-v2), so the cosine similarity matrix is ``E @ E^T``, ``[B, B]``.
"""
from __future__ import annotations

from gnn_attention.cli.errors import UserError


def register(sub) -> None:
    p = sub.add_parser("embed", help="sentence embeddings (all-MiniLM-L6-v2) and cosine similarities")
    p.add_argument("sentences", nargs="+", metavar="SENTENCE", help="one or more sentences")
    p.add_argument("--model-dir", metavar="DIR",
                   help="a Hugging Face BERT directory (default: the installed all-MiniLM-L6-v2)")
    p.add_argument("--compare-bert", action="store_true",
                   help="also run transformers' BertModel on the same weights and print the max "
                        "|diff| of every layer's hidden states and attention weights")
    p.set_defaults(func=run)


def resolve(model_dir):
    """The model directory and its tokenizer; missing weights or packages are one-line errors.

    The tokenizer comes first so that commands can check their input before the model loads.
    """
    from pathlib import Path

    from gnn_attention.pretrained import bert as pretrained

    if model_dir and not Path(model_dir).is_dir():
        raise UserError(f"model directory {model_dir} does not exist")
    try:
        directory = model_dir or pretrained.minilm_directory()
        return directory, pretrained.load_tokenizer(directory)
    except (FileNotFoundError, ImportError, ValueError) as err:
        raise UserError(str(err)) from None


def check_lengths(tokenizer, sentences) -> None:
    """Reject a sentence longer than the tokenizer's truncation length (which would otherwise be
    cut silently), saying its length in word pieces ([CLS]/[SEP] included) and the limit."""
    limit = (tokenizer.truncation or {}).get("max_length")
    specials = len(tokenizer.encode("").ids)  # [CLS] and [SEP], added to every overflow piece too
    for b, sentence in enumerate(sentences):
        enc = tokenizer.encode(sentence)
        if enc.overflowing:
            n = len(enc.ids) + sum(sum(o.attention_mask) - specials for o in enc.overflowing)
            raise UserError(f"sentence {b} is {n} tokens long ([CLS]/[SEP] included); the model "
                            f"reads at most {limit}")


def load_model(directory):
    """The encoder of ``directory``; an unusable checkpoint is a one-line error."""
    from gnn_attention.pretrained import bert as pretrained

    try:
        return pretrained.load_bert(directory)
    except (FileNotFoundError, KeyError, ValueError) as err:
        raise UserError(f"cannot load {directory}: {err}") from None


def run(args) -> int:
    from gnn_attention.pretrained import bert as pretrained

    if any(not s.strip() for s in args.sentences):
        raise UserError("sentences must not be empty")
    directory, tokenizer = resolve(args.model_dir)
    check_lengths(tokenizer, args.sentences)
    model = load_model(directory)
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
    if args.compare_bert:
        compare_bert(model, tokenizer, directory, args.sentences, emb)
    return 0


def compare_bert(model, tokenizer, directory, sentences, emb) -> None:
    """Max |diff| against ``transformers.BertModel`` (eager attention) on the same padded batch,
    over valid tokens (hidden states) and over the edges (attention weights), per layer."""
    import torch
    import torch.nn.functional as F

    from gnn_attention.pretrained import bert as pretrained

    try:
        from transformers import BertModel
        from transformers.utils import logging as hf_logging
    except ImportError:
        raise UserError("--compare-bert needs transformers: pip install 'gnn-attention[test]'") \
            from None
    hf_logging.disable_progress_bar()  # keep the table readable
    hf = BertModel.from_pretrained(str(directory), attn_implementation="eager").eval()
    batch = pretrained.encode(tokenizer, sentences)
    mask = batch["attention_mask"].bool()
    with torch.no_grad():
        ref = hf(**batch, output_hidden_states=True, output_attentions=True)
        _, hidden, attentions = model(batch["input_ids"], batch["attention_mask"],
                                      batch["token_type_ids"], return_attention=True)
    edges = mask[:, None, :, None] & mask[:, None, None, :]
    maps = [None] + pretrained.dense_attention_maps(attentions, batch["attention_mask"])
    print(f"\nagainst transformers BertModel (eager), batch {list(mask.shape)}, "
          f"{int(mask.sum())} valid tokens")
    print(f"{'layer':>12}  {'hidden max|diff|':>17}  {'attention max|diff|':>20}")
    for layer, (ours, theirs) in enumerate(zip(hidden, ref.hidden_states)):
        h = (ours[mask] - theirs[mask]).abs().max().item()
        a = ""
        if maps[layer] is not None:  # layer 0 is the embedding output: no attention yet
            diff = (maps[layer] - ref.attentions[layer - 1])[edges.expand_as(maps[layer])]
            a = f"{diff.abs().max().item():.2e}"
        print(f"{'embeddings' if layer == 0 else layer:>12}  {h:>17.2e}  {a:>20}")
    m = batch["attention_mask"].unsqueeze(-1).to(ref.last_hidden_state.dtype)
    expected = F.normalize((ref.last_hidden_state * m).sum(1) / m.sum(1), dim=-1)
    print(f"{'sentence emb':>12}  {(emb - expected).abs().max().item():>17.2e}")
