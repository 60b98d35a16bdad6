"""``torch_geometric.nn.to_hetero`` with this library's convs, on node types of different widths.

* ``TransformerConv`` with int (after a per-type projection), ``(-1, -1)`` and ``-1`` in_channels,
  with and without edge features: the same model with PyG's ``TransformerConv`` under ``to_hetero``,
  weights copied by one ``load_state_dict`` (parameter names match), gives the same outputs (1e-5)
  and the same weight gradients (1e-4).
* ``MultiheadAttentionConv``: queries and outputs have width ``embed_dim`` and sources width
  ``kdim`` / ``vdim`` (no lazy widths), so node types of other widths go through a per-type
  projection (``Linear(-1, C)``, made per type by ``to_hetero``) or share one source width (kdim):
  both checked against ``nn.MultiheadAttention`` edge type by edge type; any other width is a
  one-line error naming the expected shape.

Widths are distinct (paper 11, author 13, C=5 per head, H=3, F=2) so that a swapped type fails.
"""
import warnings

import pytest
import torch
import torch_geometric.nn as pyg_nn
from torch_geometric.data import HeteroData
from torch_geometric.nn import Linear, to_hetero

from gnn_attention.attention.conv import MultiheadAttentionConv
from gnn_attention.attention.transformer_conv import TransformerConv

N_PAPER, N_AUTHOR, W_PAPER, W_AUTHOR, C, H, F = 7, 5, 11, 13, 5, 3, 2


