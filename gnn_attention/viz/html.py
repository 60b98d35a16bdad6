"""An interactive attention view: one self-contained HTML page (inline SVG + JavaScript).

Notation: L layers, H heads, E_l edges j -> i in layer l (j = source/key token, i = target/query
token), ``alpha [E_l, H]`` the weights of layer l.

The page draws the attention graph as two columns of nodes, sources on the left and targets on the
right (a self-attention graph shows each token in both columns: the "head view" popularised by
BertViz, drawn as a graph), one line per edge with opacity and width from its weight. Selectors pick
the layer and the head (or the mean over heads); hovering a target token highlights its incoming
edges and writes each edge's weight next to its source token. Nothing is fetched from a network:
the data are embedded as JSON and the script is inline.

Knockout column (optional, ``knockout=``): a measured effect per edge and head, ``ko [E_l, H]``
aligned like ``alpha`` (NaN = not measured), e.g. from
:func:`gnn_attention.interpret.effects.knockout_effects`. It is drawn as a second fan: the
targets again send lines to a mirrored copy of the source column on the right, width from
|ko| / max |ko| of the layer and head, purple where ko > 0 and green where ko < 0, so a thick
weight line next to a thin knockout line is where the two disagree. The head "mean" of ko is
the mean over the heads where it was measured.

DOM contract (what tests and users can rely on): ``select#layer``, ``select#head`` (values
``"0".."H-1"`` and ``"mean"``); ``text.tok.src[data-j]``, ``text.tok.dst[data-i]``; one
``line.edge[data-src][data-dst][data-w]`` per edge of the current layer (``data-w`` = the weight
for the current head); while a target is hovered its incoming edges carry the class ``hl`` and
``text.wlabel[data-src]`` show their weights (3 decimals); ``#info`` lists them, one line per
incoming edge ``"TARGET <- SOURCE: W"``. With a knockout column also: ``line.edge[data-ko]`` (the
effect for the current head; ``""`` when not measured), one ``line.koedge[data-src][data-dst]
[data-ko]`` per measured edge, ``text.tok.ksrc[data-j]`` (the mirrored sources), while hovering
``text.kolabel[data-src]`` (3 decimals, ``"-"`` when not measured), and the ``#info`` lines read
``"TARGET <- SOURCE: weight W  knockout K"`` (K with 3 decimals or ``not measured``).
"""
from __future__ import annotations

import html
import json
import math
from collections.abc import Sequence
from pathlib import Path

from torch import Tensor

from gnn_attention.graphs import TokenGraph
from gnn_attention.viz.static import sequence_edges

Layer = tuple[TokenGraph | Tensor, Tensor]


def _layer_data(layer: Layer, n_src: int, n_dst: int, num_heads: int | None,
                ko: Tensor | None = None) -> dict:
    if not (isinstance(layer, (tuple, list)) and len(layer) == 2):
        raise TypeError("each layer must be a pair (TokenGraph or edge_index [2, E], alpha [E, H])")
    graph, alpha = layer
    alpha = alpha.detach().float().cpu()
    alpha = alpha.unsqueeze(1) if alpha.dim() == 1 else alpha
    if ko is not None:
        ko = ko.detach().double().cpu()
        ko = ko.unsqueeze(1) if ko.dim() == 1 else ko
        if ko.shape != alpha.shape:
            raise ValueError(f"knockout must have the shape of its layer's alpha "
                             f"{list(alpha.shape)}, got {list(ko.shape)}")
        if bool(ko.isinf().any()):
            raise ValueError("knockout holds an infinite value (NaN marks 'not measured')")
    ids = None
    if isinstance(graph, TokenGraph):
        s, t, ids, T, S = sequence_edges(graph, 0)  # one sequence: the page shows one sentence
        if alpha.size(0) != graph.num_edges:
            raise ValueError(f"alpha has {alpha.size(0)} rows, the graph has {graph.num_edges} edges")
        alpha = alpha[ids]
        ko = None if ko is None else ko[ids]
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
    out = {"edges": list(zip(s.tolist(), t.tolist())), "alpha": alpha.tolist(),
           "heads": alpha.size(1)}
    if ko is not None:  # JSON has no NaN: "not measured" is null
        out["ko"] = [[None if math.isnan(v) else v for v in row] for row in ko.tolist()]
    return out


