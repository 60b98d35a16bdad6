"""The math of attention as pure functions: scores, the segment softmax, the readable
message-passing reference and the dense (matrix) reference every path is checked against.

Notation: N_dst target (query) nodes, N_src source (key/value) nodes, E edges j -> i, H heads,
D query/key width per head, Dv value width per head, A additive-attention width; dense tensors use
B (batch), T (queries), S (keys).

Message passing form, for every target i with incoming edges N(i) = {j : (j -> i) in E}:

    e_ij     = score(q_i, k_j) + bias_ij                      (one scalar per edge and head)
    alpha_ij = exp(e_ij - m_i) / sum_{j' in N(i)} exp(e_ij' - m_i),   m_i = max_{j in N(i)} e_ij
    out_i    = sum_{j in N(i)} alpha_ij v_j

Score functions (per head):
    "scaled_dot"  q.k / sqrt(D)   (or ``scale`` * q.k)          -- Transformer (default)
    "dot"         q.k                                           -- Luong "dot"
    "general"     q^T W k,  W: [H, D, D]                        -- Luong "general" (bilinear)
    "additive"    w^T tanh(W_q q + W_k k), (W_q [H, D, A], W_k [H, D, A], w [H, A]) -- Bahdanau

A target with no incoming edge (a fully masked row) outputs exactly zero with zero gradients, as
SDPA's safe softmax does; ``strict=True`` raises instead. Scores of float16/bfloat16 inputs are
computed and normalised in float32.
"""
from __future__ import annotations

import math
from typing import Optional, Tuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor

from gnn_attention.graphs import TokenGraph, check_edge_index

SCORES = ("scaled_dot", "dot", "general", "additive")
ScoreWeight = Union[None, Tensor, Tuple[Tensor, Tensor, Tensor]]


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """Half-precision inputs are scored and normalised in float32 (exact softmax, no overflow)."""
    return torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype


def check_score(score: str, score_weight: ScoreWeight, H: int, D: int) -> None:
    """Validate a score name and the shapes of its weights."""
    if score not in SCORES:
        raise ValueError(f"score must be one of {SCORES}, got {score!r}")
    if score == "general":
        if not isinstance(score_weight, Tensor) or score_weight.shape != (H, D, D):
            raise ValueError(f"score 'general' needs score_weight of shape [H, D, D] = "
                             f"{[H, D, D]}, got {_shape(score_weight)}")
    elif score == "additive":
        ok = isinstance(score_weight, (tuple, list)) and len(score_weight) == 3
        if not ok or score_weight[0].shape[:2] != (H, D) or score_weight[1].shape[:2] != (H, D) \
                or score_weight[2].shape != (H, score_weight[0].shape[2]) \
                or score_weight[1].shape[2] != score_weight[0].shape[2]:
            raise ValueError(f"score 'additive' needs score_weight = (W_q [H, D, A], W_k [H, D, A], "
                             f"w [H, A]) with H={H}, D={D}, got {_shape(score_weight)}")
    elif score_weight is not None:
        raise ValueError(f"score {score!r} takes no score_weight")


def _shape(x):
    if isinstance(x, (tuple, list)):
        return [_shape(t) for t in x]
    return list(x.shape) if isinstance(x, Tensor) else type(x).__name__


def prepare_query(q: Tensor, score: str, score_weight: ScoreWeight, scale: Optional[float],
                  head_dim: int = -3) -> Tensor:
    """Fold the score's query-side transform into q so that ``score(q, k) = q'.k``.

    Exact rewrites: scaled dot -> q * scale; general q^T W k -> (q^T W).k. ``head_dim`` is the axis
    of H in ``q`` (``[N, H, D]``: -2; ``[B, H, T, D]``: -3). Not defined for "additive".
    """
    if score == "scaled_dot":
        return q * (1.0 / math.sqrt(q.size(-1)) if scale is None else scale)
    if score == "dot":
        return q
    if score == "general":
        w = score_weight.to(q.dtype)
        return torch.einsum("nhd,hde->nhe" if head_dim == -2 else "bhtd,hde->bhte", q, w)
    raise ValueError(f"score {score!r} has no query-side form")


def _additive_parts(q: Tensor, k: Tensor, score_weight, spec: str):
    w_q, w_k, w = (t.to(q.dtype) for t in score_weight)
    return torch.einsum(spec, q, w_q), torch.einsum(spec, k, w_k), w


# ---------------------------------------------------------------------------------------------
# Dense reference


