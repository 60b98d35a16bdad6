"""``from_transformers``: a ``transformers`` model as the token-graph model that computes the same
thing; ``from_pretrained``: the same from a local checkpoint directory.

Notation: B rows, T (S) padded target (source) positions, V vocabulary, C width.

    family    transformers class               graph model            call -> output
    GPT-2     GPT2LMHeadModel                  gpt2.GPT2Graph         g(ids, attention_mask) -> [B, T, V]
    BART      BartForConditionalGeneration     bart.BartGraph         g(ids, attention_mask,
    Marian    MarianMTModel                    bart.BartGraph           decoder_input_ids,
    T5        T5ForConditionalGeneration       t5.T5Graph               decoder_attention_mask)
                                                                        -> [B, T_dec, V]
    BERT      BertModel                        EncoderOnlyModel       g(ids, attention_mask) -> [B, T, C]

Decoder-only and seq2seq models also have ``g.generate(input_ids, attention_mask=...,
max_new_tokens=n, num_beams=k)``, token-identical to ``generate(do_sample=False)`` (see
:mod:`gnn_attention.pretrained.generation`). The returned model is in eval mode, on the device and
in the dtype of the given one, with copies of its weights (no tensor is shared).
"""
from __future__ import annotations

import json
from pathlib import Path

from torch import nn

from gnn_attention.models import EncoderOnlyModel
from gnn_attention.pretrained.bart import from_hf_bart
from gnn_attention.pretrained.bert import bert_config_from_dict, bert_state_dict
from gnn_attention.pretrained.gpt2 import from_hf_gpt2
from gnn_attention.pretrained.marian import from_hf_marian
from gnn_attention.pretrained.t5 import from_hf_t5


def from_hf_bert(hf_model) -> EncoderOnlyModel:
    """An :class:`EncoderOnlyModel` with a copy of a ``BertModel``'s weights (eval mode); the
    pooler is not part of the encoder and is dropped (as :func:`~.bert.load_bert` does)."""
    config = bert_config_from_dict(hf_model.config.to_dict(), type(hf_model).__name__)
    state = {k: v for k, v in hf_model.state_dict().items()
             if k != "embeddings.token_type_ids"}  # a constant all-zeros buffer, not a weight
    p = next(hf_model.parameters())
    model = EncoderOnlyModel(config).to(device=p.device, dtype=p.dtype)  # cast, then copy
    model.load_state_dict(bert_state_dict(state, config.num_layers), strict=True)
    return model.eval()


FAMILIES = {
    "GPT2LMHeadModel": from_hf_gpt2,
    "BartForConditionalGeneration": from_hf_bart,
    "MarianMTModel": from_hf_marian,
    "T5ForConditionalGeneration": from_hf_t5,
    "BertModel": from_hf_bert,
}


def from_transformers(hf_model) -> nn.Module:
    """The graph model of an instantiated ``transformers`` model (a class of :data:`FAMILIES`).

    Raises:
        TypeError: the model's class is not one of :data:`FAMILIES` (subclasses are accepted).
    """
    for cls in type(hf_model).__mro__:
        if cls.__name__ in FAMILIES:
            return FAMILIES[cls.__name__](hf_model)
    raise TypeError(f"{type(hf_model).__name__} has no graph model; supported: "
                    f"{', '.join(FAMILIES)}")


def from_pretrained(path, dtype=None) -> nn.Module:
    """The graph model of a local ``transformers`` checkpoint directory (``config.json`` and
    ``model.safetensors``), read offline; ``dtype`` (e.g. ``torch.float64``) casts it first.

    Raises:
        FileNotFoundError: no ``config.json`` in ``path``.
        TypeError: its ``architectures`` entry is not one of :data:`FAMILIES`.
    """
    return load_local(path, dtype)[1]


def load_local(path, dtype=None):
    """``(hf_model, graph_model)`` of a local checkpoint directory, both in eval mode (the pair
    :func:`max_difference` compares); raises as :func:`from_pretrained`."""
    import transformers

    path = Path(path)
    config = path / "config.json"
    if not config.is_file():
        raise FileNotFoundError(f"{path} is not a checkpoint directory: no config.json")
    names = json.loads(config.read_text()).get("architectures") or []
    known = [n for n in names if n in FAMILIES]
    if not known:
        raise TypeError(f"{config}: architectures {names} have no graph model; supported: "
                        f"{', '.join(FAMILIES)}")
    hf_model = getattr(transformers, known[0]).from_pretrained(str(path), local_files_only=True)
    if dtype is not None:
        hf_model = hf_model.to(dtype)
    hf_model = hf_model.eval()
    return hf_model, from_transformers(hf_model)


def max_difference(hf_model, graph_model, input_ids, attention_mask=None, **decoder) -> float:
    """The equivalence check: max |Δ| between the two models' outputs (logits, or the last hidden
    state of an encoder) over the valid positions only (padded positions are no nodes).

    ``decoder``: ``decoder_input_ids`` and ``decoder_attention_mask`` for a seq2seq pair.
    """
    import torch

    with torch.no_grad():
        theirs = hf_model(input_ids, attention_mask=attention_mask, **decoder)
        ours = graph_model(input_ids, attention_mask=attention_mask, **decoder)
    theirs = theirs.logits if hasattr(theirs, "logits") else theirs.last_hidden_state
    rows = decoder.get("decoder_input_ids", input_ids)
    mask = decoder.get("decoder_attention_mask", attention_mask) if "decoder_input_ids" in \
        decoder else attention_mask
    mask = torch.ones_like(rows, dtype=torch.bool) if mask is None else mask.bool()
    return float((theirs - ours)[mask].abs().max()) if bool(mask.any()) else 0.0
