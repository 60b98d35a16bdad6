"""Property-based tests: random graphs, masks and shapes against the dense references.

Notation: N_dst target (query) nodes, N_src source (key/value) nodes, E edges j -> i, H heads,
D query/key width, Dv value width per head, B sequences, T/S queries/keys per sequence,
C = embed_dim = H * D.

Properties (each drawn ``max_examples`` times, see the profiles in ``tests/conftest.py``):
  1. ``graph_attention`` == ``dense_attention`` == ``F.scaled_dot_product_attention`` on the
     equivalent mask: outputs, attention weights, gradients of q, k, v, edge_bias, score weights;
     raw ``edge_index`` in any order, or a :class:`TokenGraph`.
  2. ``MultiheadAttention`` == ``nn.MultiheadAttention`` with copied weights (random masks of every
     kind), and ``MultiheadAttentionConv`` on a random graph == ``nn.MultiheadAttention`` on its mask.
  3. every backend in ``kernels.BACKENDS`` == ``backend="reference"`` (a backend that raises its
     documented "cannot serve this graph" error is skipped for that graph).
  4. a duplicated edge is rejected with the documented message, wherever edges enter.
  5. non-finite inputs (NaN, +-inf in q, k, v): every backend gives the reference's NaN and inf
     masks and its finite values; a sequence none of whose edges reads a bad value is finite.
Graphs include empty graphs, empty sequences, one-node graphs, isolated targets, self-loops and
very unequal source/target counts. Tolerances: float32 1e-5 abs (outputs, weights), 1e-4 for
gradients (absolute up to unit scale, relative to max |gradient| beyond); float64 1e-10 / 1e-9.
"""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import event, given, note
from hypothesis import strategies as st

from gnn_attention import MultiheadAttention, MultiheadAttentionConv, graphs
from gnn_attention.attention import kernels
from gnn_attention.attention.functional import dense_attention, graph_attention

from fuzz_strategies import (TOL, assert_close, assert_grad_close, attention_inputs,  # isort: skip
                             backend_cannot_serve, builder_graphs, dense_mask, poisoned,
                             random_graphs, token_graphs)


def _loss_and_grads(out, alpha, wrt, gen_seed):
    """Gradients of a random linear functional of (out, alpha) w.r.t. ``wrt``."""
    gen = torch.Generator().manual_seed(gen_seed)
    loss = (out * torch.randn(out.shape, generator=gen, dtype=out.dtype)).sum()
    if alpha is not None:
        loss = loss + (alpha * torch.randn(alpha.shape, generator=gen, dtype=alpha.dtype)).sum()
    return torch.autograd.grad(loss, wrt, allow_unused=True, materialize_grads=True,
                               retain_graph=True)


def _events(g) -> None:
    """Label the drawn graph (``--hypothesis-show-statistics`` prints how often each occurred)."""
    deg = g.in_degree()
    event("no edges" if g.num_edges == 0 else "has edges")
    if g.num_edges and bool((deg == 0).any()):
        event("isolated targets")
    if bool((g.edge_index[0] == g.edge_index[1]).any()) and not g.bipartite:
        event("self-loops")
    if g.num_dst == 1 and g.num_src <= 1:
        event("one-node graph")
    if bool(((g.src_lengths > 3 * g.dst_lengths.clamp_min(1)) |
             (g.dst_lengths > 3 * g.src_lengths.clamp_min(1))).any()):
        event("very unequal source/target counts")


# ---------------------------------------------------------------------------------------------
# 1. message passing == dense reference == SDPA


