"""Decoding: incremental steps equal full recomputation at every step, greedy and beam search equal
the dense twin token for token, beam search is exact when the beam covers everything, and a step
costs O(T) edges, not O(T^2)."""
import itertools

import pytest
import torch

import gnn_attention.attention.pyg_layer as conv  # where the layer calls graph_attention
from gnn_attention.models import Seq2SeqConfig, Seq2SeqModel
from gnn_attention.models.decoding import beam_search, gnmt_length_penalty, greedy_decode

pytestmark = pytest.mark.usefixtures("one_thread")  # see tests/conftest.py


B, S, H, C, F, V_SRC, V_TGT = 4, 7, 3, 33, 17, 13, 11
BOS, EOS = 1, 2
STEP_TOL = 1e-5


def model(seed=0, eos_bias=0.0, vocab=V_TGT, **kw):
    """A random model; ``eos_bias`` makes EOS likely so that outputs have varied lengths."""
    torch.manual_seed(seed)
    cfg = dict(d_model=C, nhead=H, num_encoder_layers=2, num_decoder_layers=2,
               dim_feedforward=F, dropout=0.0, max_len=32)
    cfg.update(kw)
    m = Seq2SeqModel(Seq2SeqConfig(V_SRC, vocab, **cfg)).eval()
    with torch.no_grad():
        m.out_proj.bias[EOS] += eos_bias
    return m


