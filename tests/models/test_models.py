"""Models: the seq2seq graph model against its dense nn.Transformer twin (outputs and gradients),
cross-attention maps, no leakage between sentences; encoder-only permutation equivariance and
pooling; decoder-only causality for every kind of positional information."""
import pytest
import torch

from gnn_attention.models import (
    DecoderOnlyConfig,
    DecoderOnlyModel,
    DenseSeq2SeqModel,
    EncoderOnlyConfig,
    EncoderOnlyModel,
    Seq2SeqConfig,
    Seq2SeqModel,
    pool,
)

pytestmark = pytest.mark.usefixtures("one_thread")  # see tests/conftest.py


B, S, T, H, C, F, V_SRC, V_TGT = 3, 7, 5, 3, 33, 17, 13, 11
OUT_TOL, GRAD_TOL = 1e-5, 1e-4


def seq2seq(seed=0, **kw):
    torch.manual_seed(seed)
    cfg = dict(d_model=C, nhead=H, num_encoder_layers=2, num_decoder_layers=2,
               dim_feedforward=F, dropout=0.0, max_len=16)
    cfg.update(kw)
    return Seq2SeqModel(Seq2SeqConfig(V_SRC, V_TGT, **cfg))


def batch(seed=1):
    g = torch.Generator().manual_seed(seed)
    src = torch.randint(1, V_SRC, (B, S), generator=g)
    tgt = torch.randint(1, V_TGT, (B, T), generator=g)
    return src, torch.tensor([7, 4, 2]), tgt, torch.tensor([5, 3, 1])


@pytest.mark.parametrize("positional", ["sinusoidal", "learned"])
@pytest.mark.parametrize("norm_first,tie", [(False, False), (True, True)])
def test_seq2seq_matches_dense_twin_forward_and_backward(positional, norm_first, tie):
    model = seq2seq(positional=positional, norm_first=norm_first, tie_embeddings=tie)
    dense = model.to_dense()
    assert isinstance(dense, DenseSeq2SeqModel)
    assert isinstance(dense.transformer, torch.nn.Transformer)
    src, sl, tgt, tl = batch()
    out, ref = model(src, sl, tgt, tl), dense(src, sl, tgt, tl)
    assert out.shape == (B, T, V_TGT)
    assert (out - ref).abs().max() <= OUT_TOL
    assert (out[1, 3:] == 0).all() and (out[2, 1:] == 0).all()  # padded positions: zeros
    w = torch.randn(B, T, V_TGT)
    (out * w).sum().backward()
    (ref * w).sum().backward()
    grads = dict(dense.named_parameters())
    for name, p in model.named_parameters():
        assert (p.grad - grads[name].grad).abs().max() <= GRAD_TOL, name
    dense.eval()
    model.eval()
    assert (model(src, sl, tgt, tl) - dense(src, sl, tgt, tl)).abs().max() <= OUT_TOL


def test_dense_twin_keeps_dtype_and_matches_in_float64():
    model = seq2seq().double()
    dense = model.to_dense()
    assert all(p.dtype == torch.float64 for p in dense.parameters())
    src, sl, tgt, tl = batch()
    assert (model(src, sl, tgt, tl) - dense(src, sl, tgt, tl)).abs().max() <= 1e-12


def test_tied_embeddings_share_one_tensor():
    model = seq2seq(tie_embeddings=True)
    assert model.out_proj.weight is model.tgt_embed.weight
    assert seq2seq().out_proj.weight is not seq2seq().tgt_embed.weight


def test_padding_content_and_other_sentences_do_not_leak():
    model = seq2seq().eval()
    src, sl, tgt, tl = batch()
    out = model(src, sl, tgt, tl)
    src2, tgt2 = src.clone(), tgt.clone()
    src2[1, 4:], tgt2[1, 3:] = 5, 7  # change padding only
    src2[2, :2] = (src2[2, :2] + 1) % V_SRC  # change sentence 2 entirely
    out2 = model(src2, sl, tgt2, tl)
    assert torch.equal(out[:2], out2[:2])
    assert not torch.allclose(out[2, 0], out2[2, 0])


def test_cross_attention_maps():
    model = seq2seq().eval()
    src, sl, tgt, tl = batch()
    logits, maps = model(src, sl, tgt, tl, return_cross_attention=True)
    assert torch.equal(logits, model(src, sl, tgt, tl)) and len(maps) == 2
    for a in maps:
        assert a.shape == (B, H, T, S)
        for b in range(B):
            ones = torch.ones(H, int(tl[b]))
            assert torch.allclose(a[b, :, : tl[b]].sum(-1), ones, atol=1e-6)
            assert (a[b, :, :, sl[b]:] == 0).all() and (a[b, :, tl[b]:] == 0).all()
    # The first layer's map is softmax(q k^T / sqrt(D)) of its cross-attention inputs.
    layer = model.transformer.decoder.layers[0]
    memory = model.encode(src, sl)
    x = model.embed(tgt, "tgt")
    future = torch.ones(T, T).triu(1).bool()  # True = blocked
    sa = layer.self_attn.to_torch()
    h = layer.norm1(x + sa(x, x, x, attn_mask=future, need_weights=False)[0])
    mha = layer.multihead_attn.to_torch()
    _, ref = mha(h, memory, memory, key_padding_mask=torch.arange(S) >= sl.view(-1, 1),
                 average_attn_weights=False)
    assert (maps[0][0, :, :5] - ref[0, :, :5]).abs().max() <= OUT_TOL


