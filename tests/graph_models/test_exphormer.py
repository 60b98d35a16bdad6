"""ExphormerLayer against the padded reference (nn.MultiheadAttention with a [G*H, N', N'] float
mask holding the per-type biases on the union's edges), and its edge program's invariants."""
import pytest
import torch
from dense_reference import dense_bias, padded_attention

from gnn_attention.graph_models.edge_sets import expander
from gnn_attention.graph_models.exphormer import EDGE_TYPES, ExphormerLayer, exphormer_inputs

C, H, V = 33, 3, 2
SIZES = (5, 7, 1, 13, 3)


def ragged_graphs(seed=0):
    gen = torch.Generator().manual_seed(seed)
    batch = torch.repeat_interleave(torch.arange(len(SIZES)), torch.tensor(SIZES))
    same = batch.view(-1, 1) == batch.view(1, -1)
    a = same & (torch.rand(same.shape, generator=gen) < 0.3)
    a.fill_diagonal_(False)
    j, i = (a | a.T).nonzero(as_tuple=True)
    return torch.randn(batch.numel(), C, generator=gen), torch.stack([j, i]), batch


def reference_bias(layer, ei, batch, vn, seed):
    """Per-pair bias built from the sets themselves (not from the union's edge_type)."""
    n = vn.batch.numel()
    member = torch.zeros(n, n, len(EDGE_TYPES))  # [source, target, type]
    ex = vn.real[expander(batch, 4, torch.Generator().manual_seed(seed))]
    g = vn.real[ei]
    member[g[0], g[1], 0] = 1
    member[ex[0], ex[1], 1] = 1
    virt = torch.zeros(n, dtype=torch.bool)
    virt[vn.virtual.flatten()] = True
    same = vn.batch.view(-1, 1) == vn.batch.view(1, -1)
    member[..., 2] = (same & (virt.view(-1, 1) | virt.view(1, -1))).float()
    member[torch.arange(n), torch.arange(n), 3] = 1
    j, i = member.any(-1).nonzero(as_tuple=True)
    bias = member[j, i] @ layer.type_bias
    return dense_bias(vn.batch, torch.stack([j, i]), bias, H)


def test_exphormer_equals_padded_reference_forward_and_backward():
    x, ei, batch = ragged_graphs()
    torch.manual_seed(0)
    layer = ExphormerLayer(C, H, num_virtual=V)
    torch.nn.init.normal_(layer.type_bias, std=1.0)
    inputs = exphormer_inputs(ei, batch, degree=4, num_virtual=V,
                              generator=torch.Generator().manual_seed(7))
    vn = inputs.virtual
    state = torch.randn(len(SIZES) * V, C)
    xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
    out, vout = layer(xa, inputs, state)
    xr = torch.zeros(vn.batch.numel(), C)
    xr = xr.index_copy(0, vn.real, xb).index_copy(0, vn.virtual.flatten(), state)
    mha = layer.attn.to_torch(batch_first=True)
    h = xr + padded_attention(mha, layer.norm1(xr), vn.batch, reference_bias(layer, ei, batch, vn, 7))
    h = h + layer.ffn(layer.norm2(h))
    assert (out - h[vn.real]).abs().max() <= 1e-5
    assert (vout - h[vn.virtual.flatten()]).abs().max() <= 1e-5
    out.sum().backward()
    h[vn.real].sum().backward()
    assert (xa.grad - xb.grad).abs().max() <= 1e-5


def test_edge_program_stays_inside_graphs_and_is_linear():
    x, ei, batch = ragged_graphs(1)
    inputs = exphormer_inputs(ei, batch, degree=4, num_virtual=1)
    g, vb = inputs.typed.graph, inputs.virtual.batch
    assert bool((vb[g.edge_index[0]] == vb[g.edge_index[1]]).all())
    n = batch.numel()
    assert g.num_edges <= ei.size(1) + 4 * n + 2 * n + len(SIZES) + vb.numel()
    assert inputs.typed.names == EDGE_TYPES
    assert bool(inputs.typed.edge_type.any(1).all())


def test_virtual_state_default_and_shape_errors():
    x, ei, batch = ragged_graphs()
    layer = ExphormerLayer(C, H, num_virtual=1)
    inputs = exphormer_inputs(ei, batch, num_virtual=1)
    out, vout = layer(x, inputs)
    assert out.shape == x.shape and vout.shape == (len(SIZES), C)
    with pytest.raises(ValueError, match="virtual"):
        ExphormerLayer(C, H, num_virtual=2)(x, inputs)