@given(g=st.one_of(random_graphs(), builder_graphs()), data=st.data(), as_graph=st.booleans())
def test_graph_attention_equals_dense_and_sdpa(g, data, as_graph):
    graph = graphs.from_edge_index(g[2], g[0], g[1]) if isinstance(g, tuple) else g
    # The TokenGraph (edges sorted by target), or the raw edges in the order they were drawn.
    ei = graph.edge_index if as_graph or not isinstance(g, tuple) else g[2]
    edges = graph if as_graph else ei
    n_src, n_dst = graph.num_src, graph.num_dst
    x = data.draw(attention_inputs(n_src, n_dst, ei.size(1)))
    note(f"N_src={n_src} N_dst={n_dst} E={ei.size(1)} {x.describe()}")
    _events(graph)
    tol_out, tol_grad = TOL[x.dtype]
    leaves = x.leaves()

    out, alpha = graph_attention(x.q, x.k, x.v, edges, edge_bias=x.edge_bias, score=x.score,
                                 score_weight=x.score_weight, scale=x.scale,
                                 return_attention_weights=True)
    # Dense: the whole disjoint union as one [1, H, N_dst, N_src] problem with the equivalent mask.
    mask = dense_mask(ei, n_src, n_dst, x.edge_bias, x.H, x.dtype)
    dq, dk, dv = (t.transpose(0, 1).unsqueeze(0) for t in (x.q, x.k, x.v))
    ref, p = dense_attention(dq, dk, dv, mask, score=x.score, score_weight=x.score_weight,
                             scale=x.scale, return_weights=True)
    ref = ref.squeeze(0).transpose(0, 1)
    ref_alpha = p[0, :, ei[1], ei[0]].transpose(0, 1)  # [E, H] in the order of ei
    assert torch.isfinite(out).all() and torch.isfinite(alpha).all()
    assert_close(out, ref, tol_out)
    assert_close(alpha, ref_alpha, tol_out)
    grads = _loss_and_grads(out, alpha, leaves, x.seed)
    ref_grads = _loss_and_grads(ref, ref_alpha, leaves, x.seed)
    for a, b in zip(grads, ref_grads):
        assert torch.isfinite(a).all()
        assert_grad_close(a, b, tol_grad)
    deg = torch.bincount(ei[1], minlength=n_dst)
    assert (out[deg == 0] == 0).all()  # isolated targets: exactly zero, never NaN

    if x.score in ("scaled_dot", "dot") and x.edge_bias is None:
        # Independent anchor: PyTorch's own fused attention with the boolean (True = allowed) mask.
        sd = F.scaled_dot_product_attention(dq, dk, dv, attn_mask=mask, scale=x.scale_value())
        sd = sd.squeeze(0).transpose(0, 1)
        assert_close(out, sd, tol_out)
        qkv = leaves[:3]
        assert all(a is b for a, b in zip(qkv, (x.q, x.k, x.v)))
        for a, b in zip(_loss_and_grads(out, None, qkv, x.seed + 1),
                        _loss_and_grads(sd, None, qkv, x.seed + 1)):
            assert_grad_close(a, b, tol_grad)


# ---------------------------------------------------------------------------------------------
# 2. the layers == nn.MultiheadAttention with copied weights


@st.composite
def mha_cases(draw):
    H = draw(st.integers(1, 3))
    D = draw(st.integers(1, 5))
    cross = draw(st.booleans())
    B, T = draw(st.integers(1, 3)), draw(st.integers(1, 6))
    S = draw(st.integers(1, 9)) if cross else T
    kdim = draw(st.sampled_from([None, 3, 7])) if cross else None
    vdim = draw(st.sampled_from([None, 2, 5])) if cross else None
    return dict(H=H, C=H * D, B=B, T=T, S=S, cross=cross, kdim=kdim, vdim=vdim,
                bias=draw(st.booleans()), batch_first=draw(st.booleans()),
                kpm=draw(st.sampled_from([None, "bool", "float"])),
                attn=draw(st.sampled_from([None, "bool2d", "float2d", "bool3d", "float3d"])),
                causal=draw(st.booleans()) and not cross, need_weights=draw(st.booleans()),
                average=draw(st.booleans()), seed=draw(st.integers(0, 2 ** 31 - 1)))


def _random_mask(kind, shape, gen):
    if kind is None:
        return None
    blocked = torch.rand(shape, generator=gen) < 0.3
    if kind.startswith("bool"):
        return blocked
    return torch.randn(shape, generator=gen).masked_fill(blocked, float("-inf"))


