"""``gnn-attention hf``: run or inspect a local ``transformers`` checkpoint as a graph model.

Notation: B = 1 prompt of T token ids, n new tokens, V vocabulary.

``gnn-attention hf DIR`` names the family and its graph model; with ``--ids`` it runs the prompt:
decoder-only and seq2seq models decode n tokens (greedy, or beam search with ``--num-beams``),
encoder-only models give their last hidden state. ``--compare`` runs ``transformers``' own model on
the same weights and prints max |Δ| of the outputs over the prompt and whether the decodes agree.
"""
from __future__ import annotations

from pathlib import Path

from gnn_attention.cli.errors import UserError


def register(sub) -> None:
    p = sub.add_parser("hf", help="run or inspect a local transformers checkpoint (GPT-2, BART, "
                                  "T5, Marian, BERT) as a graph model")
    p.add_argument("directory", metavar="DIR", help="config.json + model.safetensors")
    p.add_argument("--ids", type=int, nargs="+", metavar="ID", help="prompt token ids")
    p.add_argument("--max-new-tokens", type=int, default=10, help="tokens to decode (default 10)")
    p.add_argument("--num-beams", type=int, default=1, help="beam width (default 1: greedy)")
    p.add_argument("--compare", action="store_true",
                   help="also run transformers' model: max |diff| of the outputs, same decode?")
    p.set_defaults(func=run)


def _load(directory: str):
    from gnn_attention.pretrained.hf import load_local

    if not Path(directory).is_dir():
        raise UserError(f"model directory {directory} does not exist")
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # stderr stays one line per mistake
        return load_local(directory)
    except (FileNotFoundError, TypeError, ImportError) as err:
        raise UserError(str(err)) from None


def run(args) -> int:
    import torch

    from gnn_attention.pretrained.hf import max_difference

    if args.max_new_tokens < 1 or args.num_beams < 1:
        raise UserError("--max-new-tokens and --num-beams must be at least 1")
    hf_model, model = _load(args.directory)
    vocab = hf_model.config.vocab_size
    print(f"{type(hf_model).__name__} -> {type(model).__name__} "
          f"({sum(p.numel() for p in model.parameters()):,} parameters, vocabulary {vocab})")
    if not args.ids:
        return 0
    bad = [i for i in args.ids if not 0 <= i < vocab]
    if bad:
        raise UserError(f"--ids must lie in [0, {vocab}), got {bad}")
    ids = torch.tensor([args.ids])
    mask = torch.ones_like(ids)
    seq2seq = getattr(hf_model.config, "is_encoder_decoder", False)
    with torch.no_grad():
        if not hasattr(model, "generate"):  # encoder-only: the last hidden state
            hidden = model(ids, attention_mask=mask)
            print(f"hidden state {list(hidden.shape)}")
            if args.compare:
                print(f"max |diff| vs transformers: {max_difference(hf_model, model, ids, mask):.2e}")
            return 0
        out = model.generate(ids, attention_mask=mask, max_new_tokens=args.max_new_tokens,
                             num_beams=args.num_beams)
        print("decoded ids:", " ".join(str(i) for i in out[0].tolist()))
        if args.compare:
            theirs = hf_model.generate(ids, attention_mask=mask, do_sample=False,
                                       max_new_tokens=args.max_new_tokens,
                                       num_beams=args.num_beams)
            dec = {"decoder_input_ids": out[:, :1]} if seq2seq else {}
            diff = max_difference(hf_model, model, ids, mask, **dec)
            same = theirs.shape == out.shape and bool((theirs == out).all())
            print(f"max |diff| of the logits vs transformers: {diff:.2e}; "
                  f"decode {'identical' if same else 'DIFFERENT'} to transformers' generate")
            return 0 if same else 1
    return 0
