"""``MultiheadAttentionConv`` with PyG's habits: the calling convention ``(x, edge_index,
edge_attr)``, edge features (``edge_dim``, two modes), every adjacency form, GAT's self-loops, and
PyG's explain machinery (AttentionExplainer, GNNExplainer's edge mask, message hooks).

Every per-edge input is checked against a dense reference that places each edge's value at its
(target, source) cell, so a value paired with the wrong edge fails. Sizes: N=7 nodes, C=33
(H=3 heads of D=11), F=5 edge features, E=19 edges in random order.
"""
import math

import pytest
import torch
from torch_geometric import EdgeIndex
from torch_geometric.explain import Explainer
from torch_geometric.explain.algorithm import AttentionExplainer, GNNExplainer
from torch_geometric.explain.algorithm.utils import clear_masks, set_masks
from torch_geometric.utils import to_torch_coo_tensor, to_torch_csc_tensor, to_torch_csr_tensor

from gnn_attention.attention.conv import MultiheadAttentionConv
from gnn_attention.attention.pyg_layer import AttentionMessagePassing
from gnn_attention.graphs import from_edge_index

N, C, H, F, E = 7, 33, 3, 5, 19
D = C // H


def unsorted_edges(seed=0, count=E, loops=True):
    g = torch.Generator().manual_seed(seed)
    key = torch.randperm(N * N, generator=g)
    ei = torch.stack([key % N, key // N])
    if not loops:
        ei = ei[:, ei[0] != ei[1]]
    return ei[:, :count]


def dense_reference(conv, x, ei, bias=None, edge_attr=None):
    """Readable attention: scores on a [H, N, N] grid, -inf where no edge; per-edge terms are
    scattered to their (target i, source j) cell."""
    q, k, v = conv.project(x, x, x)  # [N, H, D]
    s = torch.einsum("ihd,jhd->hij", q, k) / math.sqrt(D)
    cell = torch.full((H, N, N), float("-inf"))
    extra = torch.zeros(H, N, N)
    val = torch.zeros(N, N, H, D)  # edge part of each value, per (i, j)
    if bias is not None:
        extra[:, ei[1], ei[0]] = bias.t()
    if edge_attr is not None and conv.edge_mode == "score":
        extra[:, ei[1], ei[0]] += conv.lin_edge(edge_attr).t()
    if edge_attr is not None and conv.edge_mode == "key_value":
        e = conv.lin_edge(edge_attr).view(-1, H, D)  # [E, H, D]
        extra[:, ei[1], ei[0]] += (q[ei[1]] * e).sum(-1).t() / math.sqrt(D)
        val[ei[1], ei[0]] = e
    cell[:, ei[1], ei[0]] = 0.0
    p = torch.softmax(s + extra + cell, dim=-1).nan_to_num(0.0)  # [H, N(i), N(j)]
    out = torch.einsum("hij,jhd->ihd", p, v) + torch.einsum("hij,ijhd->ihd", p, val)
    return conv.merge_heads(out), p[:, ei[1], ei[0]].t()  # alpha in ei's order


@pytest.fixture
def setup():
    torch.manual_seed(0)
    return torch.randn(N, C), unsorted_edges()


def test_edge_bias_alignment_every_entry_point(setup):
    x, ei = setup
    conv = MultiheadAttentionConv(C, H).eval()
    b = torch.randn(ei.size(1), H)
    expected, alpha_ref = dense_reference(conv, x, ei, bias=b)
    out, (ei_ret, alpha) = conv(x, ei, edge_bias=b, return_attention_weights=True)
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=0)
    assert torch.equal(ei_ret, ei)
    torch.testing.assert_close(alpha, alpha_ref, atol=1e-6, rtol=0)
    # a graph that carries its bias through the sort
    g = from_edge_index(ei, [N], [N], edge_attr={"edge_bias": b})
    out_g, (ei_g, alpha_g) = conv(x, g, return_attention_weights=True)
    torch.testing.assert_close(out_g, expected, atol=1e-5, rtol=0)
    torch.testing.assert_close(alpha_g, alpha_ref[g.edge_perm], atol=1e-6, rtol=0)
    assert torch.equal(ei_g, ei[:, g.edge_perm])
    torch.testing.assert_close(conv(x, g, edge_bias=g.edge_attr["edge_bias"]), expected,
                               atol=1e-5, rtol=0)
    # the bias given separately for a reordered graph: refused, naming the fix
    with pytest.raises(ValueError, match="from_edge_index"):
        conv(x, from_edge_index(ei, [N], [N]), edge_bias=b)
    # a sorted graph: its order is the caller's order
    s = ei[:, torch.argsort(ei[1] * N + ei[0])]
    g_sorted = from_edge_index(s, [N], [N])
    assert g_sorted.edge_perm is None
    torch.testing.assert_close(conv(x, g_sorted, edge_bias=b[torch.argsort(ei[1] * N + ei[0])]),
                               expected, atol=1e-5, rtol=0)
    # the message-passing form takes the same per-edge order
    conv.backend = "message_passing"
    torch.testing.assert_close(conv(x, ei, edge_bias=b), expected, atol=1e-5, rtol=0)


@pytest.mark.parametrize("to_sparse", [to_torch_coo_tensor, to_torch_csr_tensor,
                                       to_torch_csc_tensor])
def test_sparse_adjacency_equals_edge_index(setup, to_sparse):
    x, ei = setup
    conv = MultiheadAttentionConv(C, H, edge_dim=F).eval()
    adj_t = to_sparse(ei, size=(N, N)).t()  # PyG's adj_t: entry (i, j) is the edge j -> i
    # per-edge tensors given with a sparse matrix follow its stored order, as in PyG
    if adj_t.layout == torch.sparse_coo:
        adj_t = adj_t.coalesce()
        order = adj_t.indices()
    elif adj_t.layout == torch.sparse_csr:
        rows = torch.repeat_interleave(torch.arange(N), adj_t.crow_indices().diff())
        order = torch.stack([rows, adj_t.col_indices()])
    else:
        cols = torch.repeat_interleave(torch.arange(N), adj_t.ccol_indices().diff())
        order = torch.stack([adj_t.row_indices(), cols])
    ei_sp = order.flip(0)  # (target, source) -> (source, target)
    a = torch.randn(ei_sp.size(1), F)
    out, (ei_ret, alpha) = conv(x, adj_t, a, return_attention_weights=True)
    expected, alpha_ref = dense_reference(conv, x, ei_sp, edge_attr=a)
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=0)
    assert torch.equal(ei_ret, ei_sp)
    torch.testing.assert_close(alpha, alpha_ref, atol=1e-6, rtol=0)
    torch.testing.assert_close(conv(x, EdgeIndex(ei_sp, sparse_size=(N, N)), a), out)


