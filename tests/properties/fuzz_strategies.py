"""Hypothesis strategies for the fuzz tests: random token graphs, attention inputs, dense masks.

Notation: B sequences, T_b/S_b targets/sources of sequence b, N_dst/N_src nodes, E edges j -> i,
H heads, D query/key width, Dv value width, A additive-attention width.

Graph shapes covered on purpose: empty batches (B = 0), empty sequences (T_b = 0 or S_b = 0),
one-node graphs, isolated targets (no incoming edge), self-loops (all / none / random), very unequal
source and target counts (a few targets over tens of sources and the reverse), every builder.
Duplicate edges are drawn only by the test that asserts they are rejected.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Optional

import torch
from hypothesis import strategies as st

from gnn_attention import graphs
from gnn_attention.attention.functional import SCORES

TOL = {torch.float32: (1e-5, 1e-4), torch.float64: (1e-10, 1e-9)}  # (outputs, gradients), abs
# A sequence side is small (half the draws), far larger than the other side (very unequal T and
# S), or empty. Hypothesis favours the first choice of a one_of / sampled_from when it simplifies
# a case, so the common case goes first; edgeless graphs stay frequent but not dominant.
SIZES = st.one_of(st.integers(1, 6), st.integers(1, 6), st.integers(15, 30), st.just(0))


def assert_close(a: torch.Tensor, b: torch.Tensor, atol: float) -> None:
    torch.testing.assert_close(a, b, atol=atol, rtol=0)


def assert_grad_close(a: torch.Tensor, b: torch.Tensor, tol: float) -> None:
    """``tol`` absolute for unit-scale gradients, relative to max |b| beyond: a gradient is a sum
    over up to E edges (a score weight's over all of them), and its float32 rounding grows with it
    (the long run met a bilinear-score weight gradient of 29.4 off by 1.2e-4 = 4e-6 relative)."""
    scale = max(1.0, float(b.abs().max())) if b.numel() else 1.0
    torch.testing.assert_close(a, b, atol=tol * scale, rtol=0)


def backend_cannot_serve(exc: BaseException) -> bool:
    """True for a kernel's documented refusal of a graph it was pinned to but cannot execute
    (``kernels.dispatch``: a ValueError "backend '<name>' cannot run <graph>: <why>")."""
    return isinstance(exc, ValueError) and re.match(r"backend '\w+' cannot run", str(exc)) is not None


@st.composite
def random_graphs(draw, min_edges: int = 0):
    """``(src_lengths, dst_lengths, edge_index [2, E])`` with the edges in random order."""
    B = draw(st.sampled_from([2, 1, 3] if min_edges else [2, 1, 3, 0]))
    bipartite = draw(st.booleans())
    sizes = st.integers(1, 6) if min_edges else SIZES
    dst = draw(st.lists(sizes, min_size=B, max_size=B))
    src = draw(st.lists(sizes, min_size=B, max_size=B)) if bipartite else dst
    density = draw(st.sampled_from([1.0, 0.5, 0.15] if min_edges else [1.0, 0.5, 0.5, 0.15, 0.0]))
    self_loops = draw(st.sampled_from(["random", "all", "none"]))
    isolate = draw(st.sampled_from([0.0, 0.3]))
    gen = torch.Generator().manual_seed(draw(st.integers(0, 2 ** 31 - 1)))
    parts, s0, t0 = [], 0, 0
    for T, S in zip(dst, src):
        allowed = torch.rand(T, S, generator=gen) < density
        if not bipartite and self_loops != "random":
            allowed.fill_diagonal_(self_loops == "all")
        allowed[torch.rand(T, generator=gen) < isolate] = False
        t, s = allowed.nonzero(as_tuple=True)
        parts.append(torch.stack([s + s0, t + t0]))
        s0, t0 = s0 + S, t0 + T
    ei = torch.cat(parts, 1) if parts else torch.zeros(2, 0, dtype=torch.long)
    if ei.size(1) < min_edges:
        ei = torch.zeros(2, 1, dtype=torch.long)  # sequence 0 has a source and a target
    return src, dst, ei[:, torch.randperm(ei.size(1), generator=gen)]


@st.composite
def builder_graphs(draw):
    """A :class:`TokenGraph` from one of the structured builders (what the fast kernels target)."""
    B = draw(st.sampled_from([2, 1, 3, 0]))
    lengths = draw(st.lists(st.integers(0, 9), min_size=B, max_size=B))
    kind = draw(st.sampled_from(["one_node", "full", "causal", "causal_kv", "window", "cross",
                                 "predicate"]))
    align = draw(st.sampled_from(graphs.ALIGNS))
    if kind == "one_node":  # a single token attending to itself, alone or beside empty sequences
        return graphs.causal([0] * draw(st.integers(0, 2)) + [1], align=align)
    if kind == "full":
        return graphs.full(lengths)
    if kind == "causal":
        return graphs.causal(lengths, align=align)
    if kind == "causal_kv":  # queries over a cache of another length (bottom-right: decoding)
        src = draw(st.lists(st.integers(1, 14), min_size=B, max_size=B))
        return graphs.causal(lengths, align=align, src_lengths=src)
    if kind == "window":
        return graphs.window(lengths, draw(st.integers(0, 4)), causal=draw(st.booleans()),
                             dilation=draw(st.integers(1, 3)))
    if kind == "cross":
        src = draw(st.lists(SIZES, min_size=B, max_size=B))
        return graphs.cross(src, lengths, causal=draw(st.booleans()), align=align)
    m, r = draw(st.integers(2, 4)), draw(st.integers(0, 1))
    return graphs.from_predicate(lengths, lambda t, s, T, S: ((t + s) % m == r) | (s == 0),
                                 name="stripes_plus_global")


def token_graphs():
    """Any :class:`TokenGraph`: a builder's, or a random edge set wrapped by ``from_edge_index``."""
    wrapped = random_graphs().map(lambda g: graphs.from_edge_index(g[2], g[0], g[1],
                                                                   bipartite=g[0] != g[1]))
    return st.one_of(builder_graphs(), wrapped)


@dataclass
class Inputs:
    """Leaf tensors and options of one attention call (all tensors require grad)."""

    q: torch.Tensor
    k: torch.Tensor
    v: torch.Tensor
    edge_bias: Optional[torch.Tensor]
    score: str
    score_weight: object
    scale: Optional[float]
    dtype: torch.dtype
    H: int
    seed: int

    def leaves(self):
        extra = [] if self.edge_bias is None else [self.edge_bias]
        sw = self.score_weight
        extra += [] if sw is None else ([sw] if isinstance(sw, torch.Tensor) else list(sw))
        return [self.q, self.k, self.v] + extra

    def scale_value(self) -> float:
        """The factor SDPA needs to reproduce this score ("scaled_dot" or "dot")."""
        if self.score == "dot":
            return 1.0
        return 1.0 / math.sqrt(self.q.size(-1)) if self.scale is None else self.scale

    def describe(self) -> str:
        bias = None if self.edge_bias is None else tuple(self.edge_bias.shape)
        return (f"H={self.H} D={self.q.size(-1)} Dv={self.v.size(-1)} score={self.score} "
                f"scale={self.scale} bias={bias} dtype={self.dtype} seed={self.seed}")


@st.composite
def attention_inputs(draw, n_src: int, n_dst: int, num_edges: int):
    """q ``[N_dst, H, D]``, k ``[N_src, H, D]``, v ``[N_src, H, Dv]``, maybe ``edge_bias [E, H]``
    (or ``[E, 1]``, sometimes with -inf entries) and the score's weights, all random."""
    H, D, Dv = draw(st.integers(1, 3)), draw(st.integers(1, 6)), draw(st.integers(1, 6))
    score = draw(st.sampled_from(SCORES))
    dtype = draw(st.sampled_from([torch.float32, torch.float32, torch.float64]))
    scale = draw(st.sampled_from([None, 0.5])) if score == "scaled_dot" else None
    bias = draw(st.sampled_from([None, "per_head", "shared", "per_head_inf"]))
    mag = draw(st.sampled_from([0.3, 1.0, 3.0]))  # 3.0: peaked softmax rows
    seed = draw(st.integers(0, 2 ** 31 - 1))
    gen = torch.Generator().manual_seed(seed)

    def leaf(*shape, factor=1.0):
        return (torch.randn(*shape, generator=gen, dtype=dtype) * factor).requires_grad_()

    q, k, v = leaf(n_dst, H, D, factor=mag), leaf(n_src, H, D, factor=mag), leaf(n_src, H, Dv)
    sw = None
    if score == "general":
        sw = leaf(H, D, D, factor=1 / math.sqrt(D))
    elif score == "additive":
        A = draw(st.integers(1, 4))
        sw = (leaf(H, D, A), leaf(H, D, A), leaf(H, A))
    edge_bias = None
    if bias is not None:
        edge_bias = torch.randn(num_edges, 1 if bias == "shared" else H, generator=gen, dtype=dtype)
        if bias == "per_head_inf":  # -inf removes an edge for one head only
            edge_bias = edge_bias.masked_fill(torch.rand(edge_bias.shape, generator=gen) < 0.3,
                                              float("-inf"))
        edge_bias.requires_grad_()
    return Inputs(q, k, v, edge_bias, score, sw, scale, dtype, H, seed)


def dense_mask(ei: torch.Tensor, n_src: int, n_dst: int, edge_bias: Optional[torch.Tensor],
               H: int, dtype: torch.dtype) -> torch.Tensor:
    """The mask equivalent to the edges: bool ``[N_dst, N_src]`` (True = allowed, SDPA convention),
    or with ``edge_bias`` a float ``[1, H', N_dst, N_src]`` (-inf off the edges), differentiable."""
    if edge_bias is None:
        allowed = torch.zeros(n_dst, n_src, dtype=torch.bool)
        allowed[ei[1], ei[0]] = True
        return allowed
    Hb = edge_bias.size(1)
    m = torch.full((n_dst, n_src, Hb), float("-inf"), dtype=dtype)
    return m.index_put((ei[1], ei[0]), edge_bias).permute(2, 0, 1).unsqueeze(0)


@st.composite
def poisoned(draw, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor):
    """Copies of q, k, v with a few entries set to NaN, +inf or -inf (at least one when any tensor
    has entries), at random nodes, heads and widths: the non-finite fuzz cases."""
    out = [t.detach().clone() for t in (q, k, v)]
    live = [i for i, t in enumerate(out) if t.numel()]
    if not live:
        return tuple(out)
    for _ in range(draw(st.integers(1, 3))):
        t = out[draw(st.sampled_from(live))]
        flat = t.view(-1)
        flat[draw(st.integers(0, flat.numel() - 1))] = draw(
            st.sampled_from([float("nan"), float("nan"), float("inf"), float("-inf")]))
    return tuple(out)
