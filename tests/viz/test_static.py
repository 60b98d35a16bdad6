"""Static figures: each plotting function rendered on tiny inputs with Agg, artists counted.

Sizes are pairwise distinct (T=5, S=4, H=3) so a swapped axis changes the counts.
"""
import matplotlib

matplotlib.use("Agg")

import numpy as np
import pytest
import torch
from conftest import require_minilm
from matplotlib.collections import LineCollection, PathCollection
from matplotlib.patches import FancyArrowPatch

from gnn_attention import MultiheadAttentionConv, graphs
from gnn_attention.viz import static as viz

T, S, H = 5, 4, 3


def _alpha(g, seed=0):
    torch.manual_seed(seed)
    conv = MultiheadAttentionConv(12, H)
    if g.bipartite:
        x = (torch.randn(g.num_src, 12), torch.randn(g.num_dst, 12))
    else:
        x = torch.randn(g.num_dst, 12)
    return conv(x, g, return_attention_weights=True)[1][1].detach()


def _arrows(ax):
    return [p for p in ax.patches if isinstance(p, FancyArrowPatch)]


def _render(fig):
    fig.canvas.draw()  # the real Agg draw: layout and text must survive it


def test_head_weights_picks_head_or_mean():
    a = torch.tensor([[0.2, 0.6, 0.1], [0.8, 0.4, 0.9]])
    assert torch.equal(viz.head_weights(a, 1), a[:, 1])
    assert torch.allclose(viz.head_weights(a, "mean"), a.mean(1))
    with pytest.raises(ValueError, match="head"):
        viz.head_weights(a, 3)


def test_select_edges_top_k_per_target_and_threshold():
    w = torch.tensor([0.1, 0.5, 0.4, 0.7, 0.3, 0.05])
    target = torch.tensor([0, 0, 0, 1, 1, 2])
    assert viz.select_edges(w, target, top_k=1).tolist() == [False, True, False, True, False, True]
    assert viz.select_edges(w, target, top_k=2).tolist() == [False, True, True, True, True, True]
    assert viz.select_edges(w, target, threshold=0.35).tolist() == [False, True, True, True,
                                                                     False, False]
    both = viz.select_edges(w, target, top_k=2, threshold=0.35)
    assert both.tolist() == [False, True, True, True, False, False]


def test_dense_weights_places_each_edge_and_marks_missing_as_nan():
    g = graphs.causal([2, T])  # the second sequence, to exercise the batch offsets
    a = _alpha(g)
    W = viz.dense_weights(g, a, head=2, seq=1)
    assert W.shape == (T, T)
    assert np.isnan(W[0, 1]) and not np.isnan(W[1, 0])
    np.testing.assert_allclose(np.nansum(W, 1), 1.0, atol=1e-6)  # rows are softmaxes
    s, t, ids, _, _ = viz.sequence_edges(g, 1)
    np.testing.assert_allclose(W[t, s], a[ids, 2].numpy())


def test_attention_graph_draws_one_arrow_per_kept_edge_with_labels():
    g = graphs.full([T])
    a = _alpha(g)
    labels = ["the", "cat", "sat", "on", "mat"]
    fig = viz.attention_graph(g, a, labels=labels, head=0, top_k=2)
    _render(fig)
    ax = fig.axes[0]
    assert len(_arrows(ax)) == 2 * T
    nodes = [c for c in ax.collections if isinstance(c, PathCollection)]
    assert len(nodes) == 1 and len(nodes[0].get_offsets()) == T
    assert {t.get_text() for t in ax.texts} == set(labels)
    # Width follows the weight: the heaviest kept edge is drawn the widest.
    widths = [p.get_linewidth() for p in _arrows(ax)]
    assert max(widths) == pytest.approx(4.0)
    full = viz.attention_graph(g, a, threshold=0.0)
    assert len(_arrows(full.axes[0])) == T * T


def test_attention_graph_bipartite_has_both_node_sets():
    g = graphs.cross([S], [T])
    a = _alpha(g)
    fig = viz.attention_graph(g, a, labels=(list("wxyz"), list("abcde")), threshold=0.3)
    _render(fig)
    ax = fig.axes[0]
    nodes = next(c for c in ax.collections if isinstance(c, PathCollection))
    assert len(nodes.get_offsets()) == S + T
    assert len(_arrows(ax)) == int((a.mean(1) >= 0.3).sum())
    with pytest.raises(ValueError, match="edges"):
        viz.attention_graph(g, a[:-1])


def test_heatmap_has_colorbar_labels_and_grey_missing_cells():
    g = graphs.causal([T])
    W = viz.dense_weights(g, _alpha(g))
    fig = viz.attention_heatmap(W, list("abcde"), list("abcde"), title="causal")
    _render(fig)
    ax, cbar_ax = fig.axes  # the colorbar is an axes of its own
    assert cbar_ax.get_ylabel() == "attention weight"
    assert [t.get_text() for t in ax.get_xticklabels()] == list("abcde")
    img = ax.images[0].get_array()
    assert img.shape == (T, T) and int(img.mask.sum()) == T * (T - 1) // 2
    with pytest.raises(ValueError, match="labels"):
        viz.attention_heatmap(W, list("abc"))


