"""Exactness of interventions on graph models (gnn_attention.interpret.graph_runner): a
MultiheadAttentionConv stack, Graphormer, Exphormer and GPS (all pairs, or a chosen edge set).

Checks, as for the Transformer models: an unedited run is the layers' own forward bitwise; a
recorded run matches it to 1e-12; value zeroing equals scale 0 on the node's out-edges; removing
every edge of a head equals ablating it; patching every edge from run B into run A reproduces B;
removal equals running on the subgraph; an edit in one graph of a batch leaves the others bitwise
unchanged. Sizes are pairwise distinct (graphs of 5, 7 and 3 nodes, C = 33, H = 3, F = 13) and the
arithmetic is float64, so 1e-12 is a real bound.
"""
from __future__ import annotations

import copy

import pytest
import torch
from torch import nn
from torch_geometric.nn import GCNConv
from torch_geometric.nn.norm import LayerNorm as PyGLayerNorm

from gnn_attention import graphs
from gnn_attention.attention import MultiheadAttentionConv
from gnn_attention.graph_models import (
    ExphormerLayer,
    GPSLayer,
    GraphormerLayer,
    edge_sets,
    exphormer_inputs,
    graphormer_inputs,
)
from gnn_attention.interpret import SiteEdit, head_columns, out_edges, patch_all
from gnn_attention.interpret.graph_runner import (
    execute_graph,
    graph_sites,
    prepare_graph,
    run_graph,
)

TOL = 1e-12
C, H, F = 33, 3, 13
SIZES = (5, 7, 3)
pytestmark = pytest.mark.usefixtures("one_thread")


def _batch_graph(seed=0):
    """Node features, a ragged batch and random undirected edges inside each graph (with a path
    through every graph so none is disconnected)."""
    g = torch.Generator().manual_seed(seed)
    batch = torch.repeat_interleave(torch.arange(len(SIZES)), torch.tensor(SIZES))
    edges, start = set(), 0
    for n in SIZES:
        for a in range(n - 1):
            edges |= {(start + a, start + a + 1), (start + a + 1, start + a)}
        for _ in range(n):
            a, b = torch.randint(0, n, (2,), generator=g).tolist()
            if a != b:
                edges |= {(start + a, start + b), (start + b, start + a)}
        start += n
    ei = torch.tensor(sorted(edges)).t().contiguous()
    x = torch.randn(batch.numel(), F, generator=g, dtype=torch.float64)
    return x, ei, batch


def _loops_graph(ei, n):
    """The input edges plus a self loop per node, as a sorted TokenGraph (no edge_perm, so a
    per-edge bias can be given in its order)."""
    loops = torch.arange(n).expand(2, n)
    g = graphs.from_edge_index(torch.cat([ei, loops], 1), [n], [n])
    return graphs.from_edge_index(g.edge_index, [n], [n])


def _conv_model():
    x, ei, _ = _batch_graph()
    torch.manual_seed(1)
    layers = nn.ModuleList([nn.Linear(F, C), MultiheadAttentionConv(C, H), nn.ReLU(),
                            MultiheadAttentionConv(C, H)]).double().eval()
    graph = _loops_graph(ei, x.size(0))
    bias = torch.randn(graph.num_edges, H, dtype=torch.float64)

    def forward(x):
        h = layers[0](x)
        h = layers[2](layers[1](h, graph, edge_bias=bias))
        return layers[3](h, graph, edge_bias=bias)

    return layers, x, {"graph": graph, "edge_bias": bias}, forward


def _graphormer_model():
    x, ei, batch = _batch_graph()
    torch.manual_seed(2)
    layers = nn.ModuleList([nn.Linear(F, C), GraphormerLayer(C, H, max_distance=3),
                            GraphormerLayer(C, H, max_distance=3)]).double().eval()
    for m in layers[1:]:
        nn.init.normal_(m.spatial.embedding.weight)  # std 0.02 would hide a misaligned bias
    inputs = graphormer_inputs(ei, batch, 3)

    def forward(x):
        h = layers[0](x)
        return layers[2](layers[1](h, inputs), inputs)

    return layers, x, {"graphormer": inputs}, forward


def _exphormer_model():
    x, ei, batch = _batch_graph()
    torch.manual_seed(3)
    layers = nn.ModuleList([nn.Linear(F, C), ExphormerLayer(C, H), ExphormerLayer(C, H)])
    layers = layers.double().eval()
    for m in layers[1:]:
        nn.init.normal_(m.type_bias)  # non-zero per-type biases, so misalignment shows
    inputs = exphormer_inputs(ei, batch, degree=2, generator=torch.Generator().manual_seed(4))

    def forward(x):
        h, v = layers[1](layers[0](x), inputs)
        return layers[2](h, inputs, v)[0]

    return layers, x, {"exphormer": inputs}, forward


