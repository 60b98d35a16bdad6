"""An interactive attention view: one self-contained HTML page (inline SVG + JavaScript).

Notation: L layers, H heads, E_l edges j -> i in layer l (j = source/key token, i = target/query
token), ``alpha [E_l, H]`` the weights of layer l.

The page draws the attention graph as two columns of nodes, sources on the left and targets on the
right (a self-attention graph shows each token in both columns: the "head view" popularised by
BertViz, drawn as a graph), one line per edge with opacity and width from its weight. Selectors pick
the layer and the head (or the mean over heads); hovering a target token highlights its incoming
edges and writes each edge's weight next to its source token. Nothing is fetched from a network:
the data are embedded as JSON and the script is inline.

DOM contract (what tests and users can rely on): ``select#layer``, ``select#head`` (values
``"0".."H-1"`` and ``"mean"``); ``text.tok.src[data-j]``, ``text.tok.dst[data-i]``; one
``line.edge[data-src][data-dst][data-w]`` per edge of the current layer (``data-w`` = the weight
for the current head); while a target is hovered its incoming edges carry the class ``hl`` and
``text.wlabel[data-src]`` show their weights (3 decimals); ``#info`` lists them.
"""
from __future__ import annotations

import html
import json
from collections.abc import Sequence
from pathlib import Path

from torch import Tensor

from gnn_attention.graphs import TokenGraph
from gnn_attention.viz.static import sequence_edges

Layer = tuple[TokenGraph | Tensor, Tensor]


def _layer_data(layer: Layer, n_src: int, n_dst: int, num_heads: int | None) -> dict:
    if not (isinstance(layer, (tuple, list)) and len(layer) == 2):
        raise TypeError("each layer must be a pair (TokenGraph or edge_index [2, E], alpha [E, H])")
    graph, alpha = layer
    alpha = alpha.detach().float().cpu()
    alpha = alpha.unsqueeze(1) if alpha.dim() == 1 else alpha
    if isinstance(graph, TokenGraph):
        s, t, ids, T, S = sequence_edges(graph, 0)  # one sequence: the page shows one sentence
        if alpha.size(0) != graph.num_edges:
            raise ValueError(f"alpha has {alpha.size(0)} rows, the graph has {graph.num_edges} edges")
        alpha = alpha[ids]
    else:
        if graph.dim() != 2 or graph.size(0) != 2:
            raise ValueError(f"edge_index must have shape [2, E], got {list(graph.shape)}")
        s, t = graph.cpu()
        T, S = n_dst, n_src
        if alpha.size(0) != s.numel():
            raise ValueError(f"alpha has {alpha.size(0)} rows, edge_index has {s.numel()} edges")
    if (T, S) != (n_dst, n_src):
        raise ValueError(f"a layer has {T} targets and {S} sources but {n_dst} target and "
                         f"{n_src} source tokens were given")
    if s.numel() and (int(s.max()) >= S or int(t.max()) >= T or int(min(s.min(), t.min())) < 0):
        raise IndexError("edge_index refers to a token outside the sentence")
    if num_heads is not None and alpha.size(1) != num_heads:
        raise ValueError(f"every layer needs the same number of heads, got {alpha.size(1)} "
                         f"after {num_heads}")
    return {"edges": list(zip(s.tolist(), t.tolist())), "alpha": alpha.tolist(),
            "heads": alpha.size(1)}


def to_html(tokens: Sequence[str], attention: Sequence[Layer], path: str | Path, *,
            src_tokens: Sequence[str] | None = None,
            title: str = "Attention as message passing") -> Path:
    """Write the interactive view of ``attention`` over ``tokens`` to ``path``; return the path.

    Args:
        tokens: the target (query) tokens; also the sources unless ``src_tokens`` is given.
        attention: one ``(graph, alpha)`` per layer: a :class:`TokenGraph` (its first sequence is
            shown) or a local ``edge_index [2, E]``, and ``alpha [E, H]`` (or ``[E]``) in the
            order of its edges, e.g. the pair returned by ``MultiheadAttentionConv(...,
            return_attention_weights=True)``.
        src_tokens: source (key) tokens of a cross-attention graph.

    **Shapes:** ``alpha [E_l, H]`` with the same H in every layer.
    """
    dst = [str(t) for t in tokens]
    src = dst if src_tokens is None else [str(t) for t in src_tokens]
    if not attention:
        raise ValueError("attention must hold at least one layer")
    layers, H = [], None
    for layer in attention:
        layers.append(_layer_data(layer, len(src), len(dst), H))
        H = layers[-1].pop("heads")
    data = json.dumps({"src": src, "dst": dst, "heads": H, "layers": layers})
    page = _PAGE.replace("__TITLE__", html.escape(title)).replace(
        "__DATA__", data.replace("</", "<\\/"))  # a token "</script>" cannot end the script
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(page, encoding="utf-8")
    return path


