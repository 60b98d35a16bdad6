"""Exactness of interventions on the attention graph: unedited runs reproduce the models,
value zeroing equals deleting out-edges' messages, removing a head's edges equals ablating it,
patching every edge from run B reproduces B, removal equals running on the subgraph.

Sizes are pairwise distinct (S=7, T=5, H=3, D=11, vocabularies 13 / 17 / 19) so a swapped axis
fails; float64 throughout so that 1e-12 is a real bound, not rounding noise.
"""
from __future__ import annotations

import copy

import pytest
import torch

from gnn_attention import graphs
from gnn_attention.interpret import cache, edits
from gnn_attention.interpret.plan import Plan, prepare
from gnn_attention.interpret.runner import execute, run, sites
from gnn_attention.interpret.edits import SiteEdit, edge_mask, head_columns, out_edges, patch_all
from gnn_attention.models import (
    DecoderOnlyConfig,
    DecoderOnlyModel,
    EncoderOnlyConfig,
    EncoderOnlyModel,
    Seq2SeqConfig,
    Seq2SeqModel,
)

TOL = 1e-12
# Tiny tensors: one thread avoids paying synchronisation on shared cores.
pytestmark = pytest.mark.usefixtures("one_thread")


def _seq2seq(norm_first=False):
    torch.manual_seed(0)
    cfg = Seq2SeqConfig(13, 17, d_model=33, nhead=3, dim_feedforward=19, num_encoder_layers=2,
                        num_decoder_layers=2, dropout=0.0, norm_first=norm_first)
    model = Seq2SeqModel(cfg).double().eval()
    src = torch.randint(0, 13, (2, 7))
    tgt = torch.randint(0, 17, (2, 5))
    return model, (src, torch.tensor([7, 6]), tgt, torch.tensor([5, 4]))


def _encoder_only():
    torch.manual_seed(1)
    cfg = EncoderOnlyConfig(vocab_size=19, num_layers=2, max_len=11, d_model=33, nhead=3,
                            dim_feedforward=23, dropout=0.0)
    model = EncoderOnlyModel(cfg).double().eval()
    ids = torch.randint(0, 19, (2, 7))
    return model, (ids, torch.tensor([[1] * 7, [1] * 5 + [0] * 2]))


def _decoder_only(positional="learned"):
    torch.manual_seed(2)
    d = 30 if positional == "rotary" else 33  # rotary needs an even head width
    cfg = DecoderOnlyConfig(vocab_size=19, num_layers=2, max_len=11, positional=positional,
                            d_model=d, nhead=3, dim_feedforward=23, dropout=0.0)
    model = DecoderOnlyModel(cfg).double().eval()
    return model, (torch.randint(0, 19, (2, 7)), torch.tensor([7, 5]))


MODELS = {"seq2seq": _seq2seq, "seq2seq_prenorm": lambda: _seq2seq(True),
          "encoder_only": _encoder_only, "decoder_learned": _decoder_only,
          "decoder_rotary": lambda: _decoder_only("rotary"),
          "decoder_alibi": lambda: _decoder_only("alibi"), "decoder_t5": lambda: _decoder_only("t5")}


def _out(model, args):
    with torch.no_grad():
        return model(*args)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_unedited_run_is_the_model_bitwise(name):
    """No edit, no record: every site runs the layer's own kernel, so the output is bitwise
    equal to ``model(...)``."""
    model, args = MODELS[name]()
    with torch.no_grad():
        assert torch.equal(run(model, *args).output, _out(model, args))


@pytest.mark.parametrize("name", sorted(MODELS))
def test_recorded_run_matches_the_model(name):
    """Recording sends every site through the readable path: equal to the model's kernels within
    1e-12 (float64), and bitwise equal to the model whose layers use the "reference" kernel."""
    model, args = MODELS[name]()
    with torch.no_grad():
        res = run(model, *args, record=True)
        assert (res.output - _out(model, args)).abs().max() <= TOL
        ref = copy.deepcopy(model)
        for m in ref.modules():
            if hasattr(m, "backend") and hasattr(m, "attend"):
                m.backend = "reference"
        assert torch.equal(res.output, _out(ref, args))
    plan = prepare(model, *args)
    assert set(res.records) == set(sites(plan))


def test_records_are_the_model_weights_and_their_messages():
    """alpha equals the encoder's returned weights; messages are alpha * v_j; summing messages by
    target gives the per-head output; the softmax of the scores over each target is alpha."""
    model, args = _encoder_only()
    with torch.no_grad():
        _, _, attentions = model(*args, return_attention=True)
        res = run(model, *args, record=True)
    for layer, (ei, alpha) in enumerate(attentions):
        rec = res.records[("encoder", layer, "self")]
        assert torch.equal(rec.edge_index, ei)
        assert (rec.alpha - alpha).abs().max() <= TOL
        N = rec.out.size(0)
        summed = torch.zeros_like(rec.out).index_add(0, ei[1], rec.messages)
        assert (summed - rec.out).abs().max() <= TOL
        z = torch.zeros(N, alpha.size(1), dtype=alpha.dtype).index_add(0, ei[1], rec.scores.exp())
        assert (rec.scores.exp() / z[ei[1]] - rec.alpha).abs().max() <= TOL