def covering_edges(n_src, n_dst, extra, seed):
    """Distinct edges in random order, at least one into every target (an empty row would be NaN
    in nn.MultiheadAttention and zero here)."""
    g = torch.Generator().manual_seed(seed)
    key = torch.cat([torch.arange(n_dst) * n_src + torch.arange(n_dst) % n_src,
                     torch.randint(0, n_src * n_dst, (extra,), generator=g)]).unique()
    key = key[torch.randperm(key.numel(), generator=g)]
    return torch.stack([key % n_src, key // n_src])


def hetero_data(w_paper=W_PAPER, seed=0):
    torch.manual_seed(seed)
    data = HeteroData()
    data["paper"].x, data["author"].x = torch.randn(N_PAPER, w_paper), torch.randn(N_AUTHOR, W_AUTHOR)
    data["author", "writes", "paper"].edge_index = covering_edges(N_AUTHOR, N_PAPER, 12, 1)
    data["paper", "cites", "paper"].edge_index = covering_edges(N_PAPER, N_PAPER, 10, 2)
    data["paper", "rev_writes", "author"].edge_index = covering_edges(N_PAPER, N_AUTHOR, 9, 3)
    for et in data.edge_types:
        data[et].edge_attr = torch.randn(data[et].edge_index.size(1), F)
    return data


class Net(torch.nn.Module):
    """One attention conv, optionally after a projection of every node type to ``project``."""

    def __init__(self, conv, project=None):
        super().__init__()
        self.lin = None if project is None else Linear(-1, project)
        self.conv = conv

    def forward(self, x, edge_index, edge_attr):
        if self.lin is not None:
            x = self.lin(x)
        return self.conv(x, edge_index, edge_attr)


class NetNoEdgeAttr(Net):
    def forward(self, x, edge_index):
        if self.lin is not None:
            x = self.lin(x)
        return self.conv(x, edge_index)


def hetero(net, data):
    with warnings.catch_warnings():  # "author" is a target only of rev_writes: fine here
        warnings.simplefilter("ignore")
        return to_hetero(net, data.metadata(), aggr="sum")


def run(model, data, edge_dim):
    args = (data.x_dict, data.edge_index_dict) + ((data.edge_attr_dict,) if edge_dim else ())
    return model(*args)


CASES = {  # name: (in_channels of the conv, width of a per-type projection or None, edge_dim)
    "int_after_projection": (16, 16, None),
    "tuple_lazy": ((-1, -1), None, None),
    "lazy": (-1, None, None),
    "tuple_lazy_edge_features": ((-1, -1), None, F),
}


@pytest.mark.parametrize("case", list(CASES))
def test_transformer_conv_to_hetero_equals_pyg(case):
    in_channels, project, edge_dim = CASES[case]
    data = hetero_data()
    wrap = Net if edge_dim else NetNoEdgeAttr
    ours = hetero(wrap(TransformerConv(in_channels, C, heads=H, edge_dim=edge_dim), project), data)
    ref = hetero(wrap(pyg_nn.TransformerConv(in_channels, C, heads=H, edge_dim=edge_dim),
                      project), data)
    run(ours, data, edge_dim), run(ref, data, edge_dim)  # lazy widths resolve per type
    ref.load_state_dict(ours.state_dict())
    out, expected = run(ours, data, edge_dim), run(ref, data, edge_dim)
    assert set(out) == {"paper", "author"}
    for node_type in out:
        assert out[node_type].shape == (data[node_type].num_nodes, H * C)
        torch.testing.assert_close(out[node_type], expected[node_type], atol=1e-5, rtol=0)
    sum(o.square().sum() for o in out.values()).backward()
    sum(o.square().sum() for o in expected.values()).backward()
    grads = dict(ref.named_parameters())
    for name, p in ours.named_parameters():
        torch.testing.assert_close(p.grad, grads[name].grad, atol=1e-4, rtol=1e-4, msg=name)


def dense_mha(conv: MultiheadAttentionConv, x_src, x_dst, edge_index):
    """The edge type's conv as nn.MultiheadAttention with the edges as its mask (True = blocked)."""
    mha = conv.to_torch(batch_first=True)
    blocked = torch.ones(x_dst.size(0), x_src.size(0), dtype=torch.bool)
    blocked[edge_index[1], edge_index[0]] = False
    return mha(x_dst[None], x_src[None], x_src[None], attn_mask=blocked, need_weights=False)[0][0]


def test_multihead_conv_to_hetero_after_per_type_projection():
    data = hetero_data()
    model = hetero(NetNoEdgeAttr(MultiheadAttentionConv(H * C, H), project=H * C), data)
    out = model(data.x_dict, data.edge_index_dict)
    h = {t: model.lin[t](data[t].x) for t in data.node_types}
    expected = {t: 0 for t in data.node_types}
    for (src, rel, dst) in data.edge_types:
        conv = model.conv[f"{src}__{rel}__{dst}"]
        expected[dst] = expected[dst] + dense_mha(conv, h[src], h[dst], data[src, rel, dst].edge_index)
    for t in data.node_types:
        assert out[t].shape == (data[t].num_nodes, H * C)
        torch.testing.assert_close(out[t], expected[t], atol=1e-5, rtol=0)


def test_multihead_conv_to_hetero_with_kdim_vdim():
    """Sources of width kdim = vdim = 13 (authors), targets of width embed_dim = 15 (papers)."""
    data = HeteroData()
    data["paper"].x, data["author"].x = torch.randn(N_PAPER, H * C), torch.randn(N_AUTHOR, W_AUTHOR)
    ei = covering_edges(N_AUTHOR, N_PAPER, 12, 4)
    data["author", "writes", "paper"].edge_index = ei
    torch.manual_seed(5)
    model = hetero(NetNoEdgeAttr(MultiheadAttentionConv(H * C, H, kdim=W_AUTHOR, vdim=W_AUTHOR)),
                   data)
    out = model(data.x_dict, data.edge_index_dict)
    expected = dense_mha(model.conv["author__writes__paper"], data["author"].x, data["paper"].x, ei)
    torch.testing.assert_close(out["paper"], expected, atol=1e-5, rtol=0)


def test_multihead_conv_to_hetero_other_widths_is_a_clear_error():
    data = hetero_data()
    model = hetero(NetNoEdgeAttr(MultiheadAttentionConv(H * C, H)), data)
    with pytest.raises(ValueError, match=r"features must have shape \[N, 15\]"):
        model(data.x_dict, data.edge_index_dict)