def source(seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(3, V_SRC, (B, S), generator=g), torch.tensor([7, 4, 2, 5])


@pytest.mark.parametrize("kw", [dict(), dict(norm_first=True, positional="learned")])
def test_incremental_equals_recomputation_at_every_step(kw):
    m = model(**kw)
    src, sl = source()
    tgt = torch.randint(0, V_TGT, (B, 9), generator=torch.Generator().manual_seed(5))
    memory = m.encode(src, sl)
    full = m.decode(memory, sl, tgt, torch.full((B,), 9))
    cache = m.init_cache(memory, sl)
    for t in range(9):
        logits, cache = m.decode_step(tgt[:, t], cache)
        assert cache.length == t + 1 and cache.keys[0].shape == (B, t + 1, H, C // H)
        assert (logits - full[:, t]).abs().max() <= STEP_TOL, t


def test_cache_reorder_follows_beams():
    m = model()
    src, sl = source()
    tgt = torch.randint(0, V_TGT, (B, 6), generator=torch.Generator().manual_seed(6))
    cache = m.init_cache(m.encode(src, sl), sl)
    for t in range(3):
        _, cache = m.decode_step(tgt[:, t], cache)
    index = torch.tensor([2, 2, 0, 3])  # sequences swap and duplicate, as beams do
    cache = cache.reorder(index)
    re_src, re_sl, re_tgt = src[index], sl[index], tgt[index]
    full = m(re_src, re_sl, re_tgt, torch.full((B,), 6))
    for t in range(3, 6):
        logits, cache = m.decode_step(re_tgt[:, t], cache)
        assert (logits - full[:, t]).abs().max() <= STEP_TOL


def test_cache_is_a_value_not_module_state():
    m = model()
    src, sl = source()
    before = {k: v.clone() for k, v in m.state_dict().items()}
    cache0 = m.init_cache(m.encode(src, sl), sl)
    tok = torch.full((B,), BOS)
    a, cache1 = m.decode_step(tok, cache0)
    b, _ = m.decode_step(tok, cache0)  # the old cache is untouched: same result again
    assert torch.equal(a, b) and cache0.length == 0 and cache1.length == 1
    assert all(torch.equal(before[k], v) for k, v in m.state_dict().items())


def test_step_cost_is_linear_in_length(monkeypatch):
    """The self-attention graph of step L has L + 1 edges per sequence (O(T) per step)."""
    m = model()
    src, sl = source()
    edges = []
    real = conv.graph_attention

    def spy(q, k, v, graph, **kw):
        edges.append((graph.pattern.name, graph.num_edges, q.size(0)))
        return real(q, k, v, graph, **kw)

    memory = m.encode(src, sl)  # the encoder's calls are not counted
    monkeypatch.setattr(conv, "graph_attention", spy)
    cache = m.init_cache(memory, sl)
    for t in range(5):
        _, cache = m.decode_step(torch.full((B,), BOS), cache)
    self_edges = [e for name, e, n in edges if name == "causal"]
    assert self_edges == [B * (t + 1) for t in range(5) for _ in range(2)]  # 2 layers per step
    cross_edges = {e for name, e, n in edges if name == "cross_padded"}
    assert cross_edges == {int(sl.sum())} and all(n == B for _, _, n in edges)


def test_greedy_equals_dense_twin_token_for_token():
    m = model(eos_bias=2.0)
    src, sl = source()
    ours = greedy_decode(m, src, sl, BOS, EOS, max_len=20)
    dense = greedy_decode(m.to_dense().eval(), src, sl, BOS, EOS, max_len=20, incremental=False)
    assert ours == dense
    assert ours == greedy_decode(m, src, sl, BOS, EOS, max_len=20, incremental=False)
    assert len({len(o) for o in ours}) > 1  # EOS did stop some sentences: not a vacuous check
    assert all(EOS not in o and len(o) <= 20 for o in ours)
    assert [len(o) for o in greedy_decode(m, src, sl, BOS, None, max_len=6)] == [6] * B


def test_beam_search_equals_dense_twin_and_beam_one_is_greedy():
    m = model(eos_bias=2.0)
    src, sl = source()
    assert beam_search(m, src, sl, BOS, EOS, 20, beam_size=1) == greedy_decode(m, src, sl, BOS,
                                                                               EOS, 20)
    for early_stop in (True, False):
        ours = beam_search(m, src, sl, BOS, EOS, 20, beam_size=4, early_stop=early_stop)
        dense = beam_search(m.to_dense().eval(), src, sl, BOS, EOS, 20, beam_size=4,
                            early_stop=early_stop, incremental=False)
        assert ours == dense


@torch.no_grad()
def _normalized_score(m, src, sl, hyp, finished, alpha):
    tgt = torch.tensor([[BOS] + hyp])
    logp = torch.log_softmax(m(src, sl, tgt, torch.tensor([tgt.size(1)]))[0], -1)
    target = hyp + [EOS] if finished else hyp
    total = sum(float(logp[i, tok]) for i, tok in enumerate(target))
    return total / gnmt_length_penalty(len(target), alpha)


@pytest.mark.parametrize("alpha", [0.0, 0.6, 1.5])
def test_exhaustive_beam_search_finds_the_best_hypothesis(alpha):
    """With a beam wider than the whole search space and no early stop, beam search must return
    the best of all hypotheses up to max_len under log P / lp (checked by enumeration)."""
    V, max_len = 5, 3
    m = model(seed=3, eos_bias=1.0, vocab=V)
    words = [t for t in range(V) if t != EOS]
    # Finished hypotheses: n - 1 words then EOS (n <= max_len); unfinished: max_len words.
    hyps = [(list(p), True) for n in range(1, max_len + 1)
            for p in itertools.product(words, repeat=n - 1)]
    hyps += [(list(p), False) for p in itertools.product(words, repeat=max_len)]
    src, sl = source()
    for b in range(B):
        one, one_len = src[b:b + 1], sl[b:b + 1]
        best = max(hyps, key=lambda h: _normalized_score(m, one, one_len, h[0], h[1], alpha))
        got = beam_search(m, one, one_len, BOS, EOS, max_len, beam_size=64,
                          length_penalty=alpha, early_stop=False)
        assert got == [best[0]]


def test_no_early_stop_never_scores_worse_and_sometimes_better():
    """Searching on after K hypotheses have finished can only add candidates; with the exact
    bound it stops once none can win. Seed, bias and alpha are chosen so that the two differ
    (asserted below), which exercises the bound."""
    alpha, max_len = 2.0, 10
    m = model(seed=0, eos_bias=2.0)
    src, sl = source(0)
    early = beam_search(m, src, sl, BOS, EOS, max_len, beam_size=2, length_penalty=alpha)
    full = beam_search(m, src, sl, BOS, EOS, max_len, beam_size=2, length_penalty=alpha,
                       early_stop=False)

    def score(b, hyp):
        return _normalized_score(m, src[b:b + 1], sl[b:b + 1], hyp, len(hyp) < max_len, alpha)

    gains = [score(b, full[b]) - score(b, early[b]) for b in range(B)]
    assert min(gains) >= -1e-6 and max(gains) > 1e-3


def test_decoding_clear_errors():
    m = model()
    src, sl = source()
    with pytest.raises(TypeError, match="incremental=False"):
        greedy_decode(m.to_dense(), src, sl, BOS, EOS, 5)
    with pytest.raises(ValueError, match="max_len"):
        greedy_decode(m, src, sl, BOS, EOS, 0)
    with pytest.raises(ValueError, match="beam_size"):
        beam_search(m, src, sl, BOS, EOS, 5, beam_size=0)
    with pytest.raises(ValueError, match="src_lengths"):
        greedy_decode(m, src, sl[:2], BOS, EOS, 5)
    learned = model(positional="learned", max_len=4)
    with pytest.raises(ValueError, match="max_len=4"):  # position 4 has no learned vector
        greedy_decode(learned, src, sl, BOS, None, 5)
