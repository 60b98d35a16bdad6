"""The host side of a kernel call: which kernel runs, the memory guard, and the preprocessing a
compiled call needs to find ready on the graph.

Notation: N_dst / N_src target / source nodes, E edges, H heads, D / Dv widths, Hb heads of the
edge bias (0 without one).

Under ``torch.compile`` a kernel call must be one traced graph: no host reads of tensor values
(sequence lengths, edge counts), no numpy, no sparse tensors. So everything that reads values on
the host is done here, eagerly, once per graph and call signature, and cached on the
:class:`~gnn_attention.graphs.TokenGraph` (``graph.cache``): the plan (lengths, kernel), the
memory estimate, the dense layout and masks, the tiles, the CSR structure. The traced code then
only reads that cache; dynamo guards on the Python values it reads there (the lengths, the kernel
name), so a graph with other lengths is planned again, never run with a stale plan.

A graph reaching a compiled call unprepared is prepared by :func:`prepare_outside`, which
``torch.compile`` runs eagerly: one graph break, at the first attention call on that graph.
:func:`prepare` called beforehand (e.g. right after building the graph, or by one eager call)
leaves zero breaks. An implicit graph on the dense kernel without an edge bias needs no break at
all (:func:`traceable`): its plan reads only the Python-int lengths it carries and its layout is
built from shapes, so a model that builds its graphs inside ``forward`` (the ``nn.Transformer``
drop-ins) traces in one piece.
"""
from __future__ import annotations

import torch

from gnn_attention.attention.kernels import csr, dense, memory, plan, select, tiled
from gnn_attention.attention.math import compute_dtype
from gnn_attention.graphs import TokenGraph

KERNELS = ("reference", "dense", "tiled", "csr")
BACKENDS = ("auto",) + KERNELS


def choose(graph, score: str = "scaled_dot", dropout_p: float = 0.0) -> str:
    """The kernel ``backend="auto"`` runs for this graph and options."""
    if score == "additive":
        return "reference"
    name = select.choose(graph)
    return "reference" if dropout_p > 0.0 and name != "dense" else name


def kernel_for(graph, backend: str, score: str, dropout_p: float,
               return_attention_weights: bool) -> str:
    """The kernel a call runs (before the non-finite check of :mod:`.finite`); raises ValueError
    for an unknown backend or a pinned kernel that cannot serve the graph."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    name = choose(graph, score, dropout_p) if backend == "auto" else backend
    if score == "additive" or (dropout_p > 0.0 and (name != "dense" or return_attention_weights)):
        name = "reference"  # see the kernels package docstring
    if name == "tiled" and tiled.check(graph) is not None:
        raise ValueError(f"backend 'tiled' cannot run {graph!r}: {tiled.check(graph)}")
    return name


def _describe(graph, n_dst, n_src, E, H, D, Dv) -> str:
    g = repr(graph) if isinstance(graph, TokenGraph) else f"an edge_index with {E} edges"
    return f"{g} (N_dst={n_dst}, N_src={n_src}, E={E}) with H={H}, D={D}, Dv={Dv}"


def _estimate(name, graph, n_dst, n_src, E, H, D, Dv, itemsize, bias_heads, dropout) -> int:
    if name == "dense":
        return dense.estimate(graph, n_dst, n_src, H, D, Dv, itemsize, bias_heads, dropout)
    if name == "tiled":
        return tiled.estimate(graph, H, D, Dv, itemsize, bias_heads)
    if name == "csr":
        return csr.estimate(n_dst, n_src, E, H, D, Dv, itemsize)
    return E * H * (3 * D + 2 * Dv + 6) * itemsize  # reference: [E, H, D] gathers and products


def guard(name: str, graph, n_dst: int, n_src: int, H: int, D: int, Dv: int,
          dtype: torch.dtype, bias_heads: int, dropout: bool) -> None:
    """The memory guard for kernel ``name`` (the estimate is cached per graph and shape)."""
    E = graph.num_edges if isinstance(graph, TokenGraph) else graph.size(1)
    itemsize = compute_dtype(dtype).itemsize
    est = plan.cached(graph, ("estimate", name, H, D, Dv, itemsize, bias_heads, dropout),
                      lambda: _estimate(name, graph, n_dst, n_src, E, H, D, Dv, itemsize,
                                        bias_heads, dropout))
    memory.guard(name, est, lambda: _describe(graph, n_dst, n_src, E, H, D, Dv))


def signature(backend, score, dropout_p, return_attention_weights, H, D, Dv, dtype, bias_heads):
    """The cache key saying a graph is prepared for calls of this signature."""
    return ("prepared", backend, score, dropout_p > 0.0, bool(return_attention_weights), H, D, Dv,
            dtype, bias_heads)


def prepare(graph: TokenGraph, H: int, D: int, Dv: int, dtype: torch.dtype, *,
            bias_heads: int = 0, score: str = "scaled_dot", dropout_p: float = 0.0,
            return_attention_weights: bool = False, backend: str = "auto") -> str:
    """Plan and preprocess ``graph`` for attention calls with these sizes and options (eagerly;
    idempotent) and return the kernel name. After it, a compiled call on this graph traces
    without a graph break."""
    n_dst, n_src = graph.num_dst, graph.num_src
    plan.lengths(graph)
    graph.num_edges  # an implicit graph counts its edges once, in closed form
    name = kernel_for(graph, backend, score, dropout_p, return_attention_weights)
    guard(name, graph, n_dst, n_src, H, D, Dv, dtype, bias_heads, dropout_p > 0.0)
    work = compute_dtype(dtype) if bias_heads and dtype != compute_dtype(dtype) else dtype
    if name == "dense":
        dense.prepare(graph, n_dst, n_src, work, bias_heads > 0)
    elif name == "tiled":
        tiled.prepare(graph, work, bias_heads > 0)
    if name == "csr" or return_attention_weights:  # returned weights come from the CSR kernel
        csr.structure(graph, graph.edge_index, n_dst, n_src, H)
    graph.cache[signature(backend, score, dropout_p, return_attention_weights, H, D, Dv, dtype,
                          bias_heads)] = name
    return name


def traceable(graph: TokenGraph, backend: str, score: str, dropout_p: float,
              return_attention_weights: bool, bias_heads: int) -> bool:
    """Whether :func:`prepare` reads no tensor value for this graph and signature, so it can run
    inside a traced function: an implicit full / causal / cross graph (Python-int lengths) whose
    call runs the dense kernel without an edge bias (the bias and the returned weights need the
    edges)."""
    if (graph.host_lengths is None or graph.pattern.name not in plan.DENSE_PATTERNS or bias_heads
            or return_attention_weights):
        return False  # other patterns on the dense kernel take their mask from the edges
    return kernel_for(graph, backend, score, dropout_p, False) == "dense"


@torch.compiler.disable
def prepare_outside(graph: TokenGraph, *args, **kwargs) -> None:
    """:func:`prepare`, run eagerly even inside a compiled function (a graph break there)."""
    prepare(graph, *args, **kwargs)
