"""The execution plan's shared pieces: cached per-graph facts (lengths, window parameters) and
the memo every kernel keeps its preprocessing in. The decision itself is :mod:`.select`.

Notation: B sequences, T_b / S_b target / source lengths of sequence b, E edges, w window reach,
d dilation.

The decision reads only what the graph says about itself (``TokenGraph.pattern`` name and params,
the per-sequence lengths, the edge count), never the edges one by one, so it costs microseconds.
It is stored in ``graph.cache["kernel"]``; kernels store their own preprocessing (masks, CSR
structures, tile indices) in ``graph.cache`` under their own keys, so every layer that sees the same
graph object reuses it. A raw ``edge_index`` tensor has no cache and no structure: it runs the CSR
kernel, whose preprocessing (a sort) is then paid at every call.

    pattern                                     kernel
    full, causal, cross, cross_causal           dense   (SDPA on [B, H, T, S], is_causal if aligned)
    window (uniform lengths, band << T)         tiled   (SDPA on band tiles, dilation by residues)
    any other graph with >= 10 % of T x S       dense   (SDPA with the graph as a mask)
    anything sparser, raw edge_index            csr     (fused sampled-dense-dense / sparse matmul)
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch import Tensor

from gnn_attention.graphs import TokenGraph

DENSE_PATTERNS = ("full", "causal", "cross", "cross_causal")
# Above this fraction of allowed (t, s) pairs a masked dense SDPA beats the CSR kernel: at T=4096
# (gnn-attention bench) CSR was 2.6x faster than masked SDPA on P8 (0.8 % of pairs) and 1.5x slower
# on P7 (12 %).
DENSE_MASK_DENSITY = 0.1


@dataclass(frozen=True)
class Lengths:
    """Per-sequence sizes on the CPU (python ints: no device sync in the hot path)."""

    T: tuple
    S: tuple

    @property
    def B(self) -> int:
        return len(self.T)

    @property
    def T_max(self) -> int:
        return max(self.T) if self.T else 0  # (dynamo's max() takes no default=)

    @property
    def S_max(self) -> int:
        return max(self.S) if self.S else 0

    @property
    def uniform(self) -> bool:
        return len(set(self.T)) <= 1 and len(set(self.S)) <= 1


def cached(graph: TokenGraph | Tensor, key, build: Callable[[], object]):
    """``build()`` once per TokenGraph (memoised in ``graph.cache[key]``); every call for tensors."""
    if not isinstance(graph, TokenGraph):
        return build()
    if key not in graph.cache:
        graph.cache[key] = build()
    return graph.cache[key]


def lengths(graph: TokenGraph) -> Lengths:
    """The graph's sequence lengths, cached (an implicit graph's Python ints: no tensor read)."""
    def build() -> Lengths:
        if graph.host_lengths is not None:
            src, dst = graph.host_lengths
            return Lengths(dst, src)
        return Lengths(tuple(graph.dst_lengths.tolist()), tuple(graph.src_lengths.tolist()))

    return cached(graph, "lengths", build)


def window_params(graph: TokenGraph):
    """``(w, causal, dilation)`` of a window pattern, or None."""
    p = graph.pattern
    if p.name == "window" and len(p.params) == 3:
        return p.params
    return None


def connect(*xs: Tensor) -> Tensor:
    """An exact 0 that depends on every input, so an empty result still has (zero) gradients.

    A sum over zero entries, not ``x.sum() * 0``: that is NaN for a NaN input and for a float16
    sum that overflows (q of magnitude 1e4 over 10 rows was enough), where the answer is 0.
    """
    return sum(x[:0].sum() for x in xs if x is not None)
