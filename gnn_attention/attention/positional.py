"""Positional information for token graphs: absolute encodings per node, relative biases per edge.

Notation: N nodes, E edges j -> i, C = d_model, H heads, D per-head width; t = local position of the
target (query) node i, s = local position of the source (key) node j inside their sequence.

A graph forgets order: attention over a complete graph is permutation-equivariant. Order comes back
in one of two places:

  * on the nodes (absolute): a vector added to each token's embedding, ``sinusoidal_encoding`` or
    ``LearnedPositions``; or a rotation of each node's query/key, ``rotary_tables``/``apply_rotary``
    (RoFormer), which makes ``q_i . k_j`` depend on t - s only;
  * on the edges (relative): a scalar per edge and head added to the score, computed from the
    endpoints' local positions (``edge_positions``): T5 buckets (``t5_bucket``, ``T5RelativeBias``)
    and ALiBi (``alibi_bias``). This is ``edge_bias [E, H]`` of :func:`graph_attention`.
"""
from __future__ import annotations

import math
from typing import Tuple

import torch
from torch import Tensor, nn

from gnn_attention.graphs import TokenGraph
from gnn_attention.graphs.positions import edge_positions, node_positions  # noqa: F401 (re-exported)

# ---------------------------------------------------------------------------------------------
# Absolute positions (per node)


