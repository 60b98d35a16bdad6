"""T5 on token graphs with relative-position buckets as per-head edge attributes, against
transformers' T5ForConditionalGeneration: buckets, logits (relu and gated-gelu, float32 and
float64), decodes, cache steps, and planted bugs (non-causal decoder, buckets shifted by one)."""
import pytest
import torch

transformers = pytest.importorskip("transformers")

from gnn_attention.graphs import full
from gnn_attention.pretrained import max_difference, t5
from gnn_attention.pretrained.hf import from_transformers
from gnn_attention.pretrained.t5 import T5Graph, from_hf_t5, relative_buckets

V = 101
TOL = {torch.float32: 1e-4, torch.float64: 1e-9}
T5Attention = transformers.models.t5.modeling_t5.T5Attention


def tiny_t5(dtype=torch.float32, ff="relu", seed=0):
    torch.manual_seed(seed)
    # 8 buckets up to distance 20: with 23 tokens both the exact and the logarithmic buckets occur
    cfg = transformers.T5Config(vocab_size=V, d_model=36, d_kv=11, d_ff=40, num_layers=2,
                                num_heads=3, feed_forward_proj=ff, decoder_start_token_id=0,
                                relative_attention_num_buckets=8,
                                relative_attention_max_distance=20)
    hf = transformers.T5ForConditionalGeneration(cfg).eval()
    with torch.no_grad():
        for p in hf.parameters():
            p.normal_(0, 0.3)
    return hf.to(dtype)


def seq2seq_batch(B=3, S=23, T=19, seed=1):
    g = torch.Generator().manual_seed(seed)
    ids, dec = torch.randint(2, V, (B, S), generator=g), torch.randint(2, V, (B, T), generator=g)
    mask, dmask = torch.ones(B, S, dtype=torch.long), torch.ones(B, T, dtype=torch.long)
    mask[1, 13:], mask[2, 2:], dmask[0, 3:], dmask[2, 11:] = 0, 0, 0, 0
    return ids, mask, {"decoder_input_ids": dec, "decoder_attention_mask": dmask}


@pytest.mark.parametrize("bidirectional", [True, False])
@pytest.mark.parametrize("buckets,distance", [(32, 128), (8, 20), (7, 13)])
def test_buckets_match_t5s(bidirectional, buckets, distance):
    r = torch.arange(-300, 301)
    theirs = T5Attention._relative_position_bucket(r, bidirectional=bidirectional,
                                                   num_buckets=buckets, max_distance=distance)
    assert torch.equal(relative_buckets(r, bidirectional, buckets, distance), theirs)


@pytest.mark.parametrize("ff", ["relu", "gated-gelu"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_logits_match_with_padding(dtype, ff):
    hf = tiny_t5(dtype, ff)
    g = from_transformers(hf)
    assert isinstance(g, T5Graph) and g.config.gated == (ff == "gated-gelu")
    ids, mask, dec = seq2seq_batch()
    assert max_difference(hf, g, ids, mask, **dec) <= TOL[dtype]


@pytest.mark.parametrize("num_beams", [1, 3])
def test_generate_is_token_identical(num_beams):
    hf, (ids, mask, _) = tiny_t5(ff="gated-gelu"), seq2seq_batch()
    g = from_hf_t5(hf)
    theirs = hf.generate(ids, attention_mask=mask, max_new_tokens=24, do_sample=False,
                         num_beams=num_beams)   # 24 steps: decoder distances reach the log buckets
    assert torch.equal(g.generate(ids, attention_mask=mask, max_new_tokens=24,
                                  num_beams=num_beams), theirs)


def test_cache_steps_equal_recomputation():
    hf, (ids, mask, _) = tiny_t5(torch.float64), seq2seq_batch()
    g = from_hf_t5(hf)
    logits, cache = g.prefill(ids, mask)
    dec = torch.zeros(3, 1, dtype=torch.long)
    for _ in range(12):
        assert (logits - g(ids, mask, decoder_input_ids=dec)[:, -1]).abs().max() <= 1e-9
        token = logits.argmax(-1)
        dec = torch.cat([dec, token[:, None]], 1)
        logits, cache = g.decode_step(token, cache)


def test_planted_bug_non_causal_decoder_is_caught(monkeypatch):
    hf, (ids, mask, dec) = tiny_t5(), seq2seq_batch()
    g = from_hf_t5(hf)
    monkeypatch.setattr(t5, "causal", lambda lengths, device=None: full(lengths, device=device))
    assert max_difference(hf, g, ids, mask, **dec) > 1e-3  # ten times the tolerance: detected


def test_planted_bug_buckets_shifted_by_one_is_caught(monkeypatch):
    hf, (ids, mask, dec) = tiny_t5(), seq2seq_batch()
    g = from_hf_t5(hf)
    right = relative_buckets
    monkeypatch.setattr(t5, "relative_buckets", lambda r, *a: right(r + 1, *a))
    assert max_difference(hf, g, ids, mask, **dec) > 1e-3
