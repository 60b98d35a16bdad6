"""Execution strategies ("kernels") for :func:`gnn_attention.functional.graph_attention`.

Notation: N_dst / N_src target / source nodes, E edges, H heads, D / Dv widths.

Every kernel computes exactly what :func:`gnn_attention.functional.reference_attention` computes,
behind one signature; the choice is made once per graph (:func:`select.choose`) and cached on the
:class:`~gnn_attention.graphs.TokenGraph` together with each kernel's preprocessing.

    backend      runs                                                  serves
    "reference"  gather -> segment softmax -> scatter (readable)      every graph, every option
    "dense"      4-D SDPA on [B, H, T, S] (is_causal / padding mask)  every graph (memory T x S)
    "tiled"      SDPA on band tiles, dilation by residue classes      window graphs, equal lengths
    "csr"        fused SDDMM -> segment softmax -> SpMM, own backward  every graph
    "auto"       full/causal/cross -> dense, window -> tiled, else csr

The additive score (no dot-product form) always runs the reference. Attention dropout runs in
SDPA (``dropout_p``) when the graph's plan is "dense" and no weights are returned: each weight
alpha_ij is kept with probability 1 - p and scaled by 1 / (1 - p), as in the reference, from
SDPA's own random stream (so the mask differs from the reference's, as it does between any two
draws); ``nn.MultiheadAttention`` trains the same way. Every other dropout case runs the reference,
whose dropped weights can be returned. ``return_attention_weights`` under "dense"/"tiled"
takes alpha from the CSR kernel's own softmax (exact, ``[E, H]`` scalars only). While
``torch.compile`` traces, "auto" runs the reference: the plan lives in a Python dict on the graph
and the CSR kernel builds sparse tensors, neither of which traces into one graph. Half-precision
inputs: the CSR kernel scores and normalises in float32; SDPA accumulates its softmax in float32
internally. Every kernel passes :mod:`.memory`'s guard before it allocates.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

from gnn_attention.attention.kernels import csr, dense, finite, memory, plan, select, tiled
from gnn_attention.attention.kernels.memory import AttentionMemoryError
from gnn_attention.attention.math import compute_dtype, prepare_query, reference_attention
from gnn_attention.graphs import TokenGraph

KERNELS = ("reference", "dense", "tiled", "csr")
BACKENDS = ("auto",) + KERNELS

__all__ = ["BACKENDS", "KERNELS", "AttentionMemoryError", "choose", "dispatch"]


def choose(graph, score: str = "scaled_dot", dropout_p: float = 0.0) -> str:
    """The kernel ``backend="auto"`` runs for this graph and options."""
    if score == "additive" or torch.compiler.is_compiling():
        return "reference"
    name = select.choose(graph)
    return "reference" if dropout_p > 0.0 and name != "dense" else name


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


def dispatch(q: Tensor, k: Tensor, v: Tensor, graph, edge_index: Tensor | None, *,
             edge_bias: Tensor | None, score: str, score_weight, scale: float | None,
             dropout_p: float, return_attention_weights: bool, backend: str):
    """Run the kernel named by ``backend`` (``"auto"``: the planned one for this graph).

    ``graph`` is what the user passed (a TokenGraph or a raw ``[2, E]`` tensor), ``edge_index``
    the validated int64 edges of a raw tensor (None for a TokenGraph: only the kernels that read
    edges ask the graph for them, so a structured graph stays implicit on the dense and tiled
    paths). Raises ValueError when a pinned kernel cannot serve the graph and
    :class:`AttentionMemoryError` when the estimated temporaries exceed the memory limit.

    **Shapes:** q ``[N_dst, H, D]``, k ``[N_src, H, D]``, v ``[N_src, H, Dv]``, edge_bias
    ``[E, H]``/``[E, 1]`` -> out ``[N_dst, H, Dv]`` (and alpha ``[E, H]``).
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    name = choose(graph, score, dropout_p) if backend == "auto" else backend
    if score == "additive" or (dropout_p > 0.0 and (name != "dense" or return_attention_weights)):
        name = "reference"  # see module docstring
    if name == "tiled" and tiled.check(graph) is not None:
        raise ValueError(f"backend 'tiled' cannot run {graph!r}: {tiled.check(graph)}")
    if name in ("dense", "tiled") and not finite.isolated(name, graph, q, k, v):
        # a non-finite input would reach masked slots of SDPA (see .finite): the CSR kernel, or
        # the reference for dropout, reads exactly the graph's edges
        name = "csr" if dropout_p == 0.0 else "reference"
    _guard(name, graph, q, k, v, edge_bias, dropout_p)
    edges = (lambda: graph.edge_index) if edge_index is None else (lambda: edge_index)
    kw = {"edge_bias": edge_bias, "score": score, "score_weight": score_weight, "scale": scale}
    if name == "reference":
        return reference_attention(q, k, v, edges(), dropout_p=dropout_p,
                                   return_attention_weights=return_attention_weights, **kw)
    if name == "csr":
        out, alpha = _csr(q, k, v, graph, edges(), **kw)
        out = out.to(v.dtype)
        return (out, alpha.to(q.dtype)) if return_attention_weights else out
    # dense / tiled: SDPA takes the scale itself, so scaled/dot scores need no copy of q
    dtype = compute_dtype(q.dtype)
    half_bias = edge_bias is not None and q.dtype != dtype
    qs, ks, vs = (t.to(dtype) for t in (q, k, v)) if half_bias else (q, k, v)
    if score == "general":
        qs, sdpa_scale = prepare_query(qs, score, score_weight, None, head_dim=-2), 1.0
    else:
        sdpa_scale = 1.0 if score == "dot" else (1.0 / math.sqrt(q.size(-1)) if scale is None
                                                 else scale)
    bias = None if edge_bias is None else edge_bias.to(qs.dtype)
    if name == "dense":
        out = dense.attention(qs, ks, vs, graph, edge_index, bias, sdpa_scale, dropout_p)
    else:
        out = tiled.attention(qs, ks, vs, graph, bias, sdpa_scale)
    out = out.to(v.dtype)
    if not return_attention_weights:
        return out
    _, alpha = _csr(q, k, v, graph, edges(), **kw)
    return out, alpha.to(q.dtype)


def _guard(name, graph, q, k, v, edge_bias, dropout_p) -> None:
    """The memory guard for kernel ``name`` (the estimate is cached per graph and shape)."""
    n_dst, H, D = q.shape
    n_src, Dv = k.size(0), v.size(-1)
    E = graph.num_edges if isinstance(graph, TokenGraph) else graph.size(1)
    bias_heads = 0 if edge_bias is None else edge_bias.size(1)
    itemsize = compute_dtype(q.dtype).itemsize
    dropout = dropout_p > 0.0
    est = plan.cached(graph, ("estimate", name, H, D, Dv, itemsize, bias_heads, dropout),
                      lambda: _estimate(name, graph, n_dst, n_src, E, H, D, Dv, itemsize,
                                        bias_heads, dropout))
    memory.guard(name, est, lambda: _describe(graph, n_dst, n_src, E, H, D, Dv))


def _csr(q, k, v, graph, edge_index, *, edge_bias, score, score_weight, scale):
    """The CSR kernel in the compute dtype: ``(out [N_dst, H, Dv], alpha [E, H])``."""
    dtype = compute_dtype(q.dtype)
    qc, kc, vc = q.to(dtype), k.to(dtype), v.to(dtype)
    qp = prepare_query(qc, score, score_weight, scale, head_dim=-2)
    return csr.attention(qp, kc, vc, graph, edge_index, edge_bias)