def sinusoidal_encoding(positions: Tensor, d_model: int,
                        dtype: torch.dtype = torch.float32) -> Tensor:
    r"""Vaswani et al.'s fixed encoding, one row per position.

    .. math:: PE(p, 2i) = \sin(p / 10000^{2i/C}), \qquad PE(p, 2i+1) = \cos(p / 10000^{2i/C})

    Computed in float64 and cast, so large positions keep their precision. An odd ``d_model`` drops
    the last cosine column.

    **Shapes:** ``positions [N]`` (integers) -> ``[N, C]``.
    """
    if d_model <= 0:
        raise ValueError(f"d_model must be positive, got {d_model}")
    if positions.dim() != 1 or positions.is_floating_point():
        raise ValueError(f"positions must be a 1-D integer tensor, got {positions.dtype} "
                         f"{list(positions.shape)}")
    two_i = torch.arange(0, d_model, 2, dtype=torch.float64, device=positions.device)
    angle = positions.to(torch.float64).unsqueeze(1) / torch.pow(10000.0, two_i / d_model)
    pe = torch.empty(positions.numel(), d_model, dtype=torch.float64, device=positions.device)
    pe[:, 0::2] = torch.sin(angle)
    pe[:, 1::2] = torch.cos(angle[:, : d_model // 2])
    return pe.to(dtype)


class LearnedPositions(nn.Embedding):
    """Learned absolute positions: a table ``[max_len, C]`` (BERT/GPT-2 style).

    **Shapes:** ``positions [*]`` -> ``[*, C]``. Positions >= ``max_len`` raise (no silent wrap).
    """

    def __init__(self, max_len: int, d_model: int, device=None, dtype=None):
        super().__init__(max_len, d_model, device=device, dtype=dtype)

    def forward(self, positions: Tensor) -> Tensor:
        if positions.numel() and int(positions.max()) >= self.num_embeddings:
            raise ValueError(f"position {int(positions.max())} is beyond max_len="
                             f"{self.num_embeddings} of the learned position table")
        return super().forward(positions)


# ---------------------------------------------------------------------------------------------
# Rotary embeddings (per node, applied to q and k)


def rotary_tables(positions: Tensor, head_dim: int, base: float = 10000.0,
                  dtype: torch.dtype = torch.float32) -> Tuple[Tensor, Tensor]:
    r"""``(cos, sin)`` of the rotation angles ``p * base^{-2i/D}`` for each node, i < D/2.

    Built once per batch and shared by every layer.

    **Shapes:** ``positions [N]`` -> two ``[N, D/2]``.
    """
    if head_dim % 2:
        raise ValueError(f"rotary embeddings need an even head width, got {head_dim}")
    inv = torch.pow(base, -torch.arange(0, head_dim, 2, dtype=torch.float64,
                                        device=positions.device) / head_dim)
    angle = positions.to(torch.float64).unsqueeze(1) * inv
    return torch.cos(angle).to(dtype), torch.sin(angle).to(dtype)


def apply_rotary(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    r"""Rotate each pair of channels ``(x_{2i}, x_{2i+1})`` by the node's angle (RoFormer's
    interleaved pairs):

    .. math:: (x_{2i}, x_{2i+1}) \mapsto (x_{2i}\cos\theta - x_{2i+1}\sin\theta,\;
              x_{2i}\sin\theta + x_{2i+1}\cos\theta), \quad \theta = p\,\mathrm{base}^{-2i/D}

    so that ``rot(q, t) . rot(k, s)`` depends on the positions only through t - s.

    **Shapes:** ``x [N, H, D]``, ``cos, sin [N, D/2]`` -> ``[N, H, D]``.
    """
    if x.dim() != 3 or cos.shape != (x.size(0), x.size(2) // 2) or sin.shape != cos.shape:
        raise ValueError(f"apply_rotary needs x [N, H, D] and cos, sin [N, D/2], got "
                         f"{list(x.shape)}, {list(cos.shape)}, {list(sin.shape)}")
    x1, x2 = x[..., 0::2], x[..., 1::2]
    c, s = cos.unsqueeze(1).to(x.dtype), sin.unsqueeze(1).to(x.dtype)
    return torch.stack([x1 * c - x2 * s, x1 * s + x2 * c], dim=-1).flatten(-2)


# ---------------------------------------------------------------------------------------------
# Relative positions (per edge)


def t5_bucket(relative_position: Tensor, bidirectional: bool = True, num_buckets: int = 32,
              max_distance: int = 128) -> Tensor:
    r"""T5's bucket of a relative position r = s - t (key minus query).

    Half of the buckets (per direction when ``bidirectional``) hold exact distances 0..n/2-1; the
    rest grow logarithmically up to ``max_distance``, beyond which all distances share the last
    bucket. Unidirectional (causal) buckets map every r > 0 (a future key) to bucket 0.

    **Shapes:** ``relative_position [*]`` (int) -> ``[*]`` (int64 in ``[0, num_buckets)``).
    """
    r = relative_position.long()
    bucket = torch.zeros_like(r)
    if bidirectional:
        num_buckets //= 2
        bucket = bucket + (r > 0).long() * num_buckets
        r = r.abs()
    else:
        r = -torch.clamp(r, max=0)
    max_exact = num_buckets // 2
    # log(0) is avoided by clamping: those r are small and take the exact branch anyway.
    large = max_exact + (torch.log(r.clamp_min(1).double() / max_exact)
                         / math.log(max_distance / max_exact) * (num_buckets - max_exact)).long()
    large = large.clamp(max=num_buckets - 1)
    return bucket + torch.where(r < max_exact, r, large)


class T5RelativeBias(nn.Module):
    """A learned scalar per (bucket, head), carried as an edge attribute: ``bias[e, h] =
    W[bucket(s_e - t_e), h]``.

    **Shapes:** ``forward(graph, align)`` -> ``edge_bias [E, H]``.
    """

    def __init__(self, num_heads: int, num_buckets: int = 32, max_distance: int = 128,
                 bidirectional: bool = True, device=None, dtype=None):
        super().__init__()
        self.num_heads, self.num_buckets = num_heads, num_buckets
        self.max_distance, self.bidirectional = max_distance, bidirectional
        self.relative_attention_bias = nn.Embedding(num_buckets, num_heads, device=device,
                                                    dtype=dtype)

    def forward(self, graph: TokenGraph, align: str = "top_left") -> Tensor:
        t, s = edge_positions(graph, align)
        return self.relative_attention_bias(
            t5_bucket(s - t, self.bidirectional, self.num_buckets, self.max_distance))

    def __repr__(self) -> str:
        return (f"{self.__class__.__name__}(heads={self.num_heads}, buckets={self.num_buckets}, "
                f"max_distance={self.max_distance}, bidirectional={self.bidirectional})")


def alibi_slopes(num_heads: int) -> Tensor:
    """ALiBi's per-head slopes: the geometric sequence 2^(-8 h / H), h = 1..H, for H a power of
    two; otherwise those of the nearest lower power of two n, followed by every other slope of 2n
    (Press et al., 2022). **Shapes:** ``[H]`` (float64)."""
    def powers(n: int) -> Tensor:
        return torch.pow(2.0, -8.0 * torch.arange(1, n + 1, dtype=torch.float64) / n)

    if num_heads <= 0:
        raise ValueError(f"num_heads must be positive, got {num_heads}")
    n = 2 ** int(math.floor(math.log2(num_heads)))
    if n == num_heads:
        return powers(n)
    return torch.cat([powers(n), powers(2 * n)[0::2][: num_heads - n]])


def alibi_bias(graph: TokenGraph, num_heads: int, align: str = "top_left",
               dtype: torch.dtype = torch.float32) -> Tensor:
    """ALiBi as an edge attribute: ``bias[e, h] = -m_h |t_e - s_e|`` (for causal graphs s <= t, so
    this is the paper's -m_h (t - s)). **Shapes:** -> ``[E, H]``."""
    t, s = edge_positions(graph, align)
    slopes = alibi_slopes(num_heads).to(graph.device)
    return (-(t - s).abs().double().unsqueeze(1) * slopes).to(dtype)
