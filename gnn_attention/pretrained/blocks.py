"""Building blocks the transformers families need: packing by attention mask, one attention module
over token graphs, RMS norm, activations, and the packed key/value cache of incremental decoding.

Notation: B sequences, T padded positions per row, N = sum_b T_b valid tokens (nodes), C model
width, H heads, D width per head (H * D may differ from C, as in T5), E edges j -> i,
L_b tokens cached for sequence b.

A padded batch ``[B, T]`` with an ``attention_mask`` (1 = token, 0 = padding) becomes the disjoint
union of its valid tokens: node n is the n-th 1 of the mask in row-major order, so the nodes of
sequence b are contiguous and in their original order, whatever the padding side. Padding is then
not masked, it is absent: no padding node exists, so no edge can reach one.

The cache keeps, per layer, the keys and values of every decoded token packed the same way
(``[sum_b L_b, H, D]``, sequence b owning a contiguous block). A decoding step inserts one node at
the end of every block (:func:`grow`); beam search re-selects whole blocks (:func:`select`).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gnn_attention.attention.functional import graph_attention
from gnn_attention.graphs import TokenGraph


def check_batch(input_ids: Tensor, attention_mask: Tensor | None, name: str = "input_ids"):
    """``(ids [B, T], mask [B, T] bool)``, the mask defaulting to all tokens; clear errors first."""
    if not isinstance(input_ids, Tensor) or input_ids.dim() != 2:
        raise ValueError(f"{name} must be a [B, T] tensor of token ids")
    if input_ids.dtype not in (torch.int64, torch.int32):
        raise TypeError(f"{name} must hold integer token ids, got {input_ids.dtype}")
    if attention_mask is None:
        return input_ids, torch.ones_like(input_ids, dtype=torch.bool)
    if attention_mask.shape != input_ids.shape:
        raise ValueError(f"attention mask for {name} must have shape {list(input_ids.shape)}, got "
                         f"{list(attention_mask.shape)}")
    if not bool(((attention_mask == 0) | (attention_mask == 1)).all()):
        raise ValueError(f"attention mask for {name} must hold 0 (padding) and 1 (token) only")
    return input_ids, attention_mask.bool()


def lengths_of(mask: Tensor) -> Tensor:
    """Valid tokens per row (``[B]`` int64 on the CPU, as the graph builders take them)."""
    return mask.sum(1).to("cpu", torch.int64)


def check_vocab(input_ids: Tensor, vocab_size: int, name: str = "input_ids") -> None:
    """Reject ids outside ``[0, V)`` before an embedding lookup turns them into an index error."""
    if input_ids.numel() and (int(input_ids.min()) < 0 or int(input_ids.max()) >= vocab_size):
        raise ValueError(f"{name} must lie in [0, {vocab_size}), got values in "
                         f"[{int(input_ids.min())}, {int(input_ids.max())}]")


ACTIVATIONS = {
    "gelu": F.gelu,                                          # erf form
    "gelu_new": lambda x: F.gelu(x, approximate="tanh"),     # GPT-2 and gated-gelu T5
    "gelu_pytorch_tanh": lambda x: F.gelu(x, approximate="tanh"),
    "relu": F.relu,
    "swish": F.silu,
    "silu": F.silu,
}


def activation(name: str):
    """The activation a transformers config names (``hidden_act`` / ``activation_function``)."""
    if name not in ACTIVATIONS:
        raise ValueError(f"activation {name!r} is not supported; one of {sorted(ACTIVATIONS)}")
    return ACTIVATIONS[name]


class RMSNorm(nn.Module):
    r"""Root-mean-square norm without centring or bias (T5):
    :math:`y = w \odot x / \sqrt{\mathrm{mean}(x^2) + \epsilon}`, the mean taken in float32.

    **Shapes:** ``[*, C]`` -> ``[*, C]``.
    """

    def __init__(self, width: int, eps: float = 1e-6):
        super().__init__()
        self.weight, self.eps = nn.Parameter(torch.ones(width)), eps

    def forward(self, x: Tensor) -> Tensor:
        # The mean square is always taken in float32, as T5 does (also for float64 inputs, so a
        # float64 run reproduces T5's to 1e-9); half inputs must not square in half precision.
        y = x * torch.rsqrt(x.float().pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * y.to(self.weight.dtype)

    def __repr__(self) -> str:
        return f"RMSNorm({self.weight.numel()}, eps={self.eps})"


class GraphAttention(nn.Module):
    r"""Multi-head attention over the edges of a token graph, with separate projections:
    :math:`q = x_i W_q,\ k = x_j W_k,\ v = x_j W_v`, score :math:`\sigma\, q_i \cdot k_j + b_{ij}`
    (``scale`` :math:`\sigma`, default :math:`1/\sqrt{D}`; T5 uses 1), softmax over the incoming
    edges of i, output :math:`(\sum_j \alpha_{ij} v_j) W_o`. Separate q/k/v weights because T5's
    inner width H * D is not C; the kernel is :func:`graph_attention`, as for every layer.

    **Shapes:** ``x_src [N_src, C]``, ``x_dst [N_dst, C]``, ``edge_bias [E, H]`` ->
    ``[N_dst, C]``; :meth:`heads` gives ``[N, H, D]``.
    """

    def __init__(self, width: int, heads: int, head_dim: int, bias: bool = True,
                 scale: float | None = None):
        super().__init__()
        inner = heads * head_dim
        self.heads, self.head_dim = heads, head_dim
        self.scale = 1.0 / math.sqrt(head_dim) if scale is None else float(scale)
        self.q, self.k, self.v = (nn.Linear(width, inner, bias=bias) for _ in range(3))
        self.o = nn.Linear(inner, width, bias=bias)

    def heads_of(self, proj: nn.Linear, x: Tensor) -> Tensor:
        """One projection split into heads: ``[N, C]`` -> ``[N, H, D]``."""
        return proj(x).reshape(-1, self.heads, self.head_dim)

    def attend(self, q: Tensor, k: Tensor, v: Tensor, graph: TokenGraph,
               edge_bias: Tensor | None = None) -> Tensor:
        """Attention of projected heads then the output projection: ``-> [N_dst, C]``."""
        out = graph_attention(q, k, v, graph, edge_bias=edge_bias, scale=self.scale)
        return self.o(out.reshape(q.size(0), -1))

    def forward(self, x_src: Tensor, x_dst: Tensor, graph: TokenGraph,
                edge_bias: Tensor | None = None) -> Tensor:
        q = self.heads_of(self.q, x_dst)
        return self.attend(q, self.heads_of(self.k, x_src), self.heads_of(self.v, x_src), graph,
                           edge_bias)

    def __repr__(self) -> str:
        return f"GraphAttention(heads={self.heads}, head_dim={self.head_dim}, scale={self.scale:g})"


# -- the packed cache ---------------------------------------------------------------------------

def _ptr(lengths: Tensor) -> Tensor:
    return torch.cat([lengths.new_zeros(1), lengths.cumsum(0)])


def grow(packed: Tensor, lengths: Tensor, new: Tensor) -> Tensor:
    """Append one node to every sequence of a packed tensor.

    Node n of sequence b moves to n + b (b new nodes were inserted before it); the new node of b
    lands at the end of its block, at ``ptr[b + 1] + b``.

    **Shapes:** ``packed [sum L_b, *]``, ``lengths [B]``, ``new [B, *]`` -> ``[sum L_b + B, *]``.
    """
    # One concatenation of the 2B pieces (block b, then its new node): a copy of the cache and
    # nothing else, no index tensors to build.
    blocks = packed.split(lengths.tolist())
    pieces = [t for b, block in enumerate(blocks) for t in (block, new[b:b + 1])]
    return torch.cat(pieces) if pieces else packed


def select(packed: Tensor, lengths: Tensor, index: Tensor) -> Tensor:
    """The blocks of sequences ``index`` (repeats allowed: beams copying a parent), in that order.

    **Shapes:** ``packed [sum L_b, *]``, ``lengths [B]``, ``index [B']`` -> ``[sum L_index, *]``.
    """
    index = index.to("cpu")
    start, count = _ptr(lengths)[:-1][index], lengths[index]
    rows = torch.repeat_interleave(start - _ptr(count)[:-1], count) + torch.arange(int(count.sum()))
    return packed[rows.to(packed.device)]


def special_tokens(hf_model) -> dict:
    """``decoder_start_token_id``, ``eos_token_id``, ``pad_token_id`` as ``generate`` reads them:
    the model's generation config first, then its config (T5 keeps its start token only there);
    a list of EOS ids is not supported (one id or None)."""
    found = {}
    for name in ("decoder_start_token_id", "eos_token_id", "pad_token_id"):
        sources = (getattr(hf_model, "generation_config", None), hf_model.config)
        values = [getattr(s, name, None) for s in sources if s is not None]
        value = next((v for v in values if v is not None), None)
        if isinstance(value, (list, tuple)):
            if len(value) != 1:
                raise ValueError(f"{name}={value}: only one id is supported")
            value = value[0]
        found[name] = value
    if found["decoder_start_token_id"] is None:  # T5: decoding starts from the padding token
        found["decoder_start_token_id"] = found["pad_token_id"]
    return found
