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
takes alpha from the CSR kernel's own softmax (exact, ``[E, H]`` scalars only). Under
``torch.compile`` every kernel runs as planned, not the reference: the plan and preprocessing are
made on the host (:mod:`.prepare`, cached on the graph, guarded by dynamo) and the CSR kernel is
a set of custom ops (:mod:`.csr`); docs/compile.md has the details and figures. Half-precision
inputs: the CSR kernel scores and normalises in float32; SDPA accumulates its softmax in float32
internally. Every kernel passes :mod:`.memory`'s guard before it allocates.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

from gnn_attention.attention.kernels import csr, dense, finite, prepare, tiled
from gnn_attention.attention.kernels.memory import AttentionMemoryError
from gnn_attention.attention.kernels.prepare import BACKENDS, KERNELS, choose
from gnn_attention.attention.kernels.prepare import prepare as prepare_graph
from gnn_attention.attention.math import compute_dtype, prepare_query, reference_attention
from gnn_attention.graphs import TokenGraph

__all__ = ["BACKENDS", "KERNELS", "AttentionMemoryError", "choose", "dispatch", "prepare_graph"]


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
    n_dst, H, D = q.shape
    n_src, Dv = k.size(0), v.size(-1)
    bias_heads = 0 if edge_bias is None else edge_bias.size(1)
    if isinstance(graph, TokenGraph) and prepare.signature(
            backend, score, dropout_p, return_attention_weights, H, D, Dv, q.dtype,
            bias_heads) not in graph.cache:  # once per graph and signature (see .prepare)
        opts = {"bias_heads": bias_heads, "score": score, "dropout_p": dropout_p,
                    "return_attention_weights": return_attention_weights, "backend": backend}
        inside = torch.compiler.is_compiling() and not prepare.traceable(
            graph, backend, score, dropout_p, return_attention_weights, bias_heads)
        (prepare.prepare_outside if inside else prepare.prepare)(graph, H, D, Dv, q.dtype, **opts)
    name = prepare.kernel_for(graph, backend, score, dropout_p, return_attention_weights)
    prepare.guard(name, graph, n_dst, n_src, H, D, Dv, q.dtype, bias_heads, dropout_p > 0.0)
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
        sdpa_scale = 1.0 if score == "dot" else (1.0 / math.sqrt(D) if scale is None else scale)
    bias = None if edge_bias is None else edge_bias.to(qs.dtype)
    if name == "dense":
        out = dense.attention(qs, ks, vs, graph, edge_index, bias, sdpa_scale, dropout_p)
    else:
        out = tiled.attention(qs, ks, vs, graph, bias, sdpa_scale)
    if not finite.isolated(name, q, k, v):
        # a non-finite input reached a slot SDPA computes but the graph lacks (see .finite): the
        # CSR kernel, or the reference for dropout, reads exactly the graph's edges
        return dispatch(q, k, v, graph, edge_index, **kw, dropout_p=dropout_p,
                        return_attention_weights=return_attention_weights,
                        backend="csr" if dropout_p == 0.0 else "reference")
    out = out.to(v.dtype)
    if not return_attention_weights:
        return out
    _, alpha = _csr(q, k, v, graph, edges(), **kw)
    return out, alpha.to(q.dtype)


def _csr(q, k, v, graph, edge_index, *, edge_bias, score, score_weight, scale):
    """The CSR kernel in the compute dtype: ``(out [N_dst, H, Dv], alpha [E, H])``."""
    dtype = compute_dtype(q.dtype)
    qc, kc, vc = q.to(dtype), k.to(dtype), v.to(dtype)
    qp = prepare_query(qc, score, score_weight, scale, head_dim=-2)
    return csr.attention(qp, kc, vc, graph, edge_index, edge_bias)
