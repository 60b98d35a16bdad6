"""``gnn_attention.Transformer`` and the layer drop-ins held to ``nn.Transformer*``'s contract.

Following what PyTorch checks of its modules (the ModuleInfo samples of Transformer and
TransformerEncoderLayer, the encoder/decoder calls of its translation tutorial, activations given
as callables, modes and state dicts), in our own words: every comparison copies weights into (or
from) the torch module and asks for fp32 outputs within 1e-5, float64 gradients within 1e-10.
"""
import copy
import itertools
import pickle
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from gnn_attention.models.config import LayerConfig, activation_name
from gnn_attention.models.mha import MultiheadAttention
from gnn_attention.models.torch_layers import (
    TransformerDecoder,
    TransformerDecoderLayer,
    TransformerEncoder,
    TransformerEncoderLayer,
)
from gnn_attention.models.transformer import Transformer

pytestmark = [pytest.mark.usefixtures("one_thread"),
              pytest.mark.filterwarnings("ignore:enable_nested_tensor:UserWarning")]

B, S, T, C, H, FF = 2, 7, 5, 33, 3, 13
TOL = 1e-5


def torch_model(**kw):
    torch.manual_seed(0)
    kw = {"d_model": C, "nhead": H, "num_encoder_layers": 2, "num_decoder_layers": 2,
          "dim_feedforward": FF, "dropout": 0.0, **kw}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return nn.Transformer(**kw).eval()


def data(batch_first=True, dtype=torch.float32):
    g = torch.Generator().manual_seed(1)
    src, tgt = torch.randn(B, S, C, generator=g, dtype=dtype), torch.randn(B, T, C, generator=g,
                                                                             dtype=dtype)
    return (src, tgt) if batch_first else (src.transpose(0, 1), tgt.transpose(0, 1))


def close(a, b, tol=TOL):
    return a.shape == b.shape and bool((a - b).abs().max() <= tol)


TRANSFORMER_SAMPLES = list(itertools.product([False, True], repeat=5))


@pytest.mark.parametrize("mask, pad, norm_first, bias, batch_first", TRANSFORMER_SAMPLES)
def test_module_info_transformer_samples(mask, pad, norm_first, bias, batch_first):
    """torch's ModuleInfo samples: d_model=4, nhead=2, one layer each, the last key blocked by a
    [3, 3] mask and/or padding; unbatched [3, 4] and batched [2, 3, 4] inputs."""
    torch.manual_seed(0)
    kw = dict(d_model=4, nhead=2, dim_feedforward=8, num_encoder_layers=1, num_decoder_layers=1,
              dropout=0.0, batch_first=batch_first, norm_first=norm_first, bias=bias)
    ref = torch_model(**kw)
    ours = Transformer.from_torch(ref)
    m = torch.tensor([False, False, True]).expand(3, 3) if mask else None
    kpm = torch.tensor([False, False, True]) if pad else None
    src, tgt = torch.randn(3, 4), torch.randn(3, 4)
    call = lambda mod, s, t, p: mod(s, t, src_mask=m, tgt_mask=m, src_key_padding_mask=p,  # noqa
                                    tgt_key_padding_mask=p)
    assert close(call(ref, src, tgt, kpm), call(ours, src, tgt, kpm))
    src, tgt = torch.randn(2, 3, 4), torch.randn(2, 3, 4)
    if not batch_first:
        src, tgt = src.transpose(0, 1), tgt.transpose(0, 1)
    kpm = None if kpm is None else kpm.expand(2, 3)
    assert close(call(ref, src, tgt, kpm), call(ours, src, tgt, kpm))


LAYER_SAMPLES = [({}, "relu"), ({"activation": F.gelu}, "gelu"), ({"bias": False}, "no_bias"),
                 ({"activation": nn.GELU()}, "gelu_module"), ({"activation": F.silu}, "silu"),
                 ({"activation": lambda x: x.tanh() * 2}, "lambda"),
                 ({"norm_first": True, "activation": nn.PReLU()}, "prelu_pre_norm")]


@pytest.mark.parametrize("kw", [k for k, _ in LAYER_SAMPLES], ids=[n for _, n in LAYER_SAMPLES])
def test_encoder_and_decoder_layers_accept_torch_activations(kw):
    torch.manual_seed(0)
    for torch_cls, ours_cls in ((nn.TransformerEncoderLayer, TransformerEncoderLayer),
                                (nn.TransformerDecoderLayer, TransformerDecoderLayer)):
        ref = torch_cls(C, H, FF, 0.0, batch_first=True, **copy.deepcopy(kw)).eval()
        ours = ours_cls.from_torch(ref)
        assert set(ours.state_dict()) == set(ref.state_dict())
        src, tgt = data()
        args = (src,) if torch_cls is nn.TransformerEncoderLayer else (tgt, src)
        assert close(ref(*args), ours(*args))
        assert close(ours.to_torch()(*args), ours(*args))