def test_alignment_plot_draws_lines_above_threshold():
    W = np.array([[0.7, 0.2, 0.1, 0.0], [0.05, 0.05, 0.9, 0.0],
                  [0.25, 0.25, 0.25, 0.25], [0.0, 0.0, 0.0, 1.0], [0.5, 0.5, 0.0, 0.0]])
    src, tgt = list("wxyz"), list("abcde")
    fig = viz.alignment_plot(W, src, tgt, threshold=0.2)
    _render(fig)
    matrix_ax, line_ax = fig.axes[0], fig.axes[1]
    assert matrix_ax.images[0].get_array().shape == (T, S)
    lines = next(c for c in line_ax.collections if isinstance(c, LineCollection))
    assert len(lines.get_segments()) == int((W >= 0.2).sum()) == 10
    assert {t.get_text() for t in line_ax.texts} == set(src + tgt)
    assert any(a.get_ylabel() == "attention weight" for a in fig.axes)  # colorbar
    with pytest.raises(ValueError, match="len"):
        viz.alignment_plot(W.T, src, tgt)
    matrix_only = viz.alignment_plot(W, src, tgt, lines=False)
    _render(matrix_only)
    assert len(matrix_only.axes) == 2 and matrix_only.axes[1].get_ylabel() == "attention weight"
    assert not matrix_only.axes[0].collections


def test_plot_patterns_draws_each_graph_beside_its_mask():
    pats = viz.pattern_gallery(T=7, w=1, dilation=2, S=4)
    fig = viz.plot_patterns(pats)
    _render(fig)
    assert len(fig.axes) == 2 * len(pats) == 12
    for c, g in enumerate(pats.values()):
        graph_ax, mask_ax = fig.axes[c], fig.axes[len(pats) + c]
        assert len(_arrows(graph_ax)) == g.num_edges
        mask = mask_ax.images[0].get_array()
        assert int(mask.sum()) == g.num_edges


def test_bigbird_like_is_window_plus_global_plus_random_blocks():
    g = graphs.bigbird([9], w=1, global_tokens=(0,), block=3, random_blocks=1, seed=0)
    m = graphs.to_dense_mask(g)[0]
    assert m[0].all() and m[:, 0].all()  # a global token sees and is seen by everyone
    for t in range(9):
        for s in range(max(0, t - 1), min(9, t + 2)):
            assert m[t, s]
    # Random blocks add whole 3 x 3 blocks beyond the window in this seed.
    window_and_global = graphs.to_dense_mask(graphs.union(graphs.window([9], 1), g))[0]
    assert int(m.sum()) > int((graphs.to_dense_mask(graphs.window([9], 1))[0]
                               | torch.arange(9).eq(0).view(1, -1)
                               | torch.arange(9).eq(0).view(-1, 1)).sum())
    assert torch.equal(window_and_global, m)


def test_plot_commands_write_figures_and_reject_bad_input(tmp_path, capsys):
    from gnn_attention.cli.app import main

    out = tmp_path / "p.png"
    assert main(["plot", "patterns", "--length", "6", "--out", str(out)]) == 0
    assert out.stat().st_size > 1000
    html = tmp_path / "a.html"
    assert main(["plot", "attention", "a b c a", "--num-layers", "3", "--num-heads", "2",
                 "--heatmap", str(tmp_path / "h.png"), "--html", str(html)]) == 0
    assert html.read_text().count('"alpha": ') == 3  # one per layer
    assert main(["plot", "alignment", "--src", "le chat", "--tgt", "the cat", "--out",
                 str(tmp_path / "al.png")]) == 0
    assert main(["plot", "attention", "a b", "--head", "7", "--out", str(out)]) == 2
    assert "--head must be in 0..3" in capsys.readouterr().err
    assert main(["plot", "attention", "a b", "--layer", "5", "--out", str(out)]) == 2


def test_random_attention_rows_are_softmaxes_over_the_pattern():
    from gnn_attention.cli.commands.plot import random_attention

    g, alphas = random_attention(list("abcde"), "causal", num_layers=2, num_heads=3)
    assert len(alphas) == 2 and alphas[0].shape == (g.num_edges, 3)
    sums = torch.zeros(g.num_dst, 3).index_add(0, g.edge_index[1], alphas[1])
    assert torch.allclose(sums, torch.ones_like(sums), atol=1e-6)


