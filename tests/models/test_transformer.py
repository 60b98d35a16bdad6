"""The graph Transformer against ``nn.Transformer`` with copied weights: outputs and gradients,
masks of every kind, layouts, weight interop, and graphs built once per batch."""
import pytest
import torch
from torch import nn

from gnn_attention import graphs
from gnn_attention.models import torch_layers
from gnn_attention.models.layers import EncoderLayer
from gnn_attention.models.transformer import Transformer, TransformerConfig

pytestmark = pytest.mark.usefixtures("one_thread")  # see tests/conftest.py


# Pairwise-distinct sizes: a swapped axis fails loudly. C = H * D = 3 * 11.
# torch's own notes about its fast paths, raised while building the references.
pytestmark = [pytest.mark.filterwarnings("ignore:enable_nested_tensor is True"),
              pytest.mark.filterwarnings("ignore:Support for mismatched key_padding_mask")]
B, S, T, H, C, F = 3, 7, 5, 3, 33, 17
OUT_TOL, GRAD_TOL = 1e-5, 1e-4  # float32 against torch: accumulated rounding only


def make_pair(norm_first=False, activation="relu", batch_first=True, seed=0):
    torch.manual_seed(seed)
    ref = nn.Transformer(C, H, 2, 2, F, dropout=0.0, activation=activation,
                         batch_first=batch_first, norm_first=norm_first)
    return ref, Transformer.from_torch(ref)


def inputs(seed=1):
    g = torch.Generator().manual_seed(seed)
    src, tgt = torch.randn(B, S, C, generator=g), torch.randn(B, T, C, generator=g)
    src_len, tgt_len = torch.tensor([7, 4, 2]), torch.tensor([5, 3, 1])
    src_pad = torch.arange(S) >= src_len.view(-1, 1)  # True = padding (blocked), torch style
    tgt_pad = torch.arange(T) >= tgt_len.view(-1, 1)
    return src, tgt, src_pad, tgt_pad


@pytest.mark.parametrize("norm_first", [False, True])
@pytest.mark.parametrize("activation", ["relu", "gelu"])
@pytest.mark.parametrize("mode", ["train", "eval"])
def test_matches_nn_transformer_with_padding_and_causal_masks(norm_first, activation, mode):
    ref, ours = make_pair(norm_first, activation)
    src, tgt, src_pad, tgt_pad = inputs()
    kw = dict(tgt_mask=nn.Transformer.generate_square_subsequent_mask(T), tgt_is_causal=True,
              src_key_padding_mask=src_pad, tgt_key_padding_mask=tgt_pad,
              memory_key_padding_mask=src_pad)
    ref.train(mode == "train")
    ours.train(mode == "train")
    s1, t1 = src.clone().requires_grad_(), tgt.clone().requires_grad_()
    s2, t2 = src.clone().requires_grad_(), tgt.clone().requires_grad_()
    out_ref, out = ref(s1, t1, **kw), ours(s2, t2, **kw)
    valid = ~tgt_pad  # torch's eval fast path leaves padded positions undefined
    assert (out - out_ref)[valid].abs().max() <= OUT_TOL
    if mode == "eval":
        return
    w = torch.randn(B, T, C) * valid.unsqueeze(-1)
    (out_ref * w).sum().backward()
    (out * w).sum().backward()
    grads = dict(ours.named_parameters())
    for name, p in ref.named_parameters():
        assert (grads[name].grad - p.grad).abs().max() <= GRAD_TOL, name
    assert (s2.grad - s1.grad).abs().max() <= GRAD_TOL
    assert (t2.grad - t1.grad).abs().max() <= GRAD_TOL


def test_seq_first_unbatched_float_and_per_head_masks():
    ref, ours = make_pair(batch_first=False)
    ref.eval(), ours.eval()
    src, tgt, src_pad, _ = inputs(2)
    src, tgt = src.transpose(0, 1), tgt.transpose(0, 1)  # [S, B, C]
    g = torch.Generator().manual_seed(3)
    kw = dict(src_mask=torch.randn(B * H, S, S, generator=g),  # a per-head float bias
              memory_mask=torch.rand(T, S, generator=g) < 0.3,  # bool, True = blocked
              tgt_mask=nn.Transformer.generate_square_subsequent_mask(T),
              src_key_padding_mask=src_pad.float().masked_fill(src_pad, float("-inf")))
    kw["memory_mask"][:, 0] = False  # every query keeps a key: torch would give NaN otherwise
    a, b = ref(src, tgt, **kw), ours(src, tgt, **kw)
    assert a.shape == b.shape == (T, B, C)
    assert (a - b).abs().max() <= OUT_TOL
    a1, b1 = ref(src[:, 0], tgt[:, 0]), ours(src[:, 0], tgt[:, 0])
    assert b1.shape == (T, C) and (a1 - b1).abs().max() <= OUT_TOL