@pytest.mark.parametrize("activation", ["gelu", F.gelu, nn.GELU(), F.silu, nn.ReLU()])
def test_transformer_activation_round_trip(activation):
    ref = torch_model(activation=activation, batch_first=True)
    ours = Transformer.from_torch(ref)
    src, tgt = data()
    back = ours.to_torch()
    if isinstance(activation, nn.Module):
        # torch's decoder layer swaps a module activation for F.relu when nn.Transformer clones
        # it (its __setstate__ looks for "activation" outside _modules); ours keeps it.
        assert ref.decoder.layers[0].activation is F.relu
        assert ours.decoder.layers[0].activation_relu_or_gelu == \
            ref.encoder.layers[0].activation_relu_or_gelu  # the activation asked for
        assert close(ref.encoder(src), ours.encoder(src))
        assert close(back.encoder(src), ref.encoder(src))
        return
    assert close(ref(src, tgt), ours(src, tgt))
    assert close(back(src, tgt), ref(src, tgt))
    built = Transformer(C, H, 1, 1, FF, 0.0, activation=activation)
    assert built.encoder.layers[0].activation_relu_or_gelu == \
        nn.TransformerEncoderLayer(C, H, FF, activation=activation).activation_relu_or_gelu


@pytest.mark.parametrize("batch_first", [True, False])
def test_encoder_decoder_and_attention_are_callable_as_torch(batch_first):
    # Regression: model.encoder(src, mask=...), model.decoder(tgt, memory, ...) and
    # layers[0].self_attn(q, k, v) raised TypeError.
    ref = torch_model(batch_first=batch_first)
    ours = Transformer.from_torch(ref)
    src, tgt = data(batch_first)
    pad_s = torch.zeros(B, S, dtype=torch.bool)
    pad_s[1, 4:] = True
    pad_t = torch.zeros(B, T, dtype=torch.bool)
    pad_t[0, 3:] = True
    causal = nn.Transformer.generate_square_subsequent_mask(T)
    mem_mask = torch.rand(T, S, generator=torch.Generator().manual_seed(3)) > 0.7
    mem_mask[:, 0] = False
    enc = dict(mask=None, src_key_padding_mask=pad_s, is_causal=False)
    ma, mb = ref.encoder(src, **enc), ours.encoder(src, **enc)
    assert close(ma, mb)
    dec = dict(tgt_mask=causal, memory_mask=mem_mask, tgt_key_padding_mask=pad_t,
               memory_key_padding_mask=pad_s, tgt_is_causal=True, memory_is_causal=False)
    assert close(ref.decoder(tgt, ma, **dec), ours.decoder(tgt, mb, **dec))
    attn_a, attn_b = ref.encoder.layers[0].self_attn, ours.encoder.layers[0].self_attn
    assert isinstance(attn_b, MultiheadAttention) and attn_b.batch_first == batch_first
    a, wa = attn_a(src, src, src, key_padding_mask=pad_s)
    b, wb = attn_b(src, src, src, key_padding_mask=pad_s)
    assert close(a, b) and close(wa, wb)
    layer_a, layer_b = ref.decoder.layers[1], ours.decoder.layers[1]
    assert close(layer_a(tgt, ma, **dec), layer_b(tgt, mb, **dec))


def test_greedy_decoding_as_in_the_translation_tutorial():
    ref = torch_model(batch_first=False)
    ours = Transformer.from_torch(ref)
    src, start = torch.randn(S, 1, C), torch.randn(1, 1, C)
    outs = []
    for model in (ref, ours):
        memory = model.encoder(src, torch.zeros(S, S, dtype=torch.bool))
        ys = start
        for _ in range(4):
            mask = nn.Transformer.generate_square_subsequent_mask(ys.size(0))
            out = model.decoder(ys, memory, mask)
            ys = torch.cat([ys, out[-1:]], 0)
        outs.append(ys)
    assert close(*outs)


def test_stacks_and_layers_round_trip_through_torch():
    ref = torch_model(batch_first=True)
    src, tgt = data()
    enc = TransformerEncoder.from_torch(ref.encoder)
    dec = TransformerDecoder.from_torch(ref.decoder)
    memory = ref.encoder(src)
    assert close(enc(src), memory) and close(enc.to_torch()(src), memory)
    assert close(dec(tgt, memory), ref.decoder(tgt, memory))
    assert close(dec.to_torch()(tgt, memory), ref.decoder(tgt, memory))
    layer = TransformerEncoderLayer(C, H, FF, 0.0, batch_first=True)
    stack = TransformerEncoder(layer, 3, nn.LayerNorm(C), enable_nested_tensor=False)
    assert len(stack.layers) == 3 and stack.layers[0] is not stack.layers[1]
    assert close(stack.to_torch()(src), stack(src))