@pytest.mark.parametrize("edge_mode", ["score", "key_value"])
def test_edge_features_fast_equals_message_passing_and_reference(setup, edge_mode):
    x, ei = setup
    conv = MultiheadAttentionConv(C, H, edge_dim=F, edge_mode=edge_mode).eval()
    a = torch.randn(ei.size(1), F)
    expected, alpha_ref = dense_reference(conv, x, ei, edge_attr=a)
    xs = [x.clone().requires_grad_() for _ in range(2)]
    grads = []
    for backend, xr in zip(("auto", "message_passing"), xs):
        conv.backend = backend
        out, (_, alpha) = conv(xr, ei, a, return_attention_weights=True)  # positional edge_attr
        torch.testing.assert_close(out, expected, atol=1e-5, rtol=0)
        torch.testing.assert_close(alpha, alpha_ref, atol=1e-6, rtol=0)
        conv.zero_grad()
        (out * torch.linspace(-1, 1, C)).sum().backward()
        grads.append([xr.grad] + [p.grad.clone() for p in conv.parameters()])
    for g_fast, g_mp in zip(*grads):
        torch.testing.assert_close(g_fast, g_mp, atol=1e-5, rtol=0)


def test_calling_convention_errors(setup):
    x, ei = setup
    conv = MultiheadAttentionConv(C, H)
    with pytest.raises(TypeError, match="return_attention_weights by keyword"):
        conv(x, ei, True)
    with pytest.raises(ValueError, match="edge_dim=None"):
        conv(x, ei, torch.randn(ei.size(1), F))
    with pytest.raises(ValueError, match="coalesce"):
        conv(x, torch.cat([ei, ei[:, :2]], dim=1))
    with pytest.raises(ValueError, match="dot-product score"):
        MultiheadAttentionConv(C, H, edge_dim=F, edge_mode="key_value", score="additive")
    raw = torch.sparse_coo_tensor(ei.flip(0), torch.ones(ei.size(1)), (N, N))  # not coalesced
    with pytest.raises(ValueError, match="coalesce"):
        conv(x, raw, edge_bias=torch.randn(ei.size(1), H))
    out, (ei_ret, alpha) = conv(x, ei, return_attention_weights=True)  # keywords keep working
    assert torch.equal(ei_ret, ei) and alpha.shape == (ei.size(1), H)
    assert torch.is_tensor(conv(x, ei, return_attention_weights=False))  # False: output only


