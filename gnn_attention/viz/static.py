"""Seeing attention as message passing: static figures (matplotlib + networkx).

Notation: E edges j -> i (``edge_index[0]`` = source j = key/value token, ``edge_index[1]`` =
target i = query token), H heads, T target tokens and S source tokens of one sequence,
``alpha [E, H]`` the attention weights (softmax over the incoming edges of each target, so the
weights into one target sum to 1 per head).

Every function *returns* a :class:`matplotlib.figure.Figure` built without pyplot (safe with the Agg
backend, nothing is shown or saved implicitly); pass ``ax=`` to draw into an existing axes instead.
The interactive HTML view lives in :mod:`gnn_attention.viz.html`.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from matplotlib.colors import to_rgba
from matplotlib.figure import Figure
from torch import Tensor

from gnn_attention import graphs
from gnn_attention.graphs import TokenGraph

Head = int | str  # a head index, or "mean" (average over heads)
EDGE_COLOR = "#1f4e9c"


# ---------------------------------------------------------------------------------------------
# Pure helpers (tested without drawing)


def head_weights(alpha: Tensor, head: Head = "mean") -> Tensor:
    """One weight per edge: ``alpha[:, head]`` or the mean over heads.

    **Shapes:** ``alpha [E, H]`` (or ``[E]``) -> ``[E]``.
    """
    alpha = alpha.detach().float().cpu()
    if alpha.dim() == 1:
        alpha = alpha.unsqueeze(1)
    if alpha.dim() != 2:
        raise ValueError(f"alpha must have shape [E, H] or [E], got {list(alpha.shape)}")
    if head == "mean":
        return alpha.mean(1)
    if not isinstance(head, int) or not 0 <= head < alpha.size(1):
        raise ValueError(f"head must be 'mean' or an int in [0, {alpha.size(1)}), got {head!r}")
    return alpha[:, head]


def sequence_edges(graph: TokenGraph, seq: int = 0):
    """The edges of sequence ``seq`` of a batched graph in local positions.

    Returns ``(s [E_b], t [E_b], ids [E_b], T, S)``: local source/target positions, the ids of those
    edges in ``graph.edge_index`` (to index ``alpha``), and the sequence's sizes.
    """
    if not 0 <= seq < graph.batch_size:
        raise ValueError(f"seq must be in [0, {graph.batch_size}), got {seq}")
    s0, s1 = int(graph.src_ptr[seq]), int(graph.src_ptr[seq + 1])
    d0, d1 = int(graph.dst_ptr[seq]), int(graph.dst_ptr[seq + 1])
    src, dst = graph.edge_index.cpu()
    ids = ((dst >= d0) & (dst < d1)).nonzero().flatten()
    return src[ids] - s0, dst[ids] - d0, ids, d1 - d0, s1 - s0


def _check_alpha(graph: TokenGraph, alpha: Tensor) -> None:
    if alpha.size(0) != graph.num_edges:
        raise ValueError(f"alpha has {alpha.size(0)} rows but the graph has {graph.num_edges} edges")


def dense_weights(graph: TokenGraph, alpha: Tensor, head: Head = "mean", seq: int = 0) -> np.ndarray:
    """Sequence ``seq``'s weights as a matrix ``[T, S]`` (row = target/query, column = source/key);
    pairs with no edge are NaN, so a plot can tell "not allowed" from "weight 0"."""
    _check_alpha(graph, alpha)
    s, t, ids, T, S = sequence_edges(graph, seq)
    out = np.full((T, S), np.nan)
    out[t.numpy(), s.numpy()] = head_weights(alpha, head)[ids].numpy()
    return out


def select_edges(weight: Tensor, target: Tensor, top_k: int | None = None,
                 threshold: float | None = None) -> Tensor:
    """Which edges to draw: the ``top_k`` heaviest incoming edges of every target (ties broken by
    edge order) that also weigh at least ``threshold``.

    **Shapes:** ``weight [E]``, ``target [E]`` -> bool ``[E]``.
    """
    keep = torch.ones_like(weight, dtype=torch.bool)
    if threshold is not None:
        keep &= weight >= threshold
    if top_k is not None:
        if top_k < 1:
            raise ValueError(f"top_k must be >= 1, got {top_k}")
        order = torch.argsort(weight, descending=True, stable=True)
        order = order[torch.argsort(target[order], stable=True)]  # grouped by target, heavy first
        start = torch.searchsorted(target[order], target[order], right=False)
        rank = torch.empty_like(order)
        rank[order] = torch.arange(order.numel()) - start
        keep &= rank < top_k
    return keep


def pattern_gallery(T: int = 8, w: int = 1, dilation: int = 2, S: int | None = None
                    ) -> dict[str, TokenGraph]:
    """The standard patterns over one sequence, by name: full, causal, window, dilated,
    BigBird-like and cross (S source tokens, default T - 2)."""
    S = max(T - 2, 1) if S is None else S
    return {"full": graphs.full([T]), "causal": graphs.causal([T]),
            f"window (w={w})": graphs.window([T], w),
            f"dilated (w={2 * dilation}, d={dilation})": graphs.window([T], 2 * dilation,
                                                                        dilation=dilation),
            "BigBird-like": graphs.bigbird([T], w=w), "cross": graphs.cross([S], [T])}


# ---------------------------------------------------------------------------------------------
# Drawing


def _axes(ax, figsize):
    if ax is not None:
        return ax.figure, ax
    fig = Figure(figsize=figsize, layout="constrained")
    return fig, fig.add_subplot()


def _layout(kind: str, T: int, S: int, bipartite: bool, edges=None):
    """Node positions: ``("src", j)``/``("dst", i)`` for bipartite graphs, ``i`` otherwise.
    ``"spring"`` places a self-attention graph by a force layout of ``edges`` (fixed seed)."""
    if bipartite:
        # Sources on the left column, targets on the right, both top to bottom.
        return {**{("src", j): (0.0, -j * 1.0) for j in range(S)},
                **{("dst", i): (1.0, -i * (S - 1) / max(T - 1, 1)) for i in range(T)}}
    if kind == "circle":
        ang = np.pi / 2 - 2 * np.pi * np.arange(T) / T  # clockwise from the top, reading order
        return {i: (float(np.cos(a)), float(np.sin(a))) for i, a in enumerate(ang)}
    if kind == "line":
        return {i: (float(i), 0.0) for i in range(T)}
    if kind == "spring":
        import networkx as nx

        G = nx.Graph()
        G.add_nodes_from(range(T))
        G.add_edges_from((j, i) for j, i in zip(*edges) if j != i)
        pos = nx.spring_layout(G, seed=0, k=1.5 / max(T, 1) ** 0.5, iterations=200)
        try:  # Kamada-Kawai spreads small graphs more evenly; it needs scipy
            pos = nx.kamada_kawai_layout(G, pos=pos)
        except ImportError:
            pass
        return {i: tuple(map(float, p)) for i, p in nx.rescale_layout_dict(pos).items()}
    raise ValueError(f"layout must be 'circle', 'line' or 'spring', got {kind!r}")


def _draw_graph(ax, s: Tensor, t: Tensor, w: Tensor | None, T: int, S: int, bipartite: bool,
                layout: str, labels=None, node_size: int = 120, node_color="#f2c14e",
                layout_edges=None):
    """Draw nodes and one arrow per edge s -> t; width and opacity grow with the weight ``w``.
    ``layout_edges`` (default the drawn ones) place the nodes of a spring layout.
    Returns ``(node_collection, edge_patches)``."""
    import networkx as nx

    pos = _layout(layout, T, S, bipartite, layout_edges or (s.tolist(), t.tolist()))
    name_s = (lambda j: ("src", j)) if bipartite else (lambda j: j)
    name_d = (lambda i: ("dst", i)) if bipartite else (lambda i: i)
    G = nx.DiGraph()
    G.add_nodes_from(pos)
    edges = [(name_s(j), name_d(i)) for j, i in zip(s.tolist(), t.tolist())]
    G.add_edges_from(edges)
    nodes = nx.draw_networkx_nodes(G, pos, ax=ax, node_size=node_size, node_color=node_color,
                                   edgecolors="#333333", linewidths=0.6)
    rel = (w / w.max().clamp_min(1e-12)).tolist() if w is not None and w.numel() else None
    colors = [to_rgba(EDGE_COLOR, 0.6 if rel is None else 0.15 + 0.85 * r)
              for r in (rel or [None] * len(edges))]
    widths = [1.0] * len(edges) if rel is None else [0.4 + 3.6 * r for r in rel]
    # Arcs for a line layout (forward edges above, backward below); straight otherwise.
    style = "arc3,rad=-0.5" if layout == "line" and not bipartite else "arc3,rad=0.08"
    patches = nx.draw_networkx_edges(G, pos, edgelist=edges, ax=ax, width=widths,
                                     edge_color=colors, arrows=True, arrowstyle="-|>",
                                     arrowsize=7, node_size=node_size, connectionstyle=style) \
        if edges else []
    if labels is not None:
        off = 0.16
        for node, (x, y) in pos.items():
            lab = (labels[0][node[1]] if node[0] == "src" else labels[1][node[1]]) if bipartite \
                else labels[node]
            if bipartite:
                xy, ha = ((x - off, y), "right") if node[0] == "src" else ((x + off, y), "left")
            elif layout == "circle":
                xy, ha = (1.3 * x, 1.3 * y), "center"
            elif layout == "spring":
                xy, ha = (x, y), "center"  # short labels (e.g. node ids) on the nodes themselves
            else:
                xy, ha = (x, y - 0.6), "center"
            ax.text(*xy, str(lab), ha=ha, va="center", fontsize=8)
    ax.set_axis_off()
    if layout == "circle" and not bipartite:
        ax.set_aspect("equal")
        ax.set_xlim(-1.5, 1.5)
        ax.set_ylim(-1.5, 1.5)
    else:
        ax.margins(0.18)
    return nodes, list(patches)


def attention_graph(graph: TokenGraph, alpha: Tensor, labels=None, head: Head = "mean",
                    seq: int = 0, top_k: int | None = None, threshold: float | None = None,
                    layout: str = "circle", title: str | None = None, node_color="#f2c14e",
                    ax=None) -> Figure:
    """Attention drawn as a weighted directed graph: tokens are nodes, an arrow j -> i per edge kept
    by ``top_k``/``threshold`` (see :func:`select_edges`), its width and opacity proportional to
    ``alpha_ij`` of ``head`` (or the mean over heads).

    ``labels``: token strings (``(src_tokens, dst_tokens)`` for a bipartite graph). ``layout``:
    ``"circle"``, ``"line"`` or ``"spring"`` (a force layout of all the sequence's edges, for graphs
    that are not sequences); ignored for bipartite graphs (sources left, targets right).
    ``node_color``: one colour, or one per node (e.g. by class).

    **Shapes:** ``alpha [E, H]`` or ``[E]`` in the order of ``graph.edge_index``.
    """
    _check_alpha(graph, alpha)
    s, t, ids, T, S = sequence_edges(graph, seq)
    w = head_weights(alpha, head)[ids]
    keep = select_edges(w, t, top_k, threshold)
    fig, ax = _axes(ax, (4.5, 4.5))
    _draw_graph(ax, s[keep], t[keep], w[keep], T, S, graph.bipartite, layout, labels,
                node_color=node_color, layout_edges=(s.tolist(), t.tolist()))
    head_txt = "mean over heads" if head == "mean" else f"head {head}"
    ax.set_title(title or f"attention ({head_txt}, {int(keep.sum())} of {len(w)} edges)",
                 fontsize=9)
    return fig


def attention_heatmap(weights, row_labels=None, col_labels=None, title: str | None = None,
                      cmap: str = "viridis", ax=None) -> Figure:
    """A heatmap of one attention matrix (rows = queries/targets, columns = keys/sources) with a
    colorbar; NaN cells (no edge) are drawn in light grey. ``weights``: ``[T, S]`` array or tensor,
    e.g. from :func:`dense_weights` (self- or cross-attention alike)."""
    W = np.asarray(weights.detach().cpu() if isinstance(weights, Tensor) else weights, dtype=float)
    if W.ndim != 2:
        raise ValueError(f"weights must be a [T, S] matrix, got shape {list(W.shape)}")
    fig, ax = _axes(ax, (1.2 + 0.35 * W.shape[1], 0.9 + 0.35 * W.shape[0]))
    cm = __import__("matplotlib").colormaps[cmap].with_extremes(bad="#dddddd")
    im = ax.imshow(np.ma.masked_invalid(W), cmap=cm, vmin=0.0, vmax=max(np.nanmax(W), 1e-12)
                   if np.isfinite(W).any() else 1.0, aspect="auto")
    fig.colorbar(im, ax=ax, label="attention weight")
    for labels, setter, n, rot in ((col_labels, ax.set_xticks, W.shape[1], 90),
                                   (row_labels, ax.set_yticks, W.shape[0], 0)):
        if labels is not None:
            if len(labels) != n:
                raise ValueError(f"got {len(labels)} labels for {n} rows/columns")
            setter(range(n), [str(x) for x in labels], rotation=rot, fontsize=8)
    ax.set_xlabel("source j (key)")
    ax.set_ylabel("target i (query)")
    if title:
        ax.set_title(title, fontsize=9)
    return fig


def alignment_plot(weights, src_tokens: Sequence[str], tgt_tokens: Sequence[str],
                   threshold: float = 0.1, title: str | None = None,
                   lines: bool = True) -> Figure:
    """Cross-attention alignment for translation: left, the ``[T, S]`` matrix (target tokens down,
    source tokens across, colorbar); right (``lines``), the source sentence over the target
    sentence with one line per (source, target) pair weighing at least ``threshold``
    (width/opacity = weight). Long character-level targets read better with ``lines=False``."""
    W = np.asarray(weights.detach().cpu() if isinstance(weights, Tensor) else weights, dtype=float)
    if W.shape != (len(tgt_tokens), len(src_tokens)):
        raise ValueError(f"weights must be [len(tgt_tokens), len(src_tokens)] = "
                         f"{[len(tgt_tokens), len(src_tokens)]}, got {list(W.shape)}")
    from matplotlib.collections import LineCollection

    fig = Figure(figsize=((4 if lines else 1.5) + 0.6 * len(src_tokens),
                          0.8 + (0.4 if lines else 0.25) * len(tgt_tokens)), layout="constrained")
    ax_m, ax_l = fig.subplots(1, 2, width_ratios=[1, 1.2]) if lines else (fig.add_subplot(), None)
    attention_heatmap(W, tgt_tokens, src_tokens, cmap="Greys", ax=ax_m)
    if not lines:
        if title:
            fig.suptitle(title, fontsize=10)
        return fig
    S, T = len(src_tokens), len(tgt_tokens)
    xs, xt = np.linspace(0, 1, S), np.linspace(0, 1, T)
    i, j = np.nonzero(np.nan_to_num(W) >= threshold)
    segs = [[(xs[b], 1.0), (xt[a], 0.0)] for a, b in zip(i, j)]
    lc = LineCollection(segs, linewidths=[0.5 + 4 * W[a, b] for a, b in zip(i, j)],
                        colors=[to_rgba(EDGE_COLOR, 0.2 + 0.8 * W[a, b]) for a, b in zip(i, j)])
    ax_l.add_collection(lc)
    for x, tok in zip(xs, src_tokens):
        ax_l.text(x, 1.04, str(tok), ha="left", va="center", rotation=45, rotation_mode="anchor",
                  fontsize=8)
    for x, tok in zip(xt, tgt_tokens):
        ax_l.text(x, -0.04, str(tok), ha="right", va="center", rotation=45,
                  rotation_mode="anchor", fontsize=8)
    ax_l.set_xlim(-0.08, 1.08)
    ax_l.set_ylim(-0.35, 1.35)
    ax_l.set_axis_off()
    ax_l.set_title(f"source (top) -> target (bottom), weight >= {threshold}", fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


def plot_patterns(patterns: dict[str, TokenGraph] | None = None, T: int = 8) -> Figure:
    """Each pattern drawn as a graph (top: tokens on a line, one arc per edge; bipartite: sources
    left, targets right) beside its dense mask (bottom: black = edge = attention allowed).
    ``patterns`` defaults to :func:`pattern_gallery` with ``T`` tokens."""
    patterns = pattern_gallery(T) if patterns is None else patterns
    fig = Figure(figsize=(2.6 * len(patterns), 5.2), layout="constrained")
    axes = fig.subplots(2, len(patterns), squeeze=False, height_ratios=[1.1, 1])
    for c, (name, g) in enumerate(patterns.items()):
        s, t, _, T_, S_ = sequence_edges(g, 0)
        _draw_graph(axes[0, c], s, t, None, T_, S_, g.bipartite, "line", node_size=40)
        axes[0, c].set_title(f"{name}\n{g.num_edges} edges", fontsize=9)
        mask = graphs.to_dense_mask(g, "sdpa")[0].numpy()
        axes[1, c].imshow(mask, cmap="Greys", vmin=0, vmax=1)
        axes[1, c].set_xlabel("source s", fontsize=8)
        axes[1, c].set_ylabel("target t", fontsize=8)
        axes[1, c].tick_params(labelsize=6)
    return fig
