"""``gnn-attention explain``: the JSON it writes is the knockout measurement, the page shows
exactly the JSON, and every user mistake is one line with status 2.

``digits`` is a digits-en run (numbers 0..300, 1 + 2 layers, 3 heads) trained for one step: what
it predicts does not matter, only that its knockout effects are real measurements.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch
from conftest import require_browser, require_minilm

from gnn_attention.cli.app import main
from gnn_attention.interpret import SiteEdit, edge_mask, prepare, run, sites
from gnn_attention.training.loop import TrainConfig, load_run, train

SMALL = {"d_model": 12, "nhead": 3, "num_encoder_layers": 1, "num_decoder_layers": 2,
         "dim_feedforward": 20, "dropout": 0.0}
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        cfg = TrainConfig(task="digits-en", preset="tiny", model=SMALL, steps=1, batch_size=4,
                          warmup=1, eval_every=100, checkpoint_every=100, val_examples=4,
                          test_examples=4, eval_batch_size=16, device="cpu",
                          task_params={"max_number": 300})
        path = tmp_path_factory.mktemp("digits")
        train(cfg, path, progress=False, log=lambda *_: None)
    finally:
        torch.set_num_threads(n)
    return path


def _explain(tmp_path, run_dir, *extra):
    js, page = tmp_path / "out" / "e.json", tmp_path / "out" / "e.html"
    assert main(["explain", "--run", str(run_dir), "207", "--json", str(js), "--html",
                 str(page), *extra]) == 0
    return json.loads(js.read_text()), page


def test_json_holds_every_unit_and_each_is_its_own_knockout(capsys, tmp_path, digits):
    data, page = _explain(tmp_path, digits)
    assert data["src_tokens"] == ["2", "0", "7"] and data["tokens"][-1] == "<eos>"
    assert data["readout"] == "logprob" and data["top_k"] is None
    assert [layer["site"] for layer in data["layers"]] == [["decoder", 0, "cross"],
                                                           ["decoder", 1, "cross"]]
    S, T = len(data["src_tokens"]), len(data["tokens"])
    for layer in data["layers"]:
        assert len(layer["edges"]) == S * T
        assert all(v is not None for row in layer["knockout"] for v in row)
    # Recompute two units with a plain edited run of the trained model.
    _, model, src_tok, tgt_tok, _ = load_run(digits)
    out = [tgt_tok.vocab.index(t) for t in data["tokens"][:-1]]
    args = (torch.tensor([src_tok.encode("207")]), torch.tensor([S]),
            torch.tensor([[tgt_tok.bos_id] + out]), torch.tensor([T]))
    y = out + [tgt_tok.eos_id]
    with torch.no_grad():
        clean = run(model, *args).output[0].log_softmax(-1)
        for layer_id, e, h in ((1, 5, 2), (0, S * T - 1, 0)):
            j, i = data["layers"][layer_id]["edges"][e]
            site = ("decoder", layer_id, "cross")
            g = sites(prepare(model, *args))[site][0]
            knocked = run(model, *args, edits={site: SiteEdit(
                remove=edge_mask(g, [(j, i)], 3, heads=[h]))}).output[0].log_softmax(-1)
            want = float(clean[i, y[i]] - knocked[i, y[i]])
            assert data["layers"][layer_id]["knockout"][e][h] == pytest.approx(want, abs=1e-5)
    embedded = json.loads(page.read_text().split("const DATA = ")[1].split(";\nconst NS")[0])
    for a, b in zip(embedded["layers"], data["layers"]):
        assert a["edges"] == b["edges"] and a["ko"] == b["knockout"]
        assert torch.allclose(torch.tensor(a["alpha"]), torch.tensor(b["alpha"]), atol=1e-7)
    assert "units knocked out one at a time" in capsys.readouterr().out


def test_top_k_measures_k_edges_per_target_and_head(tmp_path, digits):
    data, _ = _explain(tmp_path, digits, "--top-k", "1", "--layer", "1")
    (layer,) = data["layers"]
    T = len(data["tokens"])
    measured = [(i, h) for (j, i), row in zip(layer["edges"], layer["knockout"])
                for h, v in enumerate(row) if v is not None]
    assert sorted(measured) == sorted((i, h) for i in range(T) for h in range(3))
    for (j, i), row, w in zip(layer["edges"], layer["knockout"], layer["alpha"]):
        for h, v in enumerate(row):
            if v is not None:  # the measured edge is the heaviest into i in head h
                assert w[h] == max(a[h] for (_, t), a in zip(layer["edges"], layer["alpha"])
                                   if t == i)


def test_without_outputs_it_prints_the_largest_effects(capsys, digits):
    assert main(["explain", "--run", str(digits), "15"]) == 0
    out = capsys.readouterr().out.splitlines()
    head = out.index(next(x for x in out if x.startswith("layer  head")))
    assert len(out) - head - 1 == 8  # 2 sources x T targets x 2 layers x 3 heads > 8


@pytest.mark.parametrize("extra, message", [
    (["--run", "{missing}", "12"], ("run directory {missing} does not exist (train one with 'gnn-attention train "
                                    "--run-dir {missing}')")),
    (["--run", "{run}", "12a"], ("'12a' cannot be read by the digits-en model: unknown "
                                 "characters 'a'")),
    (["--run", "{run}", "12", "--layer", "2"], "--layer must be in 0..1, got 2"),
    (["--run", "{run}", "12", "--top-k", "0"], "--top-k must be >= 1 or 'all', got 0"),
    (["--run", "{run}", "12", "--top-k", "two"], ("--top-k must be a whole number >= 1 or "
                                                  "'all', got 'two'")),
    (["--run", "{run}", "  "], "TEXT is empty"),
    (["--run", "{run}", "12", "--json", "{tmp}"], "--json {tmp} is a folder; give a file name"),
])
def test_mistakes_are_one_line(capsys, tmp_path, digits, extra, message):
    fill = {"missing": str(tmp_path / "nope"), "run": str(digits), "tmp": str(tmp_path)}
    argv = ["explain", *(x.format(**fill) for x in extra)]
    assert main(argv) == 2
    assert capsys.readouterr().err == f"gnn-attention explain: error: {message.format(**fill)}\n"


def test_browser_page_knockout_column_matches_the_json(tmp_path, digits):
    sync_api, chromium = require_browser()
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "viz"))
    try:
        from test_html_knockout import page_matches
    finally:
        sys.path.pop(0)
    data, page_path = _explain(tmp_path, digits, "--top-k", "2")
    T = len(data["tokens"])
    assert T >= 2
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        page = browser.new_page()
        errors = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(page_path.as_uri())
        checks = [(layer, head, t) for layer in (0, 1) for head in (1, "mean")
                  for t in sorted({0, 1, T - 1})]  # first steps and <eos>
        assert page_matches(page, data, checks) == len(checks) * 3
        browser.close()
    assert not errors, errors


def test_minilm_sentence_one_layer(capsys, tmp_path):
    require_minilm()
    js = tmp_path / "m.json"
    assert main(["explain", "Cats chase mice.", "--layer", "5", "--json", str(js)]) == 0
    data = json.loads(js.read_text())
    assert data["tokens"] == data["src_tokens"] == ["[CLS]", "cats", "chase", "mice", ".",
                                                    "[SEP]"]
    assert data["readout"] == "state" and data["top_k"] == 1
    (layer,) = data["layers"]
    assert layer["site"] == ["encoder", 5, "self"] and len(layer["edges"]) == 36
    measured = [v for row in layer["knockout"] for v in row if v is not None]
    assert len(measured) == 6 * 12 and all(v >= 0 for v in measured) and max(measured) > 0