def test_add_self_loops_gat_rule():
    """Existing loops are removed, then one loop per node appended (GAT), so a graph that has a
    loop already works; the loops' features are the mean of each node's incoming features."""
    torch.manual_seed(1)
    x, ei = torch.randn(N, C), unsorted_edges(seed=3)
    assert bool((ei[0] == ei[1]).any())  # the case that used to fail
    conv = MultiheadAttentionConv(C, H, edge_dim=F, add_self_loops=True).eval()
    a = torch.randn(ei.size(1), F)
    out, (ei_ret, alpha) = conv(x, ei, a, return_attention_weights=True)
    keep = ei[0] != ei[1]
    manual = torch.cat([ei[:, keep], torch.arange(N).expand(2, N)], dim=1)
    assert torch.equal(ei_ret, manual)
    loop_attr = torch.zeros(N, F).index_add(0, ei[1, keep], a[keep]) / \
        torch.bincount(ei[1, keep], minlength=N).clamp_min(1).unsqueeze(1)
    expected, alpha_ref = dense_reference(conv, x, manual, edge_attr=torch.cat([a[keep], loop_attr]))
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=0)
    torch.testing.assert_close(alpha, alpha_ref, atol=1e-6, rtol=0)
    with pytest.raises(ValueError, match="TokenGraph"):
        conv(x, from_edge_index(manual, [N], [N], edge_attr=torch.randn(manual.size(1), F)))


class Net(torch.nn.Module):
    def __init__(self, **kwargs):
        super().__init__()
        self.conv = MultiheadAttentionConv(C, H, **kwargs)
        self.lin = torch.nn.Linear(C, 2)

    def forward(self, x, edge_index):
        return self.lin(self.conv(x, edge_index).relu()).log_softmax(-1)


def test_attention_explainer_collects_coefficients(setup):
    x, ei = setup
    model = Net().eval()
    explainer = Explainer(model, algorithm=AttentionExplainer(), explanation_type="model",
                          edge_mask_type="object",
                          model_config=dict(mode="multiclass_classification", task_level="node",
                                            return_type="log_probs"))
    explanation = explainer(x, ei)
    _, (_, alpha) = model.conv(x, ei, return_attention_weights=True)
    torch.testing.assert_close(explanation.edge_mask, alpha.detach().max(-1).values,
                               atol=1e-6, rtol=0)


def test_gnn_explainer_edge_mask_gets_gradients(setup):
    x, ei = setup
    model = Net().eval()
    mask = torch.nn.Parameter(torch.randn(ei.size(1)))
    set_masks(model, mask, ei, apply_sigmoid=True)
    out = model.conv(x, ei)
    model(x, ei).sum().backward()
    assert mask.grad is not None and bool(mask.grad.abs().gt(0).all())
    # the mask scales each message: sigmoid(m) alpha_ij v_j
    clear_masks(model)
    _, _, v = model.conv.project(x, x, x)
    _, (_, alpha) = model.conv(x, ei, return_attention_weights=True)
    scaled = torch.zeros(N, H, D).index_add(0, ei[1], (alpha * mask.sigmoid()[:, None])[..., None]
                                             * v[ei[0]])
    torch.testing.assert_close(out, model.conv.merge_heads(scaled), atol=1e-5, rtol=0)
    explainer = Explainer(model, algorithm=GNNExplainer(epochs=3), explanation_type="model",
                          edge_mask_type="object",
                          model_config=dict(mode="multiclass_classification", task_level="node",
                                            return_type="log_probs"))
    explanation = explainer(x, ei, index=2)
    assert explanation.edge_mask.shape == (ei.size(1),)