def _gps_model(attn_graph=False):
    x, ei, batch = _batch_graph()
    torch.manual_seed(5)
    layers = nn.ModuleList([nn.Linear(F, C),
                            GPSLayer(C, GCNConv(C, C), heads=H, norm="layer_norm"),
                            GPSLayer(C, None, heads=H, norm=None)]).double().eval()
    assert isinstance(layers[1].norm1, PyGLayerNorm)  # a norm that reads the batch vector
    kw = {"edge_index": ei, "batch": batch}
    if attn_graph:
        n = x.size(0)
        hop = graphs.from_edge_index(edge_sets.k_hop(ei, batch, 2), [n], [n])
        kw["attn_graph"] = graphs.from_edge_index(hop.edge_index, [n], [n])  # sorted, no perm
        kw["attn_bias"] = torch.randn(kw["attn_graph"].num_edges, H, dtype=torch.float64)

    def forward(x):
        h = layers[0](x)
        extra = {k: kw[k] for k in ("attn_graph",) if k in kw}
        extra.update({"edge_bias": kw["attn_bias"]} if attn_graph else {})
        h = layers[1](h, ei, batch, **extra)
        return layers[2](h, ei, batch, **extra)

    return layers, x, kw, forward


MODELS = {"conv": _conv_model, "graphormer": _graphormer_model, "exphormer": _exphormer_model,
          "gps_pairs": _gps_model, "gps_graph": lambda: _gps_model(True)}


@pytest.mark.parametrize("name", sorted(MODELS))
def test_unedited_run_is_the_forward_bitwise_and_recorded_within_1e12(name):
    layers, x, kw, forward = MODELS[name]()
    with torch.no_grad():
        ref = forward(x)
        plain = run_graph(layers, x, **kw)
        rec = run_graph(layers, x, record=True, **kw)
    assert torch.equal(plain.output, ref)
    assert (rec.output - ref).abs().max() <= TOL
    assert set(rec.records) == set(graph_sites(prepare_graph(layers, x, **kw)))
    assert len(rec.records) == 2 and not plain.records
    for r in rec.records.values():  # alpha sums to one over the incoming edges of a target
        total = torch.zeros(r.out.size(0), H, dtype=r.alpha.dtype).index_add(0, r.edge_index[1],
                                                                             r.alpha)
        assert (total - 1).abs().max() <= TOL


def test_conv_records_are_the_layers_returned_weights():
    layers, x, kw, _ = _conv_model()
    with torch.no_grad():
        res = run_graph(layers, x, record=True, **kw)
        for i in (1, 3):
            _, (ei, alpha) = layers[i](res.hidden["graph"][i], kw["graph"],
                                       edge_bias=kw["edge_bias"], return_attention_weights=True)
            r = res.records[("graph", i, "self")]
            assert torch.equal(ei, r.edge_index) and (alpha - r.alpha).abs().max() <= TOL


@pytest.mark.parametrize("name", sorted(MODELS))
def test_value_zeroing_equals_deleting_the_out_edges_messages(name):
    layers, x, kw, _ = MODELS[name]()
    plan = prepare_graph(layers, x, **kw)
    site = max(graph_sites(plan))
    g = graph_sites(plan)[site][0]
    nodes = [1, 6]
    zero = torch.zeros(g.num_src, dtype=torch.bool)
    zero[nodes] = True
    with torch.no_grad():
        a = execute_graph(plan, {site: SiteEdit(zero_value=zero)}).output
        b = execute_graph(plan, {site: SiteEdit(scale=(~out_edges(g, nodes)).double()[:, None])})
        c = execute_graph(plan, {site: SiteEdit(remove=out_edges(g, nodes)[:, None])}).output
        base = execute_graph(plan).output
    assert (a - b.output).abs().max() <= TOL
    assert (a - base).abs().max() > 1e-3 and (a - c).abs().max() > 1e-3


@pytest.mark.parametrize("name", sorted(MODELS))
def test_removing_every_edge_of_a_head_equals_ablating_the_head(name):
    layers, x, kw, _ = MODELS[name]()
    plan = prepare_graph(layers, x, **kw)
    site = min(graph_sites(plan))
    g = graph_sites(plan)[site][0]
    every = torch.ones(g.num_edges, dtype=torch.bool)
    with torch.no_grad():
        a = execute_graph(plan, {site: SiteEdit(remove=head_columns(every, H, [2]))})
        b = execute_graph(plan, {site: SiteEdit(ablate_heads=(2,))})
        base = execute_graph(plan).output
    assert (a.output - b.output).abs().max() <= TOL
    assert (a.output - base).abs().max() > 1e-3
    assert a.records[site].out[:, 2].abs().max() == 0 and a.records[site].out[:, :2].abs().max() > 0