def dense_attention(q: Tensor, k: Tensor, v: Tensor, mask: Optional[Tensor] = None, *,
                    score: str = "scaled_dot", score_weight: ScoreWeight = None,
                    scale: Optional[float] = None, return_weights: bool = False):
    """Matrix attention, the reference every graph path is checked against.

    ``mask`` broadcasts to ``[B, H, T, S]``: bool with the SDPA convention (True = allowed) or float
    added to the scores (-inf = blocked). Fully masked rows output zero (never NaN).

    Shapes: q ``[B, H, T, D]``, k ``[B, H, S, D]``, v ``[B, H, S, Dv]`` -> ``[B, H, T, Dv]``
    (and weights ``[B, H, T, S]`` with ``return_weights``).
    """
    check_score(score, score_weight, q.size(-3), q.size(-1))
    dtype = compute_dtype(q.dtype)
    qc, kc, vc = q.to(dtype), k.to(dtype), v.to(dtype)
    if score == "additive":
        a, b, w = _additive_parts(qc, kc, score_weight, "bhtd,hda->bhta")
        s = (torch.tanh(a.unsqueeze(-2) + b.unsqueeze(-3)) * w[:, None, None, :]).sum(-1)
    else:
        s = prepare_query(qc, score, score_weight, scale) @ kc.transpose(-1, -2)
    if mask is not None:
        s = s.masked_fill(~mask, float("-inf")) if mask.dtype == torch.bool else s + mask.to(dtype)
    # amax cannot reduce zero keys (S = 0); every row is then empty and outputs zero.
    m = s.detach().amax(-1, keepdim=True) if s.size(-1) else s.new_zeros(s.shape[:-1] + (1,))
    m = m.masked_fill(m == float("-inf"), 0.0)  # fully masked row: every exp() below is 0
    e = (s - m).exp()
    z = e.sum(-1, keepdim=True)
    p = e / torch.where(z > 0, z, torch.ones_like(z))
    out = (p @ vc).to(v.dtype)
    return (out, p.to(q.dtype)) if return_weights else out


# ---------------------------------------------------------------------------------------------
# Message passing: edge scores -> segment softmax -> aggregation


def edge_scores(q: Tensor, k: Tensor, edge_index: Tensor, *, score: str = "scaled_dot",
                score_weight: ScoreWeight = None, scale: Optional[float] = None) -> Tensor:
    """One score per edge and head: ``e[j->i, h] = score(q_i[h], k_j[h])``.

    Shapes: q ``[N_dst, H, D]``, k ``[N_src, H, D]``, edge_index ``[2, E]`` -> ``[E, H]``.
    """
    src, dst = edge_index[0], edge_index[1]
    if score == "additive":
        a, b, w = _additive_parts(q, k, score_weight, "nhd,hda->nha")
        return (torch.tanh(a[dst] + b[src]) * w).sum(-1)
    return (prepare_query(q, score, score_weight, scale, head_dim=-2)[dst] * k[src]).sum(-1)


def segment_softmax(scores: Tensor, index: Tensor, num_targets: int) -> Tensor:
    """Exact softmax of ``scores [E, H]`` over the edges that share a target ``index [E]``.

    The per-target maximum is subtracted (detached: softmax is shift-invariant, so its gradient is
    exactly zero); targets whose scores are all -inf, or who have no edge, get weight 0, not NaN.
    """
    H = scores.size(1)
    idx = index.view(-1, 1).expand(-1, H)
    m = scores.new_full((num_targets, H), float("-inf"))
    m = m.scatter_reduce(0, idx, scores.detach(), reduce="amax", include_self=True)
    m = m.masked_fill(m == float("-inf"), 0.0)
    e = (scores - m[index]).exp()
    z = scores.new_zeros(num_targets, H).index_add(0, index, e)
    z = torch.where(z > 0, z, torch.ones_like(z))  # only where every numerator is exactly 0
    return e / z[index]


def aggregate(alpha: Tensor, v: Tensor, edge_index: Tensor, num_targets: int) -> Tensor:
    """``out_i = sum_j alpha_ij v_j``: ``alpha [E, H]``, ``v [N_src, H, Dv]`` -> ``[N_dst, H, Dv]``."""
    msg = alpha.unsqueeze(-1) * v[edge_index[0]]
    return v.new_zeros(num_targets, v.size(1), v.size(2)).index_add(0, edge_index[1], msg)


def check_inputs(q, k, v, edge_index, edge_bias, score, score_weight, scale=None):
    """Validate shapes, dtypes and the graph before any computation.

    Returns the validated int64 ``edge_index`` of a raw ``[2, E]`` tensor, and None for a
    :class:`TokenGraph`: its edges are correct by construction and a structured graph may not hold
    them at all (only the kernels that read edges ask for them).
    """
    _check_nodes(q, k, v, score)
    check_score(score, score_weight, q.size(1), q.size(2))
    if isinstance(edge_index, TokenGraph):
        if (edge_index.num_src, edge_index.num_dst) != (k.size(0), q.size(0)):
            raise ValueError(f"graph has {edge_index.num_src} source and {edge_index.num_dst} "
                             f"target nodes, but k has {k.size(0)} rows and q has {q.size(0)}")
        ei, E = None, edge_index.num_edges
    else:
        ei = check_edge_index(edge_index, k.size(0), q.size(0))
        E = ei.size(1)
    if edge_bias is not None and not isinstance(edge_bias, Tensor):
        raise TypeError(f"edge_bias must be a Tensor [E, H] or None, got {type(edge_bias).__name__}")
    if edge_bias is not None and not edge_bias.is_floating_point():  # bool/int/complex: no score
        raise TypeError(f"edge_bias must be a real floating-point tensor (it is added to the "
                        f"scores), got {edge_bias.dtype}")
    if edge_bias is not None and (edge_bias.dim() != 2 or edge_bias.size(0) != E
                                  or edge_bias.size(1) not in (1, q.size(1))):
        raise ValueError(f"edge_bias must have shape [E, H] or [E, 1] with E={E}, "
                         f"H={q.size(1)}, got {_shape(edge_bias)}")
    check_score_range(q, k, score, score_weight, scale)
    return ei


