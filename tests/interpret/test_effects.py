"""Batched single-edge knockout effects against one plain edited run per unit.

Every effect of :func:`knockout_effects` (C copies in one batch, later layers only) must equal
what ``run(model, ..., edits={site: remove that one (edge, head)})`` gives for that unit alone.
Sizes are pairwise distinct (S=7, T=5, H=3, D=11); float64 so 1e-10 is a real bound.
"""
from __future__ import annotations

import pytest
import torch

from gnn_attention.interpret import SiteEdit, edge_mask, run
from gnn_attention.interpret.effects import knockout_effects
from gnn_attention.models import EncoderOnlyConfig, EncoderOnlyModel, Seq2SeqConfig, Seq2SeqModel

TOL = 1e-10
pytestmark = pytest.mark.usefixtures("one_thread")


def _seq2seq(norm_first=False):
    torch.manual_seed(0)
    cfg = Seq2SeqConfig(13, 17, d_model=33, nhead=3, dim_feedforward=19, num_encoder_layers=2,
                        num_decoder_layers=2, dropout=0.0, norm_first=norm_first)
    model = Seq2SeqModel(cfg).double().eval()
    args = (torch.randint(0, 13, (1, 7)), torch.tensor([7]), torch.randint(0, 17, (1, 5)),
            torch.tensor([5]))
    return model, args, torch.randint(0, 17, (5,))


def _encoder_only():
    torch.manual_seed(1)
    cfg = EncoderOnlyConfig(vocab_size=19, num_layers=2, max_len=11, d_model=33, nhead=3,
                            dim_feedforward=23, dropout=0.0)
    return EncoderOnlyModel(cfg).double().eval(), (torch.randint(0, 19, (1, 7)),)


def _one_unit(model, args, site, j, i, h, labels):
    """The reference: a plain run with the single unit (j -> i, head h) of ``site`` removed."""
    with torch.no_grad():
        return _one_unit_run(model, args, site, j, i, h, labels)


def _one_unit_run(model, args, site, j, i, h, labels):
    clean = run(model, *args)
    g, H = clean_graph(model, args, site)
    edit = {site: SiteEdit(remove=edge_mask(g, [(j, i)], H, heads=[h]))}
    out = run(model, *args, edits=edit).output[0, i]
    if labels is None:
        return float((out - clean.output[0, i]).norm())
    return float(clean.output[0, i].log_softmax(-1)[labels[i]] - out.log_softmax(-1)[labels[i]])


def clean_graph(model, args, site):
    from gnn_attention.interpret import prepare, sites
    graph, H, _ = sites(prepare(model, *args))[site]
    return graph, H


@pytest.mark.parametrize("norm_first", [False, True])
def test_every_seq2seq_decoder_unit_equals_its_own_run(norm_first):
    model, args, labels = _seq2seq(norm_first)
    eff = knockout_effects(model, *args, labels=labels, chunk=37)
    assert eff.readout == "logprob"
    assert sorted(eff.effect) == [("decoder", 0, "cross"), ("decoder", 0, "self"),
                                  ("decoder", 1, "cross"), ("decoder", 1, "self")]
    for site, e in eff.effect.items():
        ei = eff.edge_index[site]
        assert e.shape == eff.alpha[site].shape == (ei.size(1), 3) and not e.isnan().any()
        # Every unit of the last cross site and a spread of the others (each one costs a run).
        picks = range(ei.size(1)) if site == ("decoder", 1, "cross") else range(0, ei.size(1), 7)
        for k in picks:
            h = k % 3
            want = _one_unit(model, args, site, int(ei[0, k]), int(ei[1, k]), h, labels)
            assert abs(float(e[k, h]) - want) <= TOL, (site, k, h)
    assert float(eff.effect[("decoder", 1, "cross")].abs().max()) > 1e-3  # not all zero


def test_encoder_only_state_readout_top_k_and_chunking():
    model, args = _encoder_only()
    site = ("encoder", 0, "self")
    eff = knockout_effects(model, *args, top_k=2, chunk=5)
    e, a, ei = eff.effect[site], eff.alpha[site], eff.edge_index[site]
    for i in range(7):
        into = (ei[1] == i).nonzero().flatten()
        for h in range(3):
            measured = into[~e[into, h].isnan()]
            assert measured.numel() == 2
            assert set(measured.tolist()) == set(into[a[into, h].topk(2).indices].tolist())
            for k in measured.tolist():
                want = _one_unit(model, args, site, int(ei[0, k]), i, h, None)
                assert abs(float(e[k, h]) - want) <= TOL
    full = knockout_effects(model, *args, sites=[site], chunk=1000).effect[site]
    assert torch.allclose(full[~e.isnan()], e[~e.isnan()], atol=TOL, rtol=0)  # chunk-free
    assert not full.isnan().any()


def test_bad_inputs_are_one_line_errors():
    model, args, labels = _seq2seq()
    with pytest.raises(ValueError, match="labels"):
        knockout_effects(model, *args)
    with pytest.raises(ValueError, match=r"shape \[T\] = \[5\]"):
        knockout_effects(model, *args, labels=labels[:3])
    with pytest.raises(ValueError, match="no output at their targets"):
        knockout_effects(model, *args, labels=labels, sites=[("encoder", 0, "self")])
    with pytest.raises(ValueError, match="top_k"):
        knockout_effects(model, *args, labels=labels, top_k=0)
    two = (args[0].repeat(2, 1), args[1].repeat(2), args[2].repeat(2, 1), args[3].repeat(2))
    with pytest.raises(ValueError, match="batch size 1"):
        knockout_effects(model, *two, labels=labels)
    enc, eargs = _encoder_only()
    with pytest.raises(ValueError, match="labels are for the logprob"):
        knockout_effects(enc, *eargs, labels=labels)
    with pytest.raises(TypeError, match="no knockout readout"):
        knockout_effects(torch.nn.Linear(2, 2).eval(), torch.zeros(1, 2))
