"""GPSLayer against PyG's GPSConv after copying its weights: ragged batches, eval and train mode,
outputs and gradients; every bucketing gives the same function."""
import pytest
import torch
from torch import nn
from torch_geometric.nn import GINConv, GPSConv

from gnn_attention.graph_models.edge_sets import all_pairs, pair_buckets
from gnn_attention.graph_models.gps import GPSLayer, all_pairs_attention
from gnn_attention.graphs import from_edge_index

C, H = 33, 3  # head_dim 11
SIZES = (5, 7, 1, 13, 7, 2, 11)


def ragged_batch(sizes=SIZES, seed=0):
    gen = torch.Generator().manual_seed(seed)
    batch = torch.repeat_interleave(torch.arange(len(sizes)), torch.tensor(sizes))
    same = batch.view(-1, 1) == batch.view(1, -1)
    a = same & (torch.rand(same.shape, generator=gen) < 0.4)
    a.fill_diagonal_(False)
    j, i = (a | a.T).nonzero(as_tuple=True)
    x = torch.randn(batch.numel(), C, generator=gen)
    return x, torch.stack([j, i]), batch


def pyg_gps(norm="batch_norm", seed=0):
    torch.manual_seed(seed)
    gin = GINConv(nn.Sequential(nn.Linear(C, C), nn.ReLU(), nn.Linear(C, C)))
    gps = GPSConv(C, gin, heads=H, norm=norm)
    for p in gps.parameters():  # non-zero biases everywhere, so a dropped bias fails
        nn.init.normal_(p, std=0.1)
    for m in gps.modules():
        if isinstance(m, nn.BatchNorm1d):
            m.running_mean.normal_()
            m.running_var.uniform_(0.5, 2.0)
    return gps


@pytest.mark.parametrize("norm, max_padding", [("batch_norm", 0.0), ("batch_norm", 0.1),
                                               ("batch_norm", float("inf")), ("layer_norm", 0.1),
                                               ("graph_norm", 0.1), (None, 0.1)])
def test_equals_pyg_gpsconv_in_eval(norm, max_padding):
    x, ei, batch = ragged_batch()
    gps = pyg_gps(norm).eval()
    ours = GPSLayer.from_pyg(gps, max_padding=max_padding).eval()
    want = gps(x, ei, batch)
    got = ours(x, ei, batch)
    assert (got - want).abs().max() <= 1e-5


def test_equals_pyg_gpsconv_in_train_forward_and_backward():
    x, ei, batch = ragged_batch(seed=1)
    gps = pyg_gps().train()
    ours = GPSLayer.from_pyg(gps).train()
    xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
    want, got = gps(xa, ei, batch), ours(xb, ei, batch)
    assert (got - want).abs().max() <= 1e-5
    w = torch.randn_like(want)
    (want * w).sum().backward()
    (got * w).sum().backward()
    assert (xa.grad - xb.grad).abs().max() <= 1e-4
    mine = dict(ours.named_parameters())
    assert set(mine) == {n for n, _ in gps.named_parameters()}  # same names: state dicts move
    for name, p in gps.named_parameters():
        assert (p.grad - mine[name].grad).abs().max() <= 1e-4, name


def test_all_pairs_attention_equals_attention_on_the_all_pairs_graph():
    x, ei, batch = ragged_batch(seed=2)
    layer = GPSLayer(C, None, heads=H)
    sizes = torch.bincount(batch)
    graph = from_edge_index(all_pairs(batch), sizes, sizes)
    want = layer.attn(x, graph)
    for pad in (0.0, 0.3):
        got = all_pairs_attention(layer.attn, x, pair_buckets(batch, pad))
        assert (got - want).abs().max() <= 1e-5


def test_buckets_bound_the_padding_and_cover_each_graph_once():
    batch = torch.repeat_interleave(torch.arange(6), torch.tensor([10, 200, 11, 12, 190, 10]))
    b = pair_buckets(batch, 0.1)
    assert sorted(b.perm.tolist()) == list(range(batch.numel()))
    assert torch.equal(b.perm[b.inv], torch.arange(batch.numel()))
    # 4 x 12 = 48 > 1.1 x 43: the fourth small graph would pad more than 10 %
    assert [graph.dst_lengths.tolist() for _, _, graph in b.parts] == [[10, 10, 11], [12], [190, 200]]
    assert [(a, z) for a, z, _ in b.parts] == [(0, 31), (31, 43), (43, 433)]
    assert len(pair_buckets(batch, 0.0).parts) == 5
    assert len(pair_buckets(batch, float("inf")).parts) == 1


def test_no_leakage_between_graphs():
    x, ei, batch = ragged_batch(seed=3)
    layer = GPSLayer(C, None, heads=H, norm=None).eval()
    out = layer(x, ei, batch)
    x2 = x.clone()
    x2[batch == 3] += 10.0
    out2 = layer(x2, ei, batch)
    assert torch.equal(out[batch != 3], out2[batch != 3])
    assert not torch.allclose(out[batch == 3], out2[batch == 3])


def test_bias_without_graph_raises():
    x, ei, batch = ragged_batch()
    with pytest.raises(ValueError, match="attn_graph"):
        GPSLayer(C, None, heads=H)(x, ei, batch, edge_bias=torch.zeros(3, H))


def test_max_pairs_caps_buckets():
    batch = torch.repeat_interleave(torch.arange(5), torch.tensor([10, 10, 10, 20, 20]))
    parts = pair_buckets(batch, float("inf"), max_pairs=250).parts
    assert [g.dst_lengths.tolist() for _, _, g in parts] == [[10, 10], [10], [20], [20]]
    with pytest.raises(ValueError):
        pair_buckets(batch, 0.1, max_pairs=0)


def test_recompute_gives_the_same_outputs_and_gradients_with_dropout():
    x, ei, batch = ragged_batch(seed=4)
    torch.manual_seed(0)
    plain = GPSLayer(C, None, heads=H, attn_dropout=0.5, max_pairs=60).train()
    again = GPSLayer(C, None, heads=H, attn_dropout=0.5, max_pairs=60, recompute=True).train()
    again.load_state_dict(plain.state_dict())
    grads, outs = [], []
    for layer in (plain, again):
        xi = x.clone().requires_grad_()
        torch.manual_seed(1)  # the same dropout masks
        out = layer(xi, ei, batch)
        out.square().sum().backward()
        outs.append(out)
        grads.append([xi.grad] + [p.grad for p in layer.parameters()])
    assert torch.equal(outs[0], outs[1])
    for a, b in zip(*grads):
        assert (a is None) == (b is None)
        assert a is None or (a - b).abs().max() <= 1e-5
