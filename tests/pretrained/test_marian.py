"""Marian (BART's graphs with a fixed sinusoidal table, no offset, scaled embeddings, swish)
against transformers' MarianMTModel: the table itself, logits (float32, float64), decodes."""
import pytest
import torch

transformers = pytest.importorskip("transformers")

from gnn_attention.pretrained import max_difference
from gnn_attention.pretrained.hf import from_transformers
from gnn_attention.pretrained.marian import from_hf_marian, sinusoidal_table

V = 101
TOL = {torch.float32: 1e-4, torch.float64: 1e-9}


def tiny_marian(dtype=torch.float32, seed=0):
    torch.manual_seed(seed)
    cfg = transformers.MarianConfig(vocab_size=V, d_model=34, encoder_layers=2, decoder_layers=2,
                                    encoder_attention_heads=2, decoder_attention_heads=2,
                                    encoder_ffn_dim=40, decoder_ffn_dim=40,
                                    max_position_embeddings=40, pad_token_id=V - 1,
                                    decoder_start_token_id=V - 1, eos_token_id=0,
                                    forced_eos_token_id=None)
    hf = transformers.MarianMTModel(cfg).eval()
    with torch.no_grad():
        for name, p in hf.named_parameters():
            if "embed_positions" not in name:  # the fixed table stays sinusoidal
                p.normal_(0, 0.3)
    return hf.to(dtype)


def seq2seq_batch(B=3, S=7, T=5, seed=1):
    g = torch.Generator().manual_seed(seed)
    ids, dec = torch.randint(1, V - 1, (B, S), generator=g), torch.randint(1, V - 1, (B, T),
                                                                           generator=g)
    mask, dmask = torch.ones(B, S, dtype=torch.long), torch.ones(B, T, dtype=torch.long)
    mask[1, 5:], mask[2, 2:], dmask[0, 3:] = 0, 0, 0
    return ids, mask, {"decoder_input_ids": dec, "decoder_attention_mask": dmask}


@pytest.mark.parametrize("C", [34, 11])
def test_sinusoidal_table_is_marians(C):
    hf_table = transformers.models.marian.modeling_marian.MarianSinusoidalPositionalEmbedding(
        13, C).create_weight()
    assert torch.equal(sinusoidal_table(13, C), hf_table)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_logits_match_with_padding(dtype):
    hf = tiny_marian(dtype)
    g = from_transformers(hf)
    ids, mask, dec = seq2seq_batch()
    assert max_difference(hf, g, ids, mask, **dec) <= TOL[dtype]


@pytest.mark.parametrize("num_beams", [1, 3])
def test_generate_is_token_identical(num_beams):
    hf, (ids, mask, _) = tiny_marian(), seq2seq_batch()
    g = from_hf_marian(hf)
    theirs = hf.generate(ids, attention_mask=mask, max_new_tokens=9, do_sample=False,
                         num_beams=num_beams)
    assert torch.equal(g.generate(ids, attention_mask=mask, max_new_tokens=9,
                                  num_beams=num_beams), theirs)


def test_other_position_table_is_rejected():
    hf = tiny_marian()
    with torch.no_grad():
        hf.model.encoder.embed_positions.weight.add_(0.1)
    with pytest.raises(ValueError, match="sinusoidal"):
        from_hf_marian(hf)