@pytest.mark.parametrize("name", sorted(MODELS))
def test_patching_every_edge_from_run_b_reproduces_b(name):
    """Run A zeroes a value and removes edges at every site; replacing every message by those of
    the clean run B gives B's output. Patching all but one site does not."""
    layers, x, kw, _ = MODELS[name]()
    plan = prepare_graph(layers, x, **kw)
    knock = {}
    for site, (g, _, _) in graph_sites(plan).items():
        zero = torch.zeros(g.num_src, dtype=torch.bool)
        zero[4] = True
        every_third = (torch.arange(g.num_edges) % 3 == 0)[:, None]
        knock[site] = SiteEdit(remove=every_third, zero_value=zero)
    with torch.no_grad():
        clean = execute_graph(plan, record=True)
        edited = execute_graph(plan, knock).output
        patches = patch_all(clean.records, knock)
        both = {s: SiteEdit(remove=e.remove, zero_value=e.zero_value, patch=patches[s].patch,
                            messages=patches[s].messages) for s, e in knock.items()}
        back = execute_graph(plan, both).output
        first = min(knock)
        partial = execute_graph(plan, {**knock, first: both[first]}).output
    assert (edited - clean.output).abs().max() > 1e-3
    assert (back - clean.output).abs().max() <= TOL
    assert (partial - clean.output).abs().max() > 1e-4


def test_patching_graphormer_from_true_distances_undoes_corrupted_distances():
    """The distances reach the output only through the attention scores: a run with shuffled
    distances (run A), every message patched from the true run B, is B."""
    layers, x, kw, _ = _graphormer_model()
    g_in = kw["graphormer"]
    shuffled = type(g_in)(g_in.graph, g_in.distance[torch.randperm(g_in.distance.numel(),
                                                    generator=torch.Generator().manual_seed(0))])
    with torch.no_grad():
        clean = run_graph(layers, x, record=True, **kw)
        plan_a = prepare_graph(layers, x, graphormer=shuffled)
        corrupted = execute_graph(plan_a).output
        patched = execute_graph(plan_a, patch_all(clean.records, graph_sites(plan_a))).output
    assert (corrupted - clean.output).abs().max() > 1e-3
    assert (patched - clean.output).abs().max() <= TOL


def test_removing_edges_everywhere_equals_the_conv_stack_on_the_subgraph():
    layers, x, kw, _ = _conv_model()
    g, bias = kw["graph"], kw["edge_bias"]
    drop = torch.zeros(g.num_edges, dtype=torch.bool)
    drop[[0, 7, 8, 20]] = True
    n = x.size(0)
    sub = graphs.from_edge_index(g.edge_index[:, ~drop], [n], [n])
    plan = prepare_graph(layers, x, **kw)
    with torch.no_grad():
        a = execute_graph(plan, {s: SiteEdit(remove=drop[:, None]) for s in graph_sites(plan)})
        b = run_graph(layers, x, graph=sub, edge_bias=bias[~drop])
    assert (a.output - b.output).abs().max() <= TOL


@pytest.mark.parametrize("name", ["gps_pairs", "exphormer", "graphormer"])
def test_an_edit_in_one_graph_leaves_the_other_graphs_bitwise_unchanged(name):
    layers, x, kw, _ = MODELS[name]()
    plan = prepare_graph(layers, x, **kw)
    site = min(graph_sites(plan))
    g = graph_sites(plan)[site][0]
    first = g.edge_index[1] < SIZES[0]  # edges into graph 0 (virtual nodes are appended after)
    if name == "exphormer":
        first = kw["exphormer"].virtual.batch[g.edge_index[1]] == 0
    with torch.no_grad():
        base = execute_graph(plan, record=True).output
        hit = execute_graph(plan, {site: SiteEdit(remove=first[:, None])}, record=True).output
    assert torch.equal(base[SIZES[0]:], hit[SIZES[0]:])
    assert (base[:SIZES[0]] - hit[:SIZES[0]]).abs().max() > 1e-3


def test_bad_inputs_are_refused_before_any_computation():
    layers, x, kw, _ = _conv_model()
    with pytest.raises(ValueError, match="needs graph="):
        run_graph(layers, x)
    with pytest.raises(KeyError, match="no attention site"):
        run_graph(layers, x, edits={("graph", 0, "self"): SiteEdit()}, **kw)
    E = kw["graph"].num_edges
    with pytest.raises(ValueError, match="remove must have shape"):
        run_graph(layers, x, edits={("graph", 1, "self"): SiteEdit(
            remove=torch.ones(E - 1, 1, dtype=torch.bool))}, **kw)
    with pytest.raises(ValueError, match="eval mode"):
        run_graph(copy.deepcopy(layers).train(), x, **kw)
    bad = copy.deepcopy(layers)
    bad[3].edge_dim = 4
    with pytest.raises(ValueError, match="edge features"):
        run_graph(bad, x, **kw)
    gps, xg, kg, _ = _gps_model()
    with pytest.raises(ValueError, match="sorted"):
        run_graph(gps, xg, edge_index=kg["edge_index"], batch=kg["batch"].flip(0))
    with pytest.raises(ValueError, match="attn_bias needs"):
        run_graph(gps, xg, attn_bias=torch.zeros(3, H), **kg)
    exph, xe, ke, _ = _exphormer_model()
    with pytest.raises(ValueError, match="needs exphormer="):
        run_graph(exph, xe)
    exph[2].typed_kv = nn.Identity()  # stands for any per-type key/value module
    with pytest.raises(ValueError, match="typed_kv"):
        run_graph(exph, xe, **ke)


