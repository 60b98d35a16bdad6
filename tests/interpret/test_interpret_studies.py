"""The translator study (experiments/interventions_translator.py) and its shared method code
(experiments/interventions_common.py): the alignment by construction, the metrics, flow, and a
quick run whose batched knockouts equal plain edited runs."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from gnn_attention.interpret import SiteEdit, edge_mask, run, sites
from gnn_attention.interpret.plan import prepare
from gnn_attention.training.data.tasks import english_words

EXPERIMENTS = Path(__file__).resolve().parents[2] / "experiments"
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def mods():
    sys.path.insert(0, str(EXPERIMENTS))
    try:
        import interventions_common as common
        import interventions_translator as study
    finally:
        sys.path.remove(str(EXPERIMENTS))
    return common, study


def test_alignment_spells_every_number_and_digit_words_have_one_cause(mods):
    _, study = mods
    for n in range(10000):
        words = study.alignment(str(n))
        assert " ".join(w for w, _, _ in words) == english_words(n)
    # "One unambiguous source": a digit word changes when its digit changes (to another
    # non-zero digit) and never when another digit does (numbers sampled every 97).
    for n in range(100, 10000, 97):
        digits = str(n)
        words = study.alignment(digits)
        for t, (word, cat, (s, *rest)) in enumerate(words):
            if cat != "digit":
                continue
            assert not rest and word == english_words(int(digits[s]))
            for p in range(len(digits)):
                for c in "123456789":
                    if c == digits[p]:
                        continue
                    other = study.alignment(digits[:p] + c + digits[p + 1:])
                    same = [w for w, k, src in other if k == "digit" and src == (s,)]
                    assert same and (same[0] == word) == (p != s)
    with pytest.raises(ValueError, match="leading zeros"):
        study.alignment("0123")


def test_metrics_with_sets_and_ties(mods):
    common, _ = mods
    sc = torch.tensor([0.1, 0.9, 0.9, 0.0], dtype=torch.float64)
    m = common.metrics([(sc, 1), (sc, (1, 2)), (sc, 3)])
    assert m["n"] == 3
    # top-1: 1/2 (a tie), 1 (both tied are true), 0; AUC: (2.5/3), 1, 0
    assert m["top1"] == pytest.approx((0.5 + 1 + 0) / 3)
    assert m["auc"] == pytest.approx((2.5 / 3 + 1 + 0) / 3)


def test_flow_equals_rollout_when_the_encoder_only_copies(mods):
    """With identity encoder attention, one decoder layer: every path from s to t is the single
    cross edge, so flow = rollout = A_cross[t, s] / 2."""
    common, _ = mods
    S, T = 3, 2
    cross = torch.tensor([[[0.2, 0.5, 0.3], [0.6, 0.1, 0.3]]], dtype=torch.float64)
    dense = {("encoder", 0, "self"): torch.eye(S, dtype=torch.float64)[None],
             ("decoder", 0, "self"): torch.tensor([[[1.0, 0.0], [0.5, 0.5]]],
                                                  dtype=torch.float64),
             ("decoder", 0, "cross"): cross}
    flow, roll = common.attention_flow(dense, S, T), common.rollout(dense, S, T)
    assert torch.allclose(flow, cross[0] / 2, atol=1e-12)
    assert torch.allclose(roll, cross[0] / 2, atol=1e-12)


def test_quick_study_runs_and_its_knockouts_are_plain_edited_runs(mods, tmp_path):
    common, study = mods
    out = study.train_and_evaluate(study.QUICK, tmp_path)
    assert out["numbers"] == 6
    words = {c: out["rows"][c]["edge knockout"]["n"] for c in out["rows"]}
    assert words["digit"] + words["scale"] + words["tail"] >= 6 * 3
    for c, rows in out["rows"].items():
        assert 0 < out["chance_top1"][c] <= 1
        for name, m in rows.items():
            assert 0 <= m["top1"] <= 1 and 0 <= m["auc"] <= 1 and m["n"] == words[c], (c, name)
    assert {"flow", "rollout", "gradient x input", "edge patching"} <= set(out["rows"]["digit"])
    # One knockout of the batched study, recomputed as its own unbatched edited run.
    model, src_tok, tgt_tok, _ = common.get_model("digits-en", tmp_path, "tiny")
    s_ids, t_ids = src_tok.encode("4071"), tgt_tok.encode("four thousand seventy-one")
    ko = common.intervention_scores(model, s_ids, t_ids, study.corrupt_token("4071", src_tok))
    args = common.batch(s_ids, t_ids, 1)
    plan = prepare(model, *args)
    g = plan.graphs["cross"]
    with torch.no_grad():
        clean = run(model, *args).output[0].log_softmax(-1)
        for s, t in ((0, 0), (3, 2), (1, 1)):
            cut = {site: SiteEdit(remove=edge_mask(g, [(s, t)], 1)) for site in sites(plan)
                   if site[2] == "cross"}
            knocked = run(model, *args, edits=cut).output[0].log_softmax(-1)
            want = clean[t, t_ids[t]] - knocked[t, t_ids[t]]
            assert float(ko["edge knockout"][t, s]) == pytest.approx(float(want), abs=1e-10)