@given(c=mha_cases())
def test_multihead_attention_equals_torch(c):
    gen = torch.Generator().manual_seed(c["seed"])
    torch.manual_seed(c["seed"])
    ref = torch.nn.MultiheadAttention(c["C"], c["H"], bias=c["bias"], kdim=c["kdim"],
                                      vdim=c["vdim"], batch_first=c["batch_first"])
    if c["bias"]:  # torch initialises biases to zero; random ones test that they are copied
        with torch.no_grad():
            ref.in_proj_bias.normal_(generator=gen)
            ref.out_proj.bias.normal_(generator=gen)
    ours = MultiheadAttention.from_torch(ref)
    B, T, S, C = c["B"], c["T"], c["S"], c["C"]
    q = torch.randn(B, T, C, generator=gen)
    k = torch.randn(B, S, c["kdim"] or C, generator=gen) if c["cross"] else q
    v = torch.randn(B, S, c["vdim"] or C, generator=gen) if c["cross"] else q
    if not c["batch_first"]:
        q, k, v = (t.transpose(0, 1) for t in (q, k, v))
    kpm = _random_mask(c["kpm"], (B, S), gen)
    attn = _random_mask(c["attn"] and c["attn"][:-2], (T, S) if c["attn"] and
                        c["attn"].endswith("2d") else (B * c["H"], T, S), gen)
    if c["causal"]:  # torch reads is_causal as a hint about attn_mask: give it the causal mask
        attn = torch.ones(T, S, dtype=torch.bool).triu(1)
    kw = dict(key_padding_mask=kpm, attn_mask=attn, need_weights=c["need_weights"],
              average_attn_weights=c["average"], is_causal=c["causal"])
    note(str(c))
    out, w = ours(q, k, v, **kw)
    out_ref, w_ref = ref(q, k, v, **kw)
    assert torch.isfinite(out).all()
    rows = torch.isfinite(out_ref).all(-1)  # torch returns NaN where a head sees no key
    assert_close(out[rows], out_ref[rows], 1e-5)
    assert (w is None) == (w_ref is None)
    if w is not None:
        ok = torch.isfinite(w_ref)
        assert torch.isfinite(w).all()
        assert_close(w[ok], w_ref[ok], 1e-5)
    if rows.all():
        params = [p for _, p in sorted(ours.named_parameters())]
        ref_params = [p for _, p in sorted(ref.named_parameters())]
        for a, b in zip(_loss_and_grads(out, None, params, c["seed"]),
                        _loss_and_grads(out_ref, None, ref_params, c["seed"])):
            assert_grad_close(a, b, 1e-4)


@given(g=token_graphs(), data=st.data())
def test_conv_on_any_graph_equals_torch_with_the_dense_mask(g, data):
    H = data.draw(st.integers(1, 3), "H")
    C = H * data.draw(st.integers(1, 4), "D")
    kdim = data.draw(st.sampled_from([C, 3, 6]), "kdim") if g.bipartite else C
    backend = data.draw(st.sampled_from(("message_passing",) + kernels.BACKENDS), "backend")
    seed = data.draw(st.integers(0, 2 ** 31 - 1), "seed")
    torch.manual_seed(seed)
    ref = torch.nn.MultiheadAttention(C, H, kdim=kdim, vdim=kdim, batch_first=True)
    conv = MultiheadAttentionConv.from_torch(ref, backend=backend)
    gen = torch.Generator().manual_seed(seed)
    x_dst = torch.randn(g.num_dst, C, generator=gen)
    x_src = torch.randn(g.num_src, kdim, generator=gen) if g.bipartite else x_dst
    try:
        out = conv((x_src, x_dst) if g.bipartite else x_dst, g)
    except Exception as exc:  # re-raised unless it is the documented refusal
        if backend_cannot_serve(exc):
            return
        raise
    allowed = torch.zeros(g.num_dst, g.num_src, dtype=torch.bool)
    allowed[g.edge_index[1], g.edge_index[0]] = True
    if g.num_dst == 0:
        assert out.shape == (0, C)
        return
    if g.num_src == 0:  # torch cannot attend over zero keys; the graph layer outputs b_O
        assert torch.equal(out, ref.out_proj.bias.detach().expand(g.num_dst, C))
        return
    out_ref, _ = ref(x_dst[None], x_src[None], x_src[None], attn_mask=~allowed)  # True = blocked
    rows = allowed.any(1)
    assert torch.isfinite(out).all()
    assert_close(out[rows], out_ref[0][rows], 1e-5)
    assert_close(out[~rows], ref.out_proj.bias.detach().expand(int((~rows).sum()), C), 1e-6)


# ---------------------------------------------------------------------------------------------
# 3. every kernel == the reference


