"""The KV cache as a value: its graphs, its reordering and its checks (decoding itself is checked
against recomputation in test_decoding.py)."""
import pytest
import torch

from gnn_attention.models import Seq2SeqConfig, Seq2SeqModel
from gnn_attention.models.kv_cache import decoder_step, init_cache

pytestmark = pytest.mark.usefixtures("one_thread")


def _model():
    torch.manual_seed(0)
    cfg = Seq2SeqConfig(13, 11, d_model=12, nhead=3, num_encoder_layers=1, num_decoder_layers=2,
                        dim_feedforward=20, dropout=0.0)
    return Seq2SeqModel(cfg).eval()


def test_init_cache_projects_memory_once_and_masks_padding():
    m = _model()
    src, sl = torch.randint(0, 13, (3, 5)), torch.tensor([5, 2, 4])
    memory = m.encode(src, sl)
    cache = init_cache(m.transformer.decoder, memory, sl)
    assert cache.length == 0 and cache.batch_size == 3
    assert [k.shape for k in cache.memory_keys] == [(3, 5, 3, 4)] * 2
    g = cache.cross_graph  # one query per sequence over its valid memory slots only
    assert g.num_edges == int(sl.sum()) and g.num_dst == 3 and g.num_src == 15
    src_slot = g.edge_index[0] % 5
    assert bool((src_slot < sl[g.edge_index[1]]).all())


def test_step_grows_the_cache_and_reorder_selects_sequences():
    m = _model()
    src, sl = torch.randint(0, 13, (3, 5)), torch.tensor([5, 2, 4])
    cache = init_cache(m.transformer.decoder, m.encode(src, sl), sl)
    x = torch.randn(3, 12)
    with torch.no_grad():
        y, c1 = decoder_step(m.transformer.decoder, x, cache)
        _, c2 = decoder_step(m.transformer.decoder, y, c1)
    assert c2.length == 2 and [k.shape[1] for k in c2.keys] == [2, 2]
    r = c2.reorder(torch.tensor([2, 2, 0]))
    assert torch.equal(r.keys[0][0], c2.keys[0][2]) and torch.equal(r.keys[0][2], c2.keys[0][0])
    assert r.src_lengths.tolist() == [4, 4, 5] and r.cross_graph.num_edges == 13
    with pytest.raises(ValueError, match="x has 2 sequences, the cache holds 3"):
        decoder_step(m.transformer.decoder, x[:2], cache)
    with pytest.raises(ValueError, match="init_cache needs memory"):
        init_cache(m.transformer.decoder, torch.zeros(3, 12), sl)