def test_seq2seq_clear_errors():
    model = seq2seq()
    src, sl, tgt, tl = batch()
    with pytest.raises(ValueError, match="src_lengths must lie in"):
        model(src, torch.tensor([8, 1, 1]), tgt, tl)
    with pytest.raises(ValueError, match=r"tgt_in ids must lie in \[0, 11\)"):
        model(src, sl, tgt + V_TGT, tl)
    with pytest.raises(TypeError, match="integer token ids"):
        model(src.float(), sl, tgt, tl)
    with pytest.raises(ValueError, match="positional"):
        Seq2SeqConfig(5, 5, d_model=C, nhead=H, positional="rotary")
    learned = seq2seq(positional="learned")
    with pytest.raises(ValueError, match="max_len=16"):  # no silent wrap-around of positions
        learned(torch.randint(1, V_SRC, (1, 17)), torch.tensor([17]), tgt[:1], tl[:1])


# -- encoder-only ------------------------------------------------------------------------------

def encoder_only(seed=0, **kw):
    torch.manual_seed(seed)
    cfg = dict(vocab_size=29, d_model=C, nhead=H, num_layers=2, dim_feedforward=F, max_len=16,
               dropout=0.0)
    cfg.update(kw)
    return EncoderOnlyModel(EncoderOnlyConfig(**cfg)).eval()


@pytest.mark.parametrize("norm_first", [False, True])
def test_encoder_only_node_permutation_equivariance(norm_first):
    model = encoder_only(norm_first=norm_first)
    g = torch.Generator().manual_seed(2)
    ids, types = torch.randint(0, 29, (2, 7), generator=g), torch.randint(0, 2, (2, 7), generator=g)
    mask = torch.tensor([[1, 1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 0, 0, 0]])
    pos = torch.arange(7).expand(2, 7)
    h = model(ids, mask, types, position_ids=pos)
    perm = torch.randperm(7, generator=g)  # moves padding into the middle too
    hp = model(ids[:, perm], mask[:, perm], types[:, perm], position_ids=pos[:, perm])
    valid = mask.bool()
    assert (hp - h[:, perm])[valid[:, perm]].abs().max() <= OUT_TOL
    assert (hp[~valid[:, perm]] == 0).all()
    # Without carrying the positions along, order matters: the check above is not vacuous.
    assert (model(ids[:, perm], mask[:, perm], types[:, perm]) - h[:, perm]).abs().max() > 1e-3


def test_encoder_only_returns_hidden_states_and_edge_attention():
    model = encoder_only()
    ids = torch.randint(0, 29, (2, 5))
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]])
    h, hidden, attn = model(ids, mask, return_attention=True)
    assert torch.equal(h, model(ids, mask)) and torch.equal(hidden[-1], h) and len(hidden) == 3
    edge_index, alpha = attn[0]
    assert edge_index.shape == (2, 25 + 9) and alpha.shape == (34, H)  # complete graphs 5x5, 3x3
    sums = torch.zeros(8, H).index_add(0, edge_index[1], alpha)
    assert torch.allclose(sums, torch.ones(8, H), atol=1e-6)
    with pytest.raises(ValueError, match="1 \\(token\\) and 0"):
        model(ids, mask * 2)
    with pytest.raises(ValueError, match="attention_mask must have shape"):
        model(ids, mask[:, :4])


def test_pooling():
    hidden = torch.arange(2 * 3 * 2, dtype=torch.float32).view(2, 3, 2)
    mask = torch.tensor([[1, 1, 0], [0, 0, 0]])
    mean = pool(hidden, mask)
    assert mean[0].tolist() == [1.0, 2.0] and mean[1].tolist() == [0.0, 0.0]  # empty: 0, not NaN
    assert torch.equal(pool(hidden, mode="cls"), hidden[:, 0])
    unit = pool(hidden, mask, normalize=True)
    assert torch.allclose(unit[0].norm(), torch.tensor(1.0)) and not unit.isnan().any()
    with pytest.raises(ValueError, match="mode"):
        pool(hidden, mask, mode="max")


# -- decoder-only ------------------------------------------------------------------------------

@pytest.mark.parametrize("positional", ["learned", "sinusoidal", "rotary", "alibi", "t5"])
def test_decoder_only_causality(positional):
    torch.manual_seed(0)
    model = DecoderOnlyModel(DecoderOnlyConfig(vocab_size=19, d_model=36, nhead=3, num_layers=2,
                                               dim_feedforward=F, dropout=0.0,
                                               positional=positional)).eval()
    x = torch.randint(0, 19, (2, 7))
    logits = model(x)
    assert logits.shape == (2, 7, 19)
    for p in (0, 3, 6):
        y = x.clone()
        y[:, p] = (y[:, p] + 1) % 19
        changed = model(y)
        assert torch.equal(changed[:, :p], logits[:, :p])  # the past never sees the future
        assert (changed[:, p] - logits[:, p]).abs().max() > 1e-4  # and the edit does matter
    # A shorter sequence in a padded batch computes what it computes alone.
    short = model(x, torch.tensor([7, 4]))
    assert (short[1, :4] - model(x[1:, :4])[0]).abs().max() <= OUT_TOL and (short[1, 4:] == 0).all()


def test_decoder_only_positions_matter_and_config_errors():
    torch.manual_seed(0)
    model = DecoderOnlyModel(DecoderOnlyConfig(vocab_size=19, d_model=36, nhead=3, num_layers=1,
                                               dim_feedforward=F, dropout=0.0,
                                               positional="rotary")).eval()

    x = torch.tensor([[3, 5, 3, 5]])
    out = model(x)
    assert (out[0, 1] - out[0, 3]).abs().max() > 1e-4  # same token, same context set, other place
    with pytest.raises(ValueError, match="positional"):
        DecoderOnlyConfig(vocab_size=5, positional="none")
    with pytest.raises(ValueError, match="lengths must lie"):
        model(x, torch.tensor([5]))