def test_attention_graph_spring_layout_colours_nodes_by_class():
    import networkx as nx

    G = nx.karate_club_graph()
    ei = torch.tensor(list(G.edges)).t()
    ei = torch.cat([ei, ei.flip(0)], 1)
    g = graphs.from_edge_index(ei, [34], [34])
    a = torch.rand(g.num_edges, 2)
    colours = ["C0" if G.nodes[i]["club"] == "Mr. Hi" else "C1" for i in range(34)]
    fig = viz.attention_graph(g, a, labels=[str(i) for i in range(34)], top_k=1, layout="spring",
                              node_color=colours)
    _render(fig)
    ax = fig.axes[0]
    nodes = next(c for c in ax.collections if isinstance(c, PathCollection))
    assert len(nodes.get_offsets()) == 34 and len(np.unique(nodes.get_facecolors(), axis=0)) == 2
    assert len(_arrows(ax)) == 34  # the heaviest incoming edge of each member


def test_tutorial_karate_small_run(tmp_path):
    """A small version of experiments/tutorial_karate.py: every model trains, the edge-restricted
    layer equals masked nn.MultiheadAttention, the figure is written."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "experiments" / "tutorial_karate.py"
    spec = importlib.util.spec_from_file_location("tutorial_karate", path)
    tut = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tut)
    threads = torch.get_num_threads()
    try:
        res = tut.train_and_evaluate({**tut.CONFIG, "seeds": 2, "epochs": 5}, tmp_path)
    finally:
        torch.set_num_threads(threads)  # the tutorial picks one thread for its tiny tensors
    assert res["labelled"] == 4 and res["test_nodes"] == 30
    assert len(res["accuracy"]) == 5
    assert all(len(a) == 2 and all(0.0 <= x <= 1.0 for x in a) for a in res["accuracy"].values())
    assert res["equals_masked_mha_max_abs"] <= 1e-5
    assert (tmp_path / "docs/figures/tutorial_karate.png").stat().st_size > 5000
    assert "mean +- std" in tut.summary(res)


def test_minilm_attention_is_a_softmax_per_token_on_the_complete_graph():
    from gnn_attention.cli.commands.plot import minilm_attention

    require_minilm()
    toks, g, alphas = minilm_attention("the cat sat")
    assert toks[0] == "[CLS]" and toks[-1] == "[SEP]" and g.num_edges == len(toks) ** 2
    assert len(alphas) == 6 and alphas[0].shape == (g.num_edges, 12)
    sums = torch.zeros(g.num_dst, 12).index_add(0, g.edge_index[1], alphas[5])
    assert torch.allclose(sums, torch.ones_like(sums), atol=1e-5)


def _explanation_module():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "experiments" / "explanation_study.py"
    spec = importlib.util.spec_from_file_location("explanation_study", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_rollout_and_flow_on_hand_computed_layers():
    """Rollout multiplies the residual-mixed layer matrices; flow is a max-flow through them."""
    pytest.importorskip("scipy", reason="the explanation study needs scipy")
    ex = _explanation_module()
    a1 = torch.tensor([[[1.0, 0.0, 0.0], [0.5, 0.5, 0.0], [0.2, 0.3, 0.5]]])  # [H=1, T=3, T]
    a2 = torch.tensor([[[0.0, 1.0, 0.0], [0.0, 0.0, 1.0], [1.0, 0.0, 0.0]]])
    I = torch.eye(3, dtype=torch.float64)
    A1, A2 = 0.5 * a1[0].double() + 0.5 * I, 0.5 * a2[0].double() + 0.5 * I
    R = ex.rollout([a1, a2])
    assert torch.allclose(R[0], A1) and torch.allclose(R[1], A2 @ A1)
    assert torch.allclose(R[1].sum(1), torch.ones(3, dtype=torch.float64))
    # One layer: the only path j -> i is the edge itself, so flow = capacity A1[i, j].
    assert torch.allclose(ex.attention_flow([a1], [0, 1, 2], [0, 1, 2]), A1)
    # Two layers, j = 0 -> i = 1: paths via k = 1 (min(A1[1,0], A2[1,1]) = 0.25) and via
    # k = 2 (min(A1[2,0], A2[1,2]) = 0.1); via k = 0 A2[1,0] = 0. Total 0.35.
    assert ex.attention_flow([a1, a2], [1], [0]).item() == pytest.approx(0.35)


def test_spearman_rows_skip_self_and_short_rows():
    ex = _explanation_module()
    score = torch.tensor([[9.0, 1.0, 2.0, 3.0], [1.0, 9.0, 3.0, 2.0]])
    ref = torch.tensor([[0.0, 1.0, 2.0, 3.0], [3.0, 0.0, 2.0, 1.0]])
    # Row 0 keys {1,2,3}: identical order -> 1; row 1 keys {0,2,3}: (1,3,2) vs (3,2,1) -> -0.5.
    assert ex.spearman_rows(score, ref, [0, 1], [0, 1, 2, 3]) == pytest.approx([1.0, -0.5])
    assert ex.spearman_rows(score[:, :3], ref[:, :3], [0, 1], [0, 1, 2]) == []  # 2 keys left
