"""The knockout column of the interactive page, checked in headless Chromium against the data.

Needs Debian's ``chromium`` and the ``playwright`` package (as tests/viz/test_html.py); skipped
with the reason when either is missing. Sizes: T=5 targets, S=4 sources, H=3 heads, 2 layers;
some units are NaN ("not measured") and some effects negative, on purpose.
"""
from __future__ import annotations

import json

import pytest
import torch
from conftest import require_browser

from gnn_attention import graphs
from gnn_attention.viz.html import to_html

H = 3
SRC = ["w", "x", "y", "z"]
DST = ["a", "b", "</script>", "d", "e"]


def _data(seed=0):
    torch.manual_seed(seed)
    g = graphs.cross([len(SRC)], [len(DST)])
    layers, kos = [], []
    for _ in range(2):
        a = torch.rand(g.num_edges, H)
        ko = torch.randn(g.num_edges, H).double()
        ko[torch.rand(g.num_edges, H) < 0.3] = float("nan")
        ko[0] = float("nan")  # an edge measured in no head: its head mean is "not measured"
        layers.append((g, a))
        kos.append(ko)
    return g, layers, kos


def _embedded(page_text: str) -> dict:
    return json.loads(page_text.split("const DATA = ")[1].split(";\nconst NS")[0]
                      .replace("<\\/", "</"))


def test_knockout_is_embedded_with_null_for_not_measured(tmp_path):
    _, layers, kos = _data()
    data = _embedded(to_html(DST, layers, tmp_path / "v.html", src_tokens=SRC, knockout=kos,
                             knockout_label="drop of log p").read_text())
    assert data["knockout"] == "drop of log p"
    for layer, ko in zip(data["layers"], kos):
        got = torch.tensor([[float("nan") if v is None else v for v in row]
                            for row in layer["ko"]], dtype=torch.float64)
        assert torch.equal(got.isnan(), ko.isnan())
        assert torch.equal(got[~got.isnan()], ko[~ko.isnan()])


def test_bad_knockout_is_rejected_before_writing(tmp_path):
    _, layers, kos = _data()
    with pytest.raises(ValueError, match="knockout has 1 layers"):
        to_html(DST, layers, tmp_path / "x.html", src_tokens=SRC, knockout=kos[:1])
    with pytest.raises(ValueError, match="shape of its layer's alpha"):
        to_html(DST, layers, tmp_path / "x.html", src_tokens=SRC, knockout=[kos[0][:, :2]] * 2)
    bad = kos[0].clone()
    bad[1, 1] = float("inf")
    with pytest.raises(ValueError, match="infinite"):
        to_html(DST, layers, tmp_path / "x.html", src_tokens=SRC, knockout=[bad, kos[1]])
    assert not (tmp_path / "x.html").exists()


READ_DOM = """() => ({
  edges: [...document.querySelectorAll('line.edge.hl')].map(
      e => [Number(e.dataset.src), e.dataset.ko]),
  koedges: [...document.querySelectorAll('line.koedge.hl')].map(
      e => [Number(e.dataset.src), Number(e.dataset.ko)]),
  labels: [...document.querySelectorAll('text.kolabel')].map(
      t => [Number(t.dataset.src), t.textContent]),
  info: document.getElementById('info').textContent})"""


def page_matches(page, data: dict, checks) -> int:
    """Hover each (layer, head, target) of ``checks`` and compare the knockout column (edge
    attributes, knockout lines, labels, #info) with ``data`` (the embedded or written JSON:
    ``layers[l]`` with ``edges`` [[j, i]], ``knockout`` or ``ko`` [E][H] with null); returns
    the number of edges compared."""
    compared = 0
    for layer, head, target in checks:
        page.select_option("#layer", str(layer))
        page.select_option("#head", str(head))
        page.hover(f'text.tok.dst[data-i="{target}"]')
        got = page.evaluate(READ_DOM)
        rows = data["layers"][layer]
        ko = rows.get("knockout", rows.get("ko"))
        want = {}
        for (j, i), k in zip(rows["edges"], ko):
            if i == target:
                m = [v for v in k if v is not None]
                want[j] = (k[head] if head != "mean" else
                           (sum(m) / len(m) if m else None))
        assert {j for j, _ in got["edges"]} == set(want)
        for j, attr in got["edges"]:
            assert (attr == "") == (want[j] is None)
            if want[j] is not None:
                assert float(attr) == pytest.approx(want[j], rel=1e-12, abs=1e-12)
        assert dict(got["koedges"]) == pytest.approx(
            {j: v for j, v in want.items() if v is not None}, rel=1e-12, abs=1e-12)
        assert dict(got["labels"]) == {j: "-" if v is None else f"{v:.3f}"
                                       for j, v in want.items()}
        src = data.get("src_tokens", data.get("src"))
        lines = got["info"].splitlines()  # one per incoming edge, in edge order
        assert [line.split(": weight ")[0] for line in lines] == \
            [f"{data.get('tokens', data.get('dst'))[target]} <- {src[j]}" for j in want]
        assert [line.split("  knockout ")[1] for line in lines] == \
            ["not measured" if v is None else f"{v:.3f}" for v in want.values()]
        compared += len(want)
    return compared


def test_browser_knockout_column_matches_the_embedded_data(tmp_path):
    sync_api, chromium = require_browser()
    _, layers, kos = _data(1)
    path = to_html(DST, layers, tmp_path / "v.html", src_tokens=SRC, knockout=kos)
    data = _embedded(path.read_text())
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        page = browser.new_page()
        errors = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(path.as_uri())
        assert page.locator("text.tok.ksrc").count() == len(SRC)
        checks = [(layer, head, t) for layer in (0, 1) for head in (0, 2, "mean")
                  for t in (0, 2, 4)]
        assert page_matches(page, data, checks) == len(checks) * len(SRC)
        page.mouse.move(0, 0)
        assert page.evaluate(READ_DOM)["labels"] == []
        page.screenshot(path=str(tmp_path / "v.png"), full_page=True)
        browser.close()
    assert not errors, errors