_PAGE = r"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>__TITLE__</title>
<style>
 body { font-family: sans-serif; margin: 16px; color: #222; }
 .tok { font-size: 14px; cursor: default; dominant-baseline: middle; }
 .tok.dst:hover, .tok.active { font-weight: bold; fill: #c0392b; }
 .edge { stroke: #1f4e9c; }
 .edge.dim { stroke-opacity: 0.04 !important; }
 .edge.hl { stroke: #e67e22; stroke-opacity: 1 !important; }
 .wlabel { font-size: 11px; fill: #e67e22; dominant-baseline: middle; }
 #info { font-family: monospace; white-space: pre; margin-top: 8px; min-height: 3em; }
 label { margin-right: 12px; }
</style></head>
<body>
<h3>__TITLE__</h3>
<p>Each line is an edge j &rarr; i: source token j (left) sends its value to target token i
(right) with weight &alpha;<sub>ij</sub> (softmax over the incoming edges of i).
Hover a target token to see its incoming edges and their weights.</p>
<label>layer <select id="layer"></select></label>
<label>head <select id="head"></select></label>
<div><svg id="view" xmlns="http://www.w3.org/2000/svg"></svg></div>
<div id="info"></div>
<script>
"use strict";
const DATA = __DATA__;
const NS = "http://www.w3.org/2000/svg";
const ROW = 24, TOP = 20, XS = 170, XD = 470, W = 640;
const view = document.getElementById("view");
const layerSel = document.getElementById("layer"), headSel = document.getElementById("head");
const info = document.getElementById("info");
const n = Math.max(DATA.src.length, DATA.dst.length);
view.setAttribute("width", W); view.setAttribute("height", TOP * 2 + ROW * n);
const ys = j => TOP + ROW * j, yd = i => TOP + ROW * i;

function el(tag, attrs, text) {
  const e = document.createElementNS(NS, tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  if (text !== undefined) e.textContent = text;
  return e;
}
function option(sel, value, text) {
  const o = document.createElement("option"); o.value = value; o.textContent = text; sel.appendChild(o);
}
DATA.layers.forEach((_, l) => option(layerSel, String(l), String(l)));
for (let h = 0; h < DATA.heads; h++) option(headSel, String(h), String(h));
option(headSel, "mean", "mean");

function weight(a, head) {
  if (head === "mean") return a.reduce((x, y) => x + y, 0) / a.length;
  return a[Number(head)];
}
const edgeGroup = el("g", {id: "edges"}), labelGroup = el("g", {id: "wlabels"});
view.appendChild(edgeGroup);
DATA.src.forEach((t, j) => view.appendChild(
  el("text", {class: "tok src", "data-j": j, x: XS - 8, y: ys(j), "text-anchor": "end"}, t)));
DATA.dst.forEach((t, i) => {
  const node = el("text", {class: "tok dst", "data-i": i, x: XD + 8, y: yd(i)}, t);
  node.addEventListener("mouseenter", () => highlight(i));
  node.addEventListener("mouseleave", clear);
  view.appendChild(node);
});
view.appendChild(labelGroup);

function draw() {
  edgeGroup.replaceChildren(); clear();
  const layer = DATA.layers[Number(layerSel.value)];
  let wmax = 1e-12;
  const ws = layer.alpha.map(a => weight(a, headSel.value));
  ws.forEach(w => { wmax = Math.max(wmax, w); });
  layer.edges.forEach(([j, i], e) => {
    const r = ws[e] / wmax;
    edgeGroup.appendChild(el("line", {class: "edge", "data-src": j, "data-dst": i, "data-w": ws[e],
      x1: XS, y1: ys(j), x2: XD, y2: yd(i), "stroke-width": 0.5 + 3.5 * r,
      "stroke-opacity": 0.08 + 0.9 * r}));
  });
}
function highlight(i) {
  clear();
  document.querySelector(`.tok.dst[data-i="${i}"]`).classList.add("active");
  const lines = [];
  for (const e of edgeGroup.children) {
    if (Number(e.dataset.dst) === i) {
      e.classList.add("hl");
      const j = Number(e.dataset.src), w = Number(e.dataset.w);
      labelGroup.appendChild(el("text", {class: "wlabel", "data-src": j, x: XS + 6, y: ys(j) - 7},
                                w.toFixed(3)));
      lines.push(`${DATA.dst[i]} <- ${DATA.src[j]}: ${w.toFixed(3)}`);
    } else {
      e.classList.add("dim");
    }
  }
  info.textContent = lines.join("\n");
}
function clear() {
  for (const e of edgeGroup.children) e.classList.remove("hl", "dim");
  for (const t of view.querySelectorAll(".tok.active")) t.classList.remove("active");
  labelGroup.replaceChildren(); info.textContent = "";
}
layerSel.addEventListener("change", draw);
headSel.addEventListener("change", draw);
draw();
</script>
</body></html>
"""