def test_value_zeroing_equals_deleting_the_out_edges_messages():
    """v_j = 0 at a site equals scale 0 on every out-edge of j (other weights unchanged), and
    differs from removing those edges (which renormalises), so the two are told apart."""
    model, args = _seq2seq()
    plan = prepare(model, *args)
    g = plan.graphs["cross"]
    nodes = [2, 9]
    zero = torch.zeros(g.num_src, dtype=torch.bool)
    zero[nodes] = True
    scale = (~out_edges(g, nodes)).double().unsqueeze(1)
    remove = out_edges(g, nodes).unsqueeze(1)
    site = ("decoder", 1, "cross")
    with torch.no_grad():
        a = execute(plan, {site: SiteEdit(zero_value=zero)}).output
        b = execute(plan, {site: SiteEdit(scale=scale)}).output
        c = execute(plan, {site: SiteEdit(remove=remove)}).output
        base = execute(plan).output
    assert (a - b).abs().max() <= TOL
    assert (a - base).abs().max() > 1e-3 and (a - c).abs().max() > 1e-3


@pytest.mark.parametrize("site", [("encoder", 0, "self"), ("decoder", 1, "self"),
                                  ("decoder", 0, "cross")])
def test_removing_every_edge_of_a_head_equals_ablating_the_head(site):
    model, args = _seq2seq()
    plan = prepare(model, *args)
    graph, H, _ = sites(plan)[site]
    every = torch.ones(graph.num_edges, dtype=torch.bool)
    with torch.no_grad():
        a = execute(plan, {site: SiteEdit(remove=head_columns(every, H, [1]))})
        b = execute(plan, {site: SiteEdit(ablate_heads=(1,))})
        base = execute(plan).output
    assert (a.output - b.output).abs().max() <= TOL
    assert (a.output - base).abs().max() > 1e-3
    assert a.records[site].out[:, 1].abs().max() == 0  # exactly zero, never NaN
    assert a.records[site].out[:, [0, 2]].abs().max() > 0


def test_patching_every_cross_edge_from_the_clean_run_reproduces_it():
    """The decoder reads the source only through cross edges: with a corrupted source (run A),
    patching every cross-attention message of the clean run B reproduces B's logits."""
    model, (src, sl, tgt, tl) = _seq2seq()
    corrupt = (src + 5) % 13
    with torch.no_grad():
        clean = run(model, src, sl, tgt, tl, record=True)
        plan_a = prepare(model, corrupt, sl, tgt, tl)
        cross = [s for s in sites(plan_a) if s[2] == "cross"]
        patched = execute(plan_a, patch_all(clean.records, cross)).output
        corrupted = execute(plan_a).output
    assert (patched - clean.output).abs().max() <= TOL
    assert (corrupted - clean.output).abs().max() > 1e-2
    # One layer short of all: the patch is no longer complete and B is not reproduced.
    partial = execute(plan_a, patch_all(clean.records, cross[:1])).output
    assert (partial - clean.output).abs().max() > 1e-6


def test_patching_every_edge_undoes_knockouts():
    """Run A removes edges in two layers; patching every site with run B's messages gives B."""
    model, args = _decoder_only("alibi")
    plan = prepare(model, *args)
    g, H, _ = sites(plan)[("decoder", 0, "self")]
    knock = {("decoder", layer, "self"): SiteEdit(remove=edge_mask(g, [(0, 3), (8, 10)], H))
             for layer in (0, 1)}
    with torch.no_grad():
        clean = execute(plan, record=True)
        edited = execute(plan, knock).output
        restored = {s: SiteEdit(remove=e.remove, patch=p.patch, messages=p.messages)
                    for (s, e), p in zip(knock.items(), patch_all(clean.records, knock).values())}
        back = execute(plan, restored).output
    assert (edited - clean.output).abs().max() > 1e-4
    assert (back - clean.output).abs().max() <= TOL


def test_removing_edges_equals_running_on_the_subgraph():
    """A removal in every head of every layer is the model on the graph without those edges."""
    model, args = _encoder_only()
    plan = prepare(model, *args)
    g = plan.graphs["encoder"]
    drop = edge_mask(g, [(1, 0), (4, 0), (3, 5), (9, 8)]).squeeze(1)
    sub = graphs.from_edge_index(g.edge_index[:, ~drop], g.src_lengths, g.dst_lengths)
    all_sites = {s: SiteEdit(remove=drop.unsqueeze(1)) for s in sites(plan)}
    with torch.no_grad():
        a = execute(plan, all_sites).output
        b = execute(Plan(**{**plan.__dict__, "graphs": {"encoder": sub}})).output
    assert (a - b).abs().max() <= TOL