def test_is_causal_without_mask_builds_the_causal_graph():
    ref, ours = make_pair()
    src, tgt, _, _ = inputs()
    a = ref(src, tgt, tgt_mask=nn.Transformer.generate_square_subsequent_mask(T))
    assert (ours(src, tgt, tgt_is_causal=True) - a).abs().max() <= OUT_TOL


def test_weight_interop_both_ways():
    ref, ours = make_pair(norm_first=True, activation="gelu")
    assert list(ours.state_dict()) == list(ref.state_dict())  # same names, same order
    back = ours.to_torch()
    assert isinstance(back, nn.Transformer) and back.batch_first
    assert back.encoder.layers[0].norm_first
    src, tgt, _, _ = inputs()
    assert torch.equal(back.eval()(src, tgt), ref.eval()(src, tgt))
    fresh = Transformer(C, H, 2, 2, F, dropout=0.0, batch_first=True, norm_first=True,
                        activation=torch.nn.functional.gelu)

    fresh.load_state_dict(ref.state_dict())
    assert (fresh(src, tgt) - ref(src, tgt)).abs().max() <= OUT_TOL


def test_bias_free_model_round_trips():
    torch.manual_seed(0)
    ref = nn.Transformer(C, H, 1, 1, F, dropout=0.0, batch_first=True, bias=False)
    ours = Transformer.from_torch(ref)
    assert ours.config.bias is False
    src, tgt, _, _ = inputs()
    assert (ours(src, tgt) - ref(src, tgt)).abs().max() <= OUT_TOL


def test_graphs_built_once_and_shared_by_every_layer(monkeypatch):
    _, ours = make_pair()
    calls = []
    real = torch_layers.masks_to_graph
    monkeypatch.setattr(torch_layers, "masks_to_graph", lambda *a: calls.append(1) or real(*a))
    seen = []
    for layer in list(ours.encoder.layers) + list(ours.decoder.layers):
        def spy(*args, _run=layer.graph_forward, **kw):
            seen.append(args[2] if len(args) > 3 else args[1])  # the (self) graph
            return _run(*args, **kw)
        monkeypatch.setattr(layer, "graph_forward", spy)
    src, tgt, src_pad, _ = inputs()
    ours(src, tgt, src_key_padding_mask=src_pad, tgt_is_causal=True)
    assert len(calls) == 3  # source, target and cross graphs, whatever the depth
    assert len(seen) == 4 and seen[0] is seen[1] and seen[2] is seen[3]
    assert seen[0] is not seen[2]


def test_encoder_layer_gradcheck_float64():
    torch.manual_seed(0)
    layer = EncoderLayer(6, 2, 5, dropout=0.0, activation="gelu", norm_first=True).double()
    g = graphs.causal([3, 2])
    x = torch.randn(5, 6, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x: layer(x, g), (x,))


def test_clear_errors():
    with pytest.raises(ValueError, match="custom one"):
        Transformer(C, H, custom_encoder=nn.Identity()).to_torch()
    with pytest.raises(ValueError, match="multiple of nhead"):
        TransformerConfig(d_model=10, nhead=3)
    with pytest.raises(ValueError, match="activation"):
        Transformer(C, H, activation="tanh")
    _, ours = make_pair()
    src, tgt, _, _ = inputs()
    with pytest.raises(ValueError, match="d_model"):
        ours(src[..., :-1], tgt[..., :-1])
    with pytest.raises(ValueError, match="batch size"):
        ours(src, tgt[:2])
    with pytest.raises(ValueError, match="key_padding_mask"):
        ours(src, tgt, src_key_padding_mask=torch.zeros(B, S + 1, dtype=torch.bool))