def test_explain_mask_with_added_self_loops(setup):
    """PyG's explain_message drops the mask of existing loops and gives appended loops weight 1:
    exactly the GAT self-loop order the layer uses."""
    x, ei = setup
    model = Net(add_self_loops=True).eval()
    mask = torch.nn.Parameter(torch.zeros(ei.size(1)))
    set_masks(model, mask, ei, apply_sigmoid=True)
    model(x, ei).sum().backward()
    loops = ei[0] == ei[1]
    assert bool(mask.grad[~loops].abs().gt(0).all()) and bool((mask.grad[loops] == 0).all())


def test_message_hooks_fire_and_fast_path_otherwise(setup, monkeypatch):
    x, ei = setup
    conv = MultiheadAttentionConv(C, H, edge_dim=F, edge_mode="key_value").eval()
    a = torch.randn(ei.size(1), F)
    fast = conv(x, ei, a)
    seen = []
    handle = conv.register_message_forward_hook(lambda m, inputs, out: seen.append(out.shape))
    torch.testing.assert_close(conv(x, ei, a), fast, atol=1e-5, rtol=0)
    assert seen == [torch.Size([ei.size(1), H, D])]
    handle.remove()

    def refuse(*args, **kwargs):
        raise AssertionError("propagate ran although nothing observes the layer")

    assert isinstance(conv, AttentionMessagePassing) and not conv.observed()
    monkeypatch.setattr(conv, "propagate", refuse)
    torch.testing.assert_close(conv(x, ei, a), fast)
    conv.explain = True  # what torch_geometric.explain sets: the observed form runs
    assert conv.observed()
    monkeypatch.setattr(conv, "propagate", refuse)  # the explain setter rebinds propagate
    with pytest.raises(AssertionError, match="propagate ran"):
        conv(x, ei, a)


@pytest.mark.parametrize("sorted_edges", [False, True])
def test_edge_feature_products_gradcheck(sorted_edges):
    """The sparse forms of the edge-key bias and edge-value sum: float64 gradcheck (queries,
    weights, edge features and attention weights) and equality with the per-edge gather form."""
    from gnn_attention.attention import edge_features as ef

    g = torch.Generator().manual_seed(4)
    n, e, h, d, f = 5, 13, 3, 2, 7
    dst = torch.randint(0, n, (e,), generator=g)
    dst = dst.sort().values if sorted_edges else dst
    m = ef.build(dst, n, h)
    assert (m.order is None) == bool((dst[1:] >= dst[:-1]).all())
    opts = dict(dtype=torch.float64, requires_grad=True)
    q, a = torch.randn(n, h, d, generator=g, **opts), torch.randn(e, f, generator=g, **opts)
    w, alpha = torch.randn(h, d, f, generator=g, **opts), torch.rand(e, h, generator=g, **opts)
    emb = ef.embed(a, w)  # [E, H, D]: the readable per-edge form
    torch.testing.assert_close(ef.key_bias(q, a, w, m, 0.3), (q[dst] * emb).sum(-1) * 0.3)
    readable = torch.zeros(n, h, d, dtype=torch.float64).index_add(0, dst, alpha[..., None] * emb)
    torch.testing.assert_close(ef.value_sum(alpha, a, w, m), readable)
    assert torch.autograd.gradcheck(lambda q, a, w: ef.key_bias(q, a, w, m, 0.3), (q, a, w))
    assert torch.autograd.gradcheck(lambda al, a, w: ef.value_sum(al, a, w, m), (alpha, a, w))


def test_docs_example(capsys):
    """The explain example of docs/pyg.md runs as written."""
    from pathlib import Path

    text = (Path(__file__).parents[2] / "docs" / "pyg.md").read_text()
    code = text.split("```python\n", 1)[1].split("```", 1)[0]
    exec(compile(code, "docs/pyg.md", "exec"), {})
    assert capsys.readouterr().out.startswith("torch.Size([")
