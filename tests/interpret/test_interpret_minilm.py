"""Interventions on the real all-MiniLM-L6-v2 (skipped without its weights): the unedited run is
the pretrained model bitwise, the recorded run matches it, and an edge edit moves only its
sentence of the batch."""
from __future__ import annotations

import pytest
import torch
from conftest import require_minilm

from gnn_attention.interpret import SiteEdit, edge_mask
from gnn_attention.interpret.plan import prepare
from gnn_attention.interpret.runner import execute, run
from gnn_attention.pretrained import encode, load_bert, load_tokenizer

pytestmark = pytest.mark.usefixtures("one_thread")
SENTENCES = ["The trophy did not fit in the suitcase because it was too big.", "It was small."]


@pytest.fixture(scope="module")
def minilm():
    directory = require_minilm()
    return load_bert(directory, dtype=torch.float64), load_tokenizer(directory)


def test_minilm_unedited_and_recorded_runs_are_the_model(minilm):
    model, tok = minilm
    batch = encode(tok, SENTENCES)
    args = (batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])
    with torch.no_grad():
        ref = model(*args)
        assert torch.equal(run(model, *args).output, ref)
        res = run(model, *args, record=True)
    assert (res.output - ref).abs().max() <= 1e-12
    assert len(res.records) == 6 and res.records[("encoder", 0, "self")].alpha.shape[1] == 12


def test_minilm_edge_edit_stays_in_its_sentence(minilm):
    model, tok = minilm
    batch = encode(tok, SENTENCES)
    args = (batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])
    plan = prepare(model, *args)
    g = plan.graphs["encoder"]
    # Remove the edge "trophy" (node 2) -> "it" (node 9) of sentence 0 in every layer and head.
    e = {("encoder", layer, "self"): SiteEdit(remove=edge_mask(g, [(2, 9)])) for layer in range(6)}
    with torch.no_grad():
        # Both on the readable path (recorded), so the untouched sentence compares bitwise.
        base, hit = execute(plan, record=True).output, execute(plan, e, record=True).output
    assert torch.equal(base[1], hit[1])
    assert (base[0, 9] - hit[0, 9]).abs().max() > 1e-6
