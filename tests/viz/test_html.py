"""The interactive HTML view, checked in a real headless browser.

Needs Debian's ``chromium`` (``apt-get install -y chromium``) and the ``playwright`` Python package
pointed at it (no ``playwright install``); skipped with the reason when either is missing.
Sizes: T=5 target tokens, S=4 source tokens, H=3 heads, 2 layers.
"""
import json
import os

import pytest
import torch
from conftest import require_browser

from gnn_attention import MultiheadAttentionConv, graphs
from gnn_attention.viz.html import to_html

TOKENS = ["the", "cat", "</script>", "on", "mat"]  # a hostile token must stay text
H = 3


def _layers(g, n_layers=2, seed=0):
    torch.manual_seed(seed)
    out = []
    for _ in range(n_layers):
        conv = MultiheadAttentionConv(12, H)
        x = (torch.randn(g.num_src, 12), torch.randn(g.num_dst, 12)) if g.bipartite else \
            torch.randn(g.num_dst, 12)
        out.append((g, conv(x, g, return_attention_weights=True)[1][1].detach()))
    return out


def test_page_is_self_contained_and_embeds_the_weights(tmp_path):
    g = graphs.causal([len(TOKENS)])
    layers = _layers(g)
    path = to_html(TOKENS, layers, tmp_path / "view.html", title="a <b> title")
    page = path.read_text()
    assert "http://" not in page.replace("http://www.w3.org/2000/svg", "")
    assert "https://" not in page and "<link" not in page and "src=" not in page
    assert "a &lt;b&gt; title" in page
    data = json.loads(page.split("const DATA = ")[1].split(";\nconst NS")[0].replace("<\\/", "</"))
    assert data["dst"] == TOKENS and data["heads"] == H and len(data["layers"]) == 2
    assert data["layers"][1]["edges"] == g.edge_index.t()[:, [0, 1]].tolist()
    assert torch.allclose(torch.tensor(data["layers"][1]["alpha"]), layers[1][1])


def test_bad_inputs_are_rejected_before_writing(tmp_path):
    g = graphs.full([4])
    a = torch.rand(g.num_edges, H)
    with pytest.raises(ValueError, match="target"):
        to_html(TOKENS, [(g, a)], tmp_path / "x.html")
    with pytest.raises(ValueError, match="rows"):
        to_html(TOKENS[:4], [(g, a[:-1])], tmp_path / "x.html")
    with pytest.raises(ValueError, match="heads"):
        to_html(TOKENS[:4], [(g, a), (g, a[:, :2])], tmp_path / "x.html")
    assert not (tmp_path / "x.html").exists()


def _highlighted(page):
    return page.evaluate("""() => ({
      edges: [...document.querySelectorAll('line.edge.hl')].map(
          e => [Number(e.dataset.src), Number(e.dataset.dst), Number(e.dataset.w)]),
      labels: [...document.querySelectorAll('text.wlabel')].map(
          t => [Number(t.dataset.src), t.textContent]),
      n: document.querySelectorAll('line.edge').length})""")


@pytest.mark.parametrize("kind", ["self", "cross"])
def test_browser_switch_head_hover_token_highlights_incoming_edges(tmp_path, kind):
    sync_api, chromium = require_browser()
    src = ["w", "x", "y", "z"]
    g = graphs.causal([len(TOKENS)]) if kind == "self" else graphs.cross([4], [len(TOKENS)])
    layers = _layers(g)
    path = to_html(TOKENS, layers, tmp_path / "view.html",
                   src_tokens=None if kind == "self" else src)
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        page = browser.new_page()
        errors = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(path.as_uri())
        assert page.locator("line.edge").count() == g.num_edges
        assert page.locator("text.tok.dst").nth(2).text_content() == "</script>"
        for layer, head, target in ((1, 2, 3), (0, "mean", 4), (1, 0, 0)):
            page.select_option("#layer", str(layer))
            page.select_option("#head", str(head))
            page.hover(f'text.tok.dst[data-i="{target}"]')
            got = _highlighted(page)
            alpha = layers[layer][1]
            w = alpha.mean(1) if head == "mean" else alpha[:, head]
            into = (g.edge_index[1] == target).nonzero().flatten()
            want = {int(g.edge_index[0, e]): float(w[e]) for e in into}
            assert got["n"] == g.num_edges
            assert {e[0] for e in got["edges"]} == set(want) and len(got["edges"]) == len(want)
            assert all(e[1] == target for e in got["edges"])
            for j, _, wt in got["edges"]:
                assert wt == pytest.approx(want[j], abs=1e-6)
            assert dict(got["labels"]) == {j: f"{v:.3f}" for j, v in want.items()}
        shot = tmp_path / "view.png"
        page.screenshot(path=str(shot), full_page=True)
        page.mouse.move(0, 0)  # leaving the token clears the highlight
        assert _highlighted(page)["edges"] == []
        browser.close()
    assert not errors, errors
    assert shot.stat().st_size > 5000 and os.path.getsize(path) > 0