def _check_nodes(q, k, v, score) -> None:
    for name, t in (("q", q), ("k", k), ("v", v)):
        if not isinstance(t, Tensor) or t.dim() != 3:
            raise ValueError(f"{name} must be a [N, H, D] tensor, got {_shape(t)}")
    if not (q.dtype == k.dtype == v.dtype):
        raise TypeError(f"q, k, v must share a dtype, got {q.dtype}, {k.dtype}, {v.dtype}")
    if not q.is_floating_point():
        raise TypeError(f"q, k, v must be floating point, got {q.dtype}")
    if q.size(1) == 0:
        raise ValueError(f"q, k, v need at least one head, got shapes {_shape(q)}, {_shape(k)}, "
                         f"{_shape(v)}")
    if q.size(1) != k.size(1) or k.size(1) != v.size(1):
        raise ValueError(f"q, k, v must have the same number of heads, got shapes "
                         f"{_shape(q)}, {_shape(k)}, {_shape(v)}")
    if q.size(2) == 0 or k.size(2) == 0:  # 1 / sqrt(D) and an empty dot product mean nothing
        raise ValueError(f"q and k need a head width D >= 1, got shapes {_shape(q)}, {_shape(k)}")
    if score != "additive" and q.size(2) != k.size(2):
        raise ValueError(f"q and k must have the same head width, got {q.size(2)} and {k.size(2)}")
    if k.size(0) != v.size(0):
        raise ValueError(f"k and v must have one row per source node, got {k.size(0)} and {v.size(0)}")


# Largest float32: half-precision scores are computed in float32 (see compute_dtype).
FLOAT32_MAX = torch.finfo(torch.float32).max


def _finite_amax(x: Tensor) -> float:
    """max |x| over the finite entries (a NaN or inf input follows the reference's rules instead)."""
    a = x.detach().abs()
    return float(torch.where(torch.isfinite(a), a, 0).amax())


def check_score_range(q: Tensor, k: Tensor, score: str, score_weight: ScoreWeight,
                      scale: Optional[float]) -> None:
    """Raise before computing if bfloat16 inputs could give a dot-product score beyond float32.

    bfloat16 spans float32's exponent range, so ``|q.k| <= D max|q| max|k|`` can reach 1e77 while
    the scores are held in float32 (max 3.4e38): an overflowed score turns its row into NaN. The
    bound is checked on the host (two reductions); float16 (max 65504) cannot overflow float32
    scores, float32/float64 inputs are scored in their own dtype as the reference does. Under
    ``torch.compile`` the check is skipped (it reads values on the host).
    """
    if q.dtype != torch.bfloat16 or score == "additive" or not q.numel() or not k.numel() \
            or torch.compiler.is_compiling():
        return
    c = 1.0 / math.sqrt(q.size(-1)) if scale is None and score == "scaled_dot" else \
        (1.0 if scale is None else abs(float(scale)))
    qm, km = _finite_amax(q), _finite_amax(k)
    bound = qm * km * q.size(-1) * c  # a Python float (float64): no overflow up to 1e308
    if score == "general":
        bound *= _finite_amax(score_weight) * q.size(-1)
    if bound > FLOAT32_MAX / 2:  # half the range: headroom for the added bias and the max
        raise ValueError(f"bfloat16 inputs this large (max |q| = {qm:.3g}, max "
                         f"|k| = {km:.3g}) could give attention scores up to "
                         f"{bound:.3g}, beyond the float32 range the scores are computed in; scale "
                         f"q and k down (e.g. normalise them) or pass float64 inputs")


def reference_attention(q: Tensor, k: Tensor, v: Tensor, edge_index: Tensor, *,
                        edge_bias: Optional[Tensor] = None, score: str = "scaled_dot",
                        score_weight: ScoreWeight = None, scale: Optional[float] = None,
                        dropout_p: float = 0.0, return_attention_weights: bool = False):
    """The readable form of :func:`graph_attention` (inputs already validated, ``edge_index``
    a ``[2, E]`` int64 tensor): per-edge scores, segment softmax by target, weighted scatter-sum."""
    dtype = compute_dtype(q.dtype)
    qc, kc, vc = q.to(dtype), k.to(dtype), v.to(dtype)
    s = edge_scores(qc, kc, edge_index, score=score, score_weight=score_weight, scale=scale)
    if edge_bias is not None:
        s = s + edge_bias.to(dtype)
    alpha = segment_softmax(s, edge_index[1], q.size(0))
    if dropout_p > 0.0:
        alpha = F.dropout(alpha, dropout_p)
    out = aggregate(alpha, vc, edge_index, q.size(0)).to(v.dtype)
    return (out, alpha.to(q.dtype)) if return_attention_weights else out