def to_html(tokens: Sequence[str], attention: Sequence[Layer], path: str | Path, *,
            src_tokens: Sequence[str] | None = None,
            title: str = "Attention as message passing",
            knockout: Sequence[Tensor] | None = None,
            knockout_label: str = "knockout effect") -> Path:
    """Write the interactive view of ``attention`` over ``tokens`` to ``path``; return the path.

    Args:
        tokens: the target (query) tokens; also the sources unless ``src_tokens`` is given.
        attention: one ``(graph, alpha)`` per layer: a :class:`TokenGraph` (its first sequence is
            shown) or a local ``edge_index [2, E]``, and ``alpha [E, H]`` (or ``[E]``) in the
            order of its edges, e.g. the pair returned by ``MultiheadAttentionConv(...,
            return_attention_weights=True)``.
        src_tokens: source (key) tokens of a cross-attention graph.
        knockout: one ``ko [E_l, H]`` per layer, aligned with that layer's alpha (NaN = not
            measured): drawn as the second column.
        knockout_label: what ko measures, shown on the page (e.g. "drop of log p(y_t)").

    **Shapes:** ``alpha [E_l, H]`` with the same H in every layer; ``ko`` like ``alpha``.
    """
    dst = [str(t) for t in tokens]
    src = dst if src_tokens is None else [str(t) for t in src_tokens]
    if not attention:
        raise ValueError("attention must hold at least one layer")
    if knockout is not None and len(knockout) != len(attention):
        raise ValueError(f"knockout has {len(knockout)} layers, attention has {len(attention)}")
    layers, H = [], None
    for k, layer in enumerate(attention):
        layers.append(_layer_data(layer, len(src), len(dst), H,
                                  None if knockout is None else knockout[k]))
        H = layers[-1].pop("heads")
    data = json.dumps({"src": src, "dst": dst, "heads": H, "layers": layers,
                       "knockout": None if knockout is None else str(knockout_label)},
                      allow_nan=False)
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
 .koedge { stroke: #8e44ad; }
 .koedge.neg { stroke: #16a085; }
 .edge.dim, .koedge.dim { stroke-opacity: 0.04 !important; }
 .edge.hl { stroke: #e67e22; stroke-opacity: 1 !important; }
 .koedge.hl { stroke-opacity: 1 !important; }
 .wlabel { font-size: 11px; fill: #e67e22; dominant-baseline: middle; }
 .kolabel { font-size: 11px; fill: #8e44ad; dominant-baseline: middle; }
 .colhead { font-size: 12px; fill: #555; }
 #info { font-family: monospace; white-space: pre; margin-top: 8px; min-height: 3em; }
 label { margin-right: 12px; }
</style></head>
<body>
<h3>__TITLE__</h3>
<p>Each line is an edge j &rarr; i: source token j (left) sends its value to target token i
(right) with weight &alpha;<sub>ij</sub> (softmax over the incoming edges of i).
Hover a target token to see its incoming edges and their weights.</p>
<p id="kohelp" hidden>Right of the targets: the same edges drawn by their measured knockout
effect (<span id="kolabel-text"></span>), purple where removing the edge lowers the output,
green where it raises it. A thick weight line beside a thin knockout line is an edge that is
heavy but not needed, and the other way round.</p>
<label>layer <select id="layer"></select></label>
<label>head <select id="head"></select></label>
<div><svg id="view" xmlns="http://www.w3.org/2000/svg"></svg></div>
<div id="info"></div>
<script>
"use strict";
const DATA = __DATA__;
const NS = "http://www.w3.org/2000/svg";
const KO = DATA.knockout !== null;
const ROW = 24, TOP = 38, XS = 170, XD = 470, XD2 = 600, XK = 900, W = KO ? 1080 : 640;
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
// Knockout of one edge: null when not measured; the head mean skips unmeasured heads.
function knock(k, head) {
  if (head !== "mean") return k[Number(head)];
  const m = k.filter(v => v !== null);
  return m.length ? m.reduce((x, y) => x + y, 0) / m.length : null;
}
const edgeGroup = el("g", {id: "edges"}), koGroup = el("g", {id: "koedges"});
const labelGroup = el("g", {id: "wlabels"});
view.appendChild(edgeGroup); view.appendChild(koGroup);
view.appendChild(el("text", {class: "colhead", x: XS, y: 12, "text-anchor": "middle"}, "weight"));
DATA.src.forEach((t, j) => view.appendChild(
  el("text", {class: "tok src", "data-j": j, x: XS - 8, y: ys(j), "text-anchor": "end"}, t)));
DATA.dst.forEach((t, i) => {
  const node = el("text", {class: "tok dst", "data-i": i, x: XD + 8, y: yd(i)}, t);
  node.addEventListener("mouseenter", () => highlight(i));
  node.addEventListener("mouseleave", clear);
  view.appendChild(node);
});
if (KO) {
  document.getElementById("kohelp").hidden = false;
  document.getElementById("kolabel-text").textContent = DATA.knockout;
  view.appendChild(el("text", {class: "colhead", x: XK, y: 12, "text-anchor": "middle"},
                      "knockout: " + DATA.knockout));
  DATA.src.forEach((t, j) => view.appendChild(
    el("text", {class: "tok ksrc", "data-j": j, x: XK + 8, y: ys(j)}, t)));
}
view.appendChild(labelGroup);

function draw() {
  edgeGroup.replaceChildren(); koGroup.replaceChildren(); clear();
  const layer = DATA.layers[Number(layerSel.value)];
  let wmax = 1e-12, kmax = 1e-12;
  const ws = layer.alpha.map(a => weight(a, headSel.value));
  const ks = KO ? layer.ko.map(k => knock(k, headSel.value)) : [];
  ws.forEach(w => { wmax = Math.max(wmax, w); });
  ks.forEach(k => { if (k !== null) kmax = Math.max(kmax, Math.abs(k)); });
  layer.edges.forEach(([j, i], e) => {
    const r = ws[e] / wmax;
    const attrs = {class: "edge", "data-src": j, "data-dst": i, "data-w": ws[e],
      x1: XS, y1: ys(j), x2: XD, y2: yd(i), "stroke-width": 0.5 + 3.5 * r,
      "stroke-opacity": 0.08 + 0.9 * r};
    if (KO) attrs["data-ko"] = ks[e] === null ? "" : ks[e];
    edgeGroup.appendChild(el("line", attrs));
    if (KO && ks[e] !== null) {
      const q = Math.abs(ks[e]) / kmax;
      koGroup.appendChild(el("line", {class: ks[e] < 0 ? "koedge neg" : "koedge", "data-src": j,
        "data-dst": i, "data-ko": ks[e], x1: XD2, y1: yd(i), x2: XK, y2: ys(j),
        "stroke-width": 0.5 + 3.5 * q, "stroke-opacity": 0.08 + 0.9 * q}));
    }
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
      if (!KO) {
        lines.push(`${DATA.dst[i]} <- ${DATA.src[j]}: ${w.toFixed(3)}`);
        continue;
      }
      const k = e.dataset.ko === "" ? null : Number(e.dataset.ko);
      labelGroup.appendChild(el("text", {class: "kolabel", "data-src": j, x: XK - 6,
        y: ys(j) - 7, "text-anchor": "end"}, k === null ? "-" : k.toFixed(3)));
      lines.push(`${DATA.dst[i]} <- ${DATA.src[j]}: weight ${w.toFixed(3)}  knockout ` +
                 (k === null ? "not measured" : k.toFixed(3)));
    } else {
      e.classList.add("dim");
    }
  }
  for (const e of koGroup.children) e.classList.add(Number(e.dataset.dst) === i ? "hl" : "dim");
  info.textContent = lines.join("\n");
}
function clear() {
  for (const e of edgeGroup.children) e.classList.remove("hl", "dim");
  for (const e of koGroup.children) e.classList.remove("hl", "dim");
  for (const t of view.querySelectorAll(".tok.active")) t.classList.remove("active");
  labelGroup.replaceChildren(); info.textContent = "";
}
layerSel.addEventListener("change", draw);
headSel.addEventListener("change", draw);
draw();
</script>
</body></html>
"""
