"""GPT-2 on a causal token graph against transformers' GPT2LMHeadModel: logits with right and left
padding (float32 and float64), greedy and beam decodes, KV-cache steps against recomputation, and
planted bugs the equivalence check must catch."""
import pytest
import torch

transformers = pytest.importorskip("transformers")

from gnn_attention.graphs import full
from gnn_attention.pretrained import gpt2, max_difference
from gnn_attention.pretrained.gpt2 import GPT2Graph, from_hf_gpt2
from gnn_attention.pretrained.hf import from_transformers

V, EOS = 101, 7
TOL = {torch.float32: 1e-4, torch.float64: 1e-9}


def tiny_gpt2(dtype=torch.float32, seed=0):
    torch.manual_seed(seed)
    cfg = transformers.GPT2Config(vocab_size=V, n_positions=40, n_embd=33, n_layer=2, n_head=3,
                                  eos_token_id=EOS, bos_token_id=EOS, pad_token_id=EOS)
    hf = transformers.GPT2LMHeadModel(cfg).eval()
    with torch.no_grad():  # larger than the 0.02 init, so that every weight shows in the logits
        for p in hf.parameters():
            p.normal_(0, 0.3)
    return hf.to(dtype)


def batch(B=3, T=7, seed=1):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, V, (B, T), generator=g)
    mask = torch.ones(B, T, dtype=torch.long)
    mask[1, 5:], mask[2, 2:] = 0, 0                       # right padding: lengths 7, 5, 2
    return ids, mask


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_logits_match_with_right_padding(dtype):
    hf = tiny_gpt2(dtype)
    g = from_transformers(hf)
    assert isinstance(g, GPT2Graph) and next(g.parameters()).dtype == dtype
    ids, mask = batch()
    assert max_difference(hf, g, ids, mask) <= TOL[dtype]


def test_logits_match_with_left_padding_and_position_ids():
    hf, (ids, mask) = tiny_gpt2(), batch()
    g, left = from_hf_gpt2(hf), mask.flip(1)
    pos = (left.cumsum(1) - 1).clamp_min(0)               # what generate() passes
    with torch.no_grad():
        a = hf(ids, attention_mask=left, position_ids=pos).logits
        b = g(ids, attention_mask=left, position_ids=pos)
    assert (a - b)[left.bool()].abs().max() <= 1e-4
    assert max_difference(hf, g, ids, left) <= 1e-4        # padded column positions, as HF


@pytest.mark.parametrize("num_beams", [1, 3])
def test_generate_is_token_identical(num_beams):
    hf, (ids, mask) = tiny_gpt2(), batch()
    g, left = from_hf_gpt2(hf), mask.flip(1)               # HF decodes left-padded prompts
    theirs = hf.generate(ids, attention_mask=left, max_new_tokens=9, do_sample=False,
                         num_beams=num_beams)
    ours = g.generate(ids, attention_mask=left, max_new_tokens=9, num_beams=num_beams)
    assert torch.equal(ours, theirs)


def test_kv_cache_steps_equal_recomputation():
    hf, (ids, mask) = tiny_gpt2(torch.float64), batch()
    g, left = from_hf_gpt2(hf), mask.flip(1)
    logits, cache = g.prefill(ids, left)
    seq, m = ids, left
    for _ in range(4):
        token = logits.argmax(-1)
        seq, m = torch.cat([seq, token[:, None]], 1), torch.cat([m, torch.ones_like(m[:, :1])], 1)
        logits, cache = g.decode_step(token, cache)
        pos = (m.cumsum(1) - 1).clamp_min(0)
        full_logits = g(seq, attention_mask=m, position_ids=pos)[:, -1]
        assert (logits - full_logits).abs().max() <= 1e-9
    assert cache.lengths.tolist() == (left.sum(1) + 4).tolist()


def test_planted_bug_non_causal_graph_is_caught(monkeypatch):
    hf, (ids, mask) = tiny_gpt2(), batch()
    g = from_hf_gpt2(hf)
    assert max_difference(hf, g, ids, mask) <= 1e-4
    monkeypatch.setattr(gpt2, "causal", lambda lengths, device=None: full(lengths, device=device))
    assert max_difference(hf, g, ids, mask) > 1e-3  # ten times the tolerance: detected


def test_planted_bug_padding_left_in_is_caught():
    hf, (ids, mask) = tiny_gpt2(), batch()
    g, left = from_hf_gpt2(hf), mask.flip(1)
    with torch.no_grad():  # padding kept as tokens: the valid rows see the padding's keys
        wrong = g(ids, attention_mask=torch.ones_like(left))
        a = hf(ids, attention_mask=left).logits
    assert (a - wrong)[left.bool()].abs().max() > 1e-3  # ten times the tolerance: detected


def test_bad_inputs_raise_before_computing():
    g = from_hf_gpt2(tiny_gpt2())
    ids, mask = batch()
    with pytest.raises(ValueError, match="shape"):
        g(ids, attention_mask=mask[:, :3])
    with pytest.raises(ValueError, match=r"\[0, 101\)"):
        g(ids + V)
    with pytest.raises(ValueError, match="0 \\(padding\\) and 1"):
        g(ids, attention_mask=mask * 2)
    with pytest.raises(ValueError, match="positions"):
        g(torch.zeros(1, 41, dtype=torch.long))
    with pytest.raises(ValueError, match="max_new_tokens"):
        g.generate(ids, max_new_tokens=0)


@pytest.mark.parametrize("num_beams", [1, 3])
def test_generate_with_sequences_ending_early(num_beams):
    """A vocabulary of 11 makes EOS frequent: sequences end mid-way (greedy pads them), finished
    beam hypotheses compete with running ones, and transformers' fill rule applies (pad id 0 is
    falsy, so EOS fills)."""
    torch.manual_seed(3)
    cfg = transformers.GPT2Config(vocab_size=11, n_positions=40, n_embd=33, n_layer=2, n_head=3,
                                  eos_token_id=3, bos_token_id=3, pad_token_id=0)
    hf = transformers.GPT2LMHeadModel(cfg).eval()
    with torch.no_grad():
        for p in hf.parameters():
            p.normal_(0, 0.15)
    ids = torch.randint(4, 11, (4, 5), generator=torch.Generator().manual_seed(3))
    mask = torch.ones_like(ids)
    mask[1, :2], mask[3, :3] = 0, 0
    theirs = hf.generate(ids, attention_mask=mask, max_new_tokens=10, do_sample=False,
                         num_beams=num_beams)
    assert bool((theirs[:, 5:-1] == 3).any())              # some sequence ended before the limit
    ours = from_hf_gpt2(hf).generate(ids, attention_mask=mask, max_new_tokens=10,
                                     num_beams=num_beams)
    assert torch.equal(ours, theirs)