# ---------------------------------------------------------------------------------------------
# The ground-truth explanation study (experiments/graph_explain_study.py): its parts, tiny


def _study():
    import importlib.util
    import sys
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "experiments" / "graph_explain_study.py"
    spec = importlib.util.spec_from_file_location("graph_explain_study", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules["graph_explain_study"] = module
    spec.loader.exec_module(module)
    return module


def test_study_knockouts_equal_the_model_without_each_edge():
    """The batched knockout (K disjoint copies, copy k missing edge k) equals, edge by edge,
    the model's own forward on the edge list without that edge (float32: 1e-5)."""
    study = _study()
    x, ei, _ = _batch_graph(seed=7)
    x = x.float()
    torch.manual_seed(8)
    model = study.NodeClassifier(F, 4, 12, 3, 2).eval()
    n, E = x.size(0), ei.size(1)
    graph = graphs.from_edge_index(torch.cat([ei, torch.arange(n).expand(2, n)], 1), [n], [n])
    pos = torch.empty(E + n, dtype=torch.long)
    perm = graph.edge_perm if graph.edge_perm is not None else torch.arange(E + n)
    pos[perm] = torch.arange(E + n)
    u, c = 3, 1
    with torch.no_grad():
        base = model(x, ei)[u, c]
        want = torch.stack([(model(x, ei[:, torch.arange(E) != e])[u, c] - base).abs()
                            for e in range(E)])
    got = study._knockout(model, x, graph, pos[:E], u, c, base, {"knockout_copies": 7})
    assert (got - want).abs().max() <= 1e-5
    assert int((want > 1e-4).sum()) > 3  # the edges near u matter, the others do not
    assert float(want[~torch.isin(ei[1], torch.tensor([0, 1, 2, 3, 4]))].max()) == 0.0


def test_study_rollout_and_metrics_by_hand():
    """Rollout on a path 0 -> 1 -> 2 with self loops; AUC and precision on hand-made rankings."""
    study = _study()
    ei = torch.tensor([[0, 0, 1, 1, 2], [0, 1, 1, 2, 2]])  # loops and the two path edges
    a1 = torch.tensor([1.0, 0.25, 0.75, 0.5, 0.5])
    a2 = torch.tensor([1.0, 0.5, 0.5, 0.5, 0.5])
    # w_2 = e_2; layer 2: edges into 2 get 0.5 each; w_1 = (0, 0.5, 0.5);
    # layer 1: edge 1 -> 2 gets 0.5 * 0.5, 1 -> 1 gets 0.5 * 0.75, 0 -> 1 gets 0.5 * 0.25
    got = study._rollout([a1, a2], ei, 3, 2)
    assert torch.allclose(got, torch.tensor([0.0, 0.125, 0.375, 0.75, 0.75]))
    truth = torch.tensor([True, True, False, False])
    assert study.metrics(torch.tensor([4.0, 3, 2, 1]), truth) == (1.0, 1.0)
    assert study.metrics(torch.tensor([1.0, 2, 3, 4]), truth) == (0.0, 0.0)
    auc, _ = study.metrics(torch.tensor([1.0, 1, 1, 1]), truth)  # all tied: chance
    assert auc == 0.5
    assert study.metrics(torch.tensor([1.0, 2]), torch.tensor([True, True])) is None


@pytest.mark.slow
def test_study_quick_mode_writes_its_json_and_figure(tmp_path):
    """The quick study end to end (about half a minute): every method scored on both tasks."""
    study = _study()
    out, fig = tmp_path / "r.json", tmp_path / "f.png"
    result = study.main(["--quick", "--out", str(out), "--figure", str(fig)])
    assert out.exists() and fig.exists()
    for task in ("ba_shapes", "infection"):
        res = result["tasks"][task]
        assert res["runs"][0]["explained"] >= 1
        assert set(res["methods"]) == set(study.METHODS)
        for m in study.METHODS:
            assert 0.0 <= res["methods"][m]["auc"]["mean"] <= 1.0