def test_an_edge_removed_in_a_causal_model_changes_only_later_positions():
    """Removing edge j -> i (layer 0) leaves every output before i unchanged (bitwise), and the
    other sequence of the batch unchanged: edits never leak."""
    model, args = _decoder_only()
    plan = prepare(model, *args)
    g = plan.graphs["decoder"]
    e = {("decoder", 0, "self"): SiteEdit(remove=edge_mask(g, [(1, 4)], 3))}
    with torch.no_grad():
        base, hit = execute(plan, record=True).output, execute(plan, e, record=True).output
    assert torch.equal(base[0, :4], hit[0, :4]) and torch.equal(base[1], hit[1])
    assert (base[0, 4] - hit[0, 4]).abs().max() > 1e-6


def test_scale_of_one_is_a_no_op_and_half_halves_the_message():
    model, args = _encoder_only()
    plan = prepare(model, *args)
    g, H, _ = sites(plan)[("encoder", 1, "self")]
    site = ("encoder", 1, "self")
    half = torch.ones(g.num_edges, H, dtype=torch.float64)
    half[5, 2] = 0.5
    with torch.no_grad():
        base = execute(plan, record=True)
        one = execute(plan, {site: SiteEdit(scale=torch.ones(g.num_edges, 1).double())},
                          record=True)
        res = execute(plan, {site: SiteEdit(scale=half)}, record=True)
    assert torch.equal(one.output, base.output)
    r, b = res.records[site], base.records[site]
    assert torch.equal(r.messages[5, 2], 0.5 * b.messages[5, 2])
    assert torch.equal(r.messages[6:], b.messages[6:]) and torch.equal(r.scores, b.scores)


def test_edited_attention_matches_the_dense_reference_and_gradcheck():
    """Function level: a removal is the dense reference with those (query, key) pairs masked;
    gradients through removal, scaling and zeroing pass float64 gradcheck."""
    from gnn_attention.attention.math import dense_attention

    torch.manual_seed(3)
    T, H, D = 5, 3, 11
    g = graphs.full([T])
    q, k, v = (torch.randn(T, H, D, dtype=torch.float64, requires_grad=True) for _ in range(3))
    remove = edge_mask(g, [(0, 1), (2, 1), (4, 3)], H, heads=[0, 2])
    out, rec = cache.edited_attention(q, k, v, g, edit=SiteEdit(remove=remove))
    allowed = torch.ones(H, T, T, dtype=torch.bool)
    for (j, i) in [(0, 1), (2, 1), (4, 3)]:
        allowed[[0, 2], i, j] = False
    dense = dense_attention(*(t.transpose(0, 1).unsqueeze(0) for t in (q, k, v)), allowed)
    assert (out - dense[0].transpose(0, 1)).abs().max() <= TOL
    scale = torch.rand(g.num_edges, H, dtype=torch.float64)
    zero = torch.tensor([False, True, False, False, False])
    edit = SiteEdit(remove=remove, scale=scale, zero_value=zero)
    assert torch.autograd.gradcheck(
        lambda q, k, v: cache.edited_attention(q, k, v, g, edit=edit)[0], (q, k, v))


def test_bad_edits_are_refused_before_any_computation():
    model, args = _seq2seq()
    plan = prepare(model, *args)
    E = plan.graphs["cross"].num_edges
    cases = [({("decoder", 5, "cross"): SiteEdit()}, KeyError, "no attention site"),
             ({("encoder", 0, "cross"): SiteEdit()}, KeyError, "no attention site"),
             ({("decoder", 0, "cross"): SiteEdit(remove=torch.ones(E + 1, 3, dtype=torch.bool))},
              ValueError, "remove must have shape"),
             ({("decoder", 0, "cross"): SiteEdit(remove=torch.ones(E, 3))}, TypeError, "bool"),
             ({("decoder", 0, "cross"): SiteEdit(scale=torch.ones(E, 3, dtype=torch.bool))},
              TypeError, "floating point"),
             ({("decoder", 0, "cross"): SiteEdit(patch=torch.ones(E, 3, dtype=torch.bool))},
              ValueError, "patch and messages go together"),
             ({("decoder", 0, "cross"): SiteEdit(ablate_heads=(3,))}, ValueError, "out of range"),
             ({("decoder", 0, "cross"): SiteEdit(zero_value=torch.ones(5, dtype=torch.bool))},
              ValueError, "zero_value must be"),
             ({("decoder", 0, "cross"): "remove"}, TypeError, "must be a SiteEdit")]
    for bad, error, message in cases:
        with pytest.raises(error, match=message):
            execute(plan, bad)
    with pytest.raises(ValueError, match="not edges"):
        edits.edge_mask(plan.graphs["decoder"], [(3, 1)])  # causal: 3 -> 1 is not an edge
    with pytest.raises(ValueError, match="eval mode"):
        run(model.train(), *args)
    with pytest.raises(TypeError, match="no intervention plan"):
        prepare(torch.nn.Linear(2, 2).eval())


def test_a_layer_with_edge_features_is_refused():
    """The readable path knows no edge features: such a layer is refused, never edited wrongly."""
    model, args = _encoder_only()
    model = copy.deepcopy(model)
    model.encoder.layers[1].self_attn.edge_dim = 4
    with pytest.raises(ValueError, match="edge features"):
        run(model, *args)
