"""BART on three token graphs (full encoder, causal decoder, bipartite cross) against
transformers' BartForConditionalGeneration: logits with padding on both sides (float32, float64),
greedy and beam decodes, cache steps, and the planted bugs (offset dropped, padding left in,
non-causal decoder graph)."""
import pytest
import torch

transformers = pytest.importorskip("transformers")

from gnn_attention.graphs import full
from gnn_attention.pretrained import bart, max_difference
from gnn_attention.pretrained.bart import BartGraph, from_hf_bart
from gnn_attention.pretrained.hf import from_transformers

V = 101
TOL = {torch.float32: 1e-4, torch.float64: 1e-9}


def tiny_bart(dtype=torch.float32, seed=0):
    torch.manual_seed(seed)
    cfg = transformers.BartConfig(vocab_size=V, d_model=33, encoder_layers=2, decoder_layers=2,
                                  encoder_attention_heads=3, decoder_attention_heads=3,
                                  encoder_ffn_dim=40, decoder_ffn_dim=40,
                                  max_position_embeddings=40, forced_eos_token_id=None)
    hf = transformers.BartForConditionalGeneration(cfg).eval()
    with torch.no_grad():
        for p in hf.parameters():
            p.normal_(0, 0.3)
        hf.final_logits_bias.normal_(0, 0.3)  # a buffer: checked as well
    return hf.to(dtype)


def seq2seq_batch(B=3, S=7, T=5, seed=1):
    g = torch.Generator().manual_seed(seed)
    ids, dec = torch.randint(3, V, (B, S), generator=g), torch.randint(3, V, (B, T), generator=g)
    mask, dmask = torch.ones(B, S, dtype=torch.long), torch.ones(B, T, dtype=torch.long)
    mask[1, 5:], mask[2, 2:], dmask[0, 3:], dmask[2, 1:] = 0, 0, 0, 0
    return ids, mask, {"decoder_input_ids": dec, "decoder_attention_mask": dmask}


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_logits_match_with_padding(dtype):
    hf = tiny_bart(dtype)
    g = from_transformers(hf)
    assert isinstance(g, BartGraph) and next(g.parameters()).dtype == dtype
    ids, mask, dec = seq2seq_batch()
    assert max_difference(hf, g, ids, mask, **dec) <= TOL[dtype]
    left = mask.flip(1)  # positions are padded column indices on either side, as in BART
    assert max_difference(hf, g, ids, left, **dec) <= TOL[dtype]


@pytest.mark.parametrize("num_beams", [1, 3])
def test_generate_is_token_identical(num_beams):
    hf, (ids, mask, _) = tiny_bart(), seq2seq_batch()
    g = from_hf_bart(hf)
    theirs = hf.generate(ids, attention_mask=mask, max_new_tokens=9, do_sample=False,
                         num_beams=num_beams)
    assert torch.equal(g.generate(ids, attention_mask=mask, max_new_tokens=9,
                                  num_beams=num_beams), theirs)


def test_cache_steps_equal_recomputation():
    hf, (ids, mask, _) = tiny_bart(torch.float64), seq2seq_batch()
    g = from_hf_bart(hf)
    logits, cache = g.prefill(ids, mask)
    dec = torch.full((3, 1), g.config.decoder_start_token_id)
    for _ in range(4):
        assert (logits - g(ids, mask, decoder_input_ids=dec)[:, -1]).abs().max() <= 1e-9
        token = logits.argmax(-1)
        dec = torch.cat([dec, token[:, None]], 1)
        logits, cache = g.decode_step(token, cache)


def test_planted_bug_position_offset_dropped_is_caught():
    hf, (ids, mask, dec) = tiny_bart(), seq2seq_batch()
    g = from_hf_bart(hf)
    g.encoder_embed.offset = g.decoder_embed.offset = 0
    assert max_difference(hf, g, ids, mask, **dec) > 1e-3  # ten times the tolerance: detected


def test_planted_bug_padding_left_in_is_caught():
    hf, (ids, mask, dec) = tiny_bart(), seq2seq_batch()
    g = from_hf_bart(hf)
    with torch.no_grad():
        right = hf(ids, attention_mask=mask, **dec).logits
        wrong = g(ids, attention_mask=torch.ones_like(mask), **dec)
    valid = dec["decoder_attention_mask"].bool()
    assert (right - wrong)[valid].abs().max() > 1e-3  # ten times the tolerance: detected


def test_planted_bug_non_causal_decoder_is_caught(monkeypatch):
    hf, (ids, mask, dec) = tiny_bart(), seq2seq_batch()
    g = from_hf_bart(hf)
    monkeypatch.setattr(bart, "causal", lambda lengths, device=None: full(lengths, device=device))
    assert max_difference(hf, g, ids, mask, **dec) > 1e-3  # ten times the tolerance: detected


def test_missing_decoder_inputs_and_row_mismatch_raise():
    g = from_hf_bart(tiny_bart())
    ids, mask, dec = seq2seq_batch()
    with pytest.raises(ValueError, match="decoder_input_ids are required"):
        g(ids, mask)
    with pytest.raises(ValueError, match="target rows"):
        g(ids, mask, decoder_input_ids=dec["decoder_input_ids"][:2])
