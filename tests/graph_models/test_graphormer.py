"""GraphormerLayer against the padded reference (nn.MultiheadAttention with a [G*H, N, N] float
bias from networkx shortest paths), forward and backward, on a ragged batch."""
import networkx as nx
import pytest
import torch
from dense_reference import dense_bias, padded_attention

from gnn_attention.graph_models.graphormer import GraphormerLayer, graphormer_inputs

C, H, L = 33, 3, 3
SIZES = (5, 7, 1, 11, 3)


def ragged_graphs(seed=0):
    gen = torch.Generator().manual_seed(seed)
    batch = torch.repeat_interleave(torch.arange(len(SIZES)), torch.tensor(SIZES))
    same = batch.view(-1, 1) == batch.view(1, -1)
    a = same & (torch.rand(same.shape, generator=gen) < 0.3)
    a.fill_diagonal_(False)
    j, i = (a | a.T).nonzero(as_tuple=True)
    return torch.randn(batch.numel(), C, generator=gen), torch.stack([j, i]), batch


def reference(layer, x, ei, batch):
    """Graphormer by the book: dense SPD matrix from networkx, bias [G*H, M, M], padded MHA."""
    n = batch.numel()
    G = nx.DiGraph()
    G.add_nodes_from(range(n))
    G.add_edges_from(ei.T.tolist())
    sp = dict(nx.all_pairs_shortest_path_length(G))
    pairs = [(j, i) for j in range(n) for i in range(n) if batch[j] == batch[i]]
    dist = torch.tensor([min(sp[j].get(i, L + 1), L + 1) for j, i in pairs])
    bias = dense_bias(batch, torch.tensor(pairs).T, layer.spatial.embedding.weight[dist], H)
    mha = layer.attn.to_torch(batch_first=True)
    h = x + padded_attention(mha, layer.norm1(x), batch, bias)
    return h + layer.ffn(layer.norm2(h)), mha


def test_graphormer_equals_padded_reference_forward_and_backward():
    x, ei, batch = ragged_graphs()
    torch.manual_seed(0)
    layer = GraphormerLayer(C, H, max_distance=L)
    torch.nn.init.normal_(layer.spatial.embedding.weight, std=1.0)  # biases that matter
    inputs = graphormer_inputs(ei, batch, L)
    assert int(inputs.distance.max()) == L + 1 and int(inputs.distance.min()) == 0
    xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
    got = layer(xa, inputs)
    want, mha = reference(layer, xb, ei, batch)
    assert (got - want).abs().max() <= 1e-5
    w = torch.randn_like(got)
    (got * w).sum().backward()
    (want * w).sum().backward()
    assert (xa.grad - xb.grad).abs().max() <= 1e-5
    assert (layer.attn.in_proj_weight.grad - mha.in_proj_weight.grad).abs().max() <= 1e-5


def test_spatial_bias_changes_the_output_and_gets_gradients():
    x, ei, batch = ragged_graphs(1)
    layer = GraphormerLayer(C, H, max_distance=L)
    inputs = graphormer_inputs(ei, batch, L)
    base = layer(x, inputs)
    with torch.no_grad():
        layer.spatial.embedding.weight[1] += 3.0  # neighbours get more weight
    assert not torch.allclose(layer(x, inputs), base)
    layer(x, inputs).sum().backward()
    assert layer.spatial.embedding.weight.grad.abs().sum() > 0


def test_wrong_inputs_raise():
    x, ei, batch = ragged_graphs()
    layer = GraphormerLayer(C, H, max_distance=L)
    with pytest.raises(ValueError, match="nodes"):
        layer(x[:-1], graphormer_inputs(ei, batch, L))