def test_from_torch_keeps_eval_mode_and_to_torch_keeps_ours():
    # Regression: Transformer.from_torch(model in eval) returned a module in training mode.
    ref = torch_model(dropout=0.3)
    ours = Transformer.from_torch(ref)
    assert not ours.training and not any(m.training for m in ours.modules())
    src, tgt = data(False)
    assert close(ref(src, tgt), ours(src, tgt))
    assert ours.train().to_torch().training and not ours.eval().to_torch().training


def test_custom_encoder_and_decoder_are_used_as_given():
    torch.manual_seed(0)
    enc = nn.TransformerEncoder(nn.TransformerEncoderLayer(C, H, FF, 0.0, batch_first=True), 1,
                                enable_nested_tensor=False)
    ours = Transformer(C, H, dim_feedforward=FF, dropout=0.0, batch_first=True,
                       custom_encoder=enc).eval()
    src, tgt = data()
    assert ours.encoder is enc
    expected = ours.decoder(tgt, enc(src))
    assert close(ours(src, tgt), expected)
    with pytest.raises(ValueError, match="custom one"):
        ours.to_torch()


def test_float64_gradients_match_torch():
    ref = torch_model(dtype=torch.float64, batch_first=True)
    ours = Transformer.from_torch(ref)
    src, tgt = (t.requires_grad_() for t in data(dtype=torch.float64))
    mask = torch.randn(T, T, dtype=torch.float64, requires_grad=True)
    grads = []
    for model in (ref, ours):
        model(src, tgt, tgt_mask=mask).square().sum().backward()
        grads.append([t.grad.clone() for t in (src, tgt, mask)] +
                     [p.grad.clone() for p in model.parameters()])
        for t in (src, tgt, mask):
            t.grad = None
    for ga, gb in zip(*grads):
        assert (ga - gb).abs().max() < 1e-10


def test_copies_dtype_and_autocast():
    ref = torch_model(batch_first=True)
    ours = Transformer.from_torch(ref)
    src, tgt = data()
    for clone in (copy.deepcopy(ours), pickle.loads(pickle.dumps(ours))):
        assert torch.equal(clone(src, tgt), ours(src, tgt))
    wide = Transformer(C, H, 1, 1, FF, dtype=torch.float64)
    assert all(p.dtype == torch.float64 for p in wide.parameters())
    with torch.autocast("cpu", dtype=torch.bfloat16):
        a, b = ref(src, tgt), ours(src, tgt)
    assert a.dtype == b.dtype
    assert (a.float() - b.float()).abs().max() <= 5e-2 * a.abs().max()


def test_activation_names_and_config_validation():
    assert [activation_name(a) for a in ("relu", F.gelu, nn.ReLU(), nn.GELU(), nn.GELU("tanh"),
                                         F.silu, "tanh")] == ["relu", "gelu", "relu", "gelu",
                                                              None, None, None]
    assert LayerConfig(activation=F.silu).activation is F.silu  # any callable, as torch
    with pytest.raises(ValueError, match="activation"):
        LayerConfig(activation="tanh")
    with pytest.raises(ValueError, match="activation"):
        Transformer(C, H, activation=3)


def test_padding_without_memory_mask_matches_torch_math_path_not_its_nested_fast_path():
    """torch's eval fast path (nested tensors: even head count, 2+ layers) zeroes the encoder output at padded source
    positions; its math path (training mode) keeps the values. With ``src_key_padding_mask`` but
    no ``memory_key_padding_mask`` the decoder reads those positions, so the two torch paths differ;
    ours is the math path in both modes. Given the memory mask too, all three agree."""
    from gnn_attention import Transformer

    torch.manual_seed(0)
    ref = nn.Transformer(d_model=16, nhead=4, num_encoder_layers=2, num_decoder_layers=1,
                         dim_feedforward=20, dropout=0.0, batch_first=True)
    ours = Transformer.from_torch(ref).eval()
    src, tgt = torch.randn(2, 7, 16), torch.randn(2, 5, 16)
    pad = torch.tensor([[False] * 7, [False] * 5 + [True] * 2])
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch's prototype nested-tensor warning
        out = ours(src, tgt, src_key_padding_mask=pad)
        math_path = ref.train()(src, tgt, src_key_padding_mask=pad)
        fast_path = ref.eval()(src, tgt, src_key_padding_mask=pad)
        both = dict(src_key_padding_mask=pad, memory_key_padding_mask=pad)
        out_m, ref_m = ours(src, tgt, **both), ref.eval()(src, tgt, **both)
    assert (out - math_path).abs().max() < 1e-5
    assert (out - fast_path).abs().max() > 1e-2  # the documented difference
    assert (out_m - ref_m).abs().max() < 1e-5