@given(g=token_graphs(), data=st.data(), raw=st.booleans())
def test_every_backend_equals_reference(g, data, raw):
    x = data.draw(attention_inputs(g.num_src, g.num_dst, g.num_edges))
    tol_out, tol_grad = TOL[x.dtype]
    edges = g.edge_index if raw else g
    kw = dict(edge_bias=x.edge_bias, score=x.score, score_weight=x.score_weight, scale=x.scale,
              return_attention_weights=True)
    leaves = x.leaves()
    out, alpha = graph_attention(x.q, x.k, x.v, edges, backend="reference", **kw)
    ref_grads = _loss_and_grads(out, alpha, leaves, x.seed)
    for backend in kernels.BACKENDS:
        note(f"{g} raw={raw} backend={backend} {x.describe()}")
        try:
            got, got_alpha = graph_attention(x.q, x.k, x.v, edges, backend=backend, **kw)
        except Exception as exc:  # re-raised unless it is the documented refusal
            if backend_cannot_serve(exc):
                event(f"backend {backend}: refused the graph")
                continue
            raise
        event(f"backend {backend}: compared")
        assert_close(got, out, tol_out)
        assert_close(got_alpha, alpha, tol_out)
        for a, b in zip(_loss_and_grads(got, got_alpha, leaves, x.seed), ref_grads):
            assert torch.isfinite(a).all()
            assert_grad_close(a, b, tol_grad)


@given(g=token_graphs(), data=st.data())
def test_non_finite_inputs_reach_exactly_the_reference_rows(g, data):
    x = data.draw(attention_inputs(g.num_src, g.num_dst, g.num_edges))
    q, k, v = data.draw(poisoned(x.q, x.k, x.v))
    kw = dict(edge_bias=x.edge_bias, score=x.score, score_weight=x.score_weight, scale=x.scale)
    with torch.no_grad():
        ref = graph_attention(q, k, v, g, backend="reference", **kw)
        # per-sequence isolation, from the definition: a sequence whose inputs are all finite
        # outputs finite values, whatever the other sequences hold
        for b in range(g.batch_size):
            s0, s1, d0, d1 = (int(t) for t in (g.src_ptr[b], g.src_ptr[b + 1], g.dst_ptr[b],
                                                 g.dst_ptr[b + 1]))
            if torch.isfinite(q[d0:d1]).all() and torch.isfinite(k[s0:s1]).all() \
                    and torch.isfinite(v[s0:s1]).all():
                assert torch.isfinite(ref[d0:d1]).all()
        for backend in kernels.BACKENDS:
            note(f"{g} backend={backend} {x.describe()}")
            try:
                got = graph_attention(q, k, v, g, backend=backend, **kw)
            except Exception as exc:
                if backend_cannot_serve(exc):
                    continue
                raise
            event(f"non-finite, backend {backend}: compared")
            assert torch.equal(got.isnan(), ref.isnan())
            assert torch.equal(got.isinf(), ref.isinf())
            ok = torch.isfinite(ref)
            assert_close(got[ok], ref[ok], TOL[x.dtype][0])


# ---------------------------------------------------------------------------------------------
# 4. duplicate edges are rejected wherever edges enter


@given(g=random_graphs(min_edges=1), data=st.data())
def test_duplicate_edges_are_rejected(g, data):
    src_len, dst_len, ei = g
    picks = data.draw(st.lists(st.integers(0, ei.size(1) - 1), min_size=1, max_size=3), "dups")
    dup = torch.cat([ei, ei[:, picks]], 1)
    dup = dup[:, torch.randperm(dup.size(1), generator=torch.Generator().manual_seed(len(picks)))]
    match = r"duplicate edge\(s\), first j=\d+ -> i=\d+; attention edges form a set"
    with pytest.raises(ValueError, match=match):
        graphs.from_edge_index(dup, src_len, dst_len)
    n_src, n_dst = int(sum(src_len)), int(sum(dst_len))
    q, k, v = torch.zeros(n_dst, 1, 2), torch.zeros(n_src, 1, 2), torch.zeros(n_src, 1, 2)
    with pytest.raises(ValueError, match=match):
        graph_attention(q, k, v, dup)
    with pytest.raises(ValueError, match=match):
        _PYG_LAYER((torch.zeros(n_src, 2), torch.zeros(n_dst, 2)), dup)


_PYG_LAYER = MultiheadAttentionConv(2, 1, backend="message_passing")  # built once: ~0.1 s each
