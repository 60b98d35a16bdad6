"""Masks in PyTorch's conventions -> a token graph and a per-edge bias.

Notation: B batch, T queries, S keys, H heads, E edges, Hb = 1 or H (heads of the bias),
L_b = number of unpadded keys of sequence b.

``nn.MultiheadAttention`` takes a ``key_padding_mask [B, S]``, an ``attn_mask [T, S]`` or
``[B * H, T, S]`` and ``is_causal``; boolean masks say True = blocked, float masks are added to the
scores (-inf = blocked; NaN is kept and propagates, as in torch). Here they become edges (a pair is
an edge when at least one head may attend) and, where a float mask or a per-head mask leaves
something per edge, ``edge_bias [E, Hb]``.

Recognisable masks are not converted entry by entry (:func:`masks_to_graph`):

    masks                                               graph
    none                                                full(T) / cross(S -> T)
    is_causal, or attn_mask == the causal mask          causal (top-left, as SDPA is_causal)
    key padding that pads a suffix (right padding)      keys s < L_b (and s <= t if causal)
                                                        over all B * S key nodes ("padded_prefix")
    a float mask without -inf (an additive bias)        the graph above + edge_bias, no search

Those graphs are built from shapes and lengths alone and cached (bounded, keyed by shapes,
lengths and device): a repeated call reuses the graph and with it the kernels' plan. (The
right-padding graph still holds its edges: the first call with new lengths pays O(E) once.)
Anything else (arbitrary bool masks, -inf patterns, per-head masks) is converted edge by edge,
at every call.
"""
from __future__ import annotations

import functools
import weakref
from collections import OrderedDict

import torch
from torch import Tensor

from gnn_attention.graphs.builders import causal, cross, full
from gnn_attention.graphs.convert import from_dense_mask
from gnn_attention.graphs.core import Pattern, TokenGraph, from_edge_index
from gnn_attention.graphs.positions import edge_positions, edge_sequences

GRAPH_CACHE_SIZE = 8  # graphs kept (a padded one at T=1024, B=8 holds ~0.1 GB of edges)
BIAS_CACHE_SIZE = 2  # repeated float masks kept as per-edge biases (B T S floats each)
# (id of the mask, B, dtype) -> (weak reference to the mask, a copy of its values, edge_bias)
_BIAS_CACHE: OrderedDict = OrderedDict()


class MaskShapeError(ValueError, RuntimeError):
    """A mask of the wrong shape (torch raises RuntimeError for ``attn_mask`` shapes)."""


class MaskTypeError(TypeError, AssertionError):
    """A mask of an unsupported dtype (torch asserts: only bool and floating masks)."""


class PaddingShapeError(ValueError, AssertionError):
    """A key padding mask of the wrong shape (torch asserts)."""


def _check(B, T, S, H, key_padding_mask, attn_mask) -> None:
    for name, m in (("key_padding_mask", key_padding_mask), ("attn_mask", attn_mask)):
        if m is not None and m.dtype != torch.bool and not m.is_floating_point():
            raise MaskTypeError(f"only bool and floating types of {name} are supported, got "
                                f"{m.dtype}")
    if key_padding_mask is not None and key_padding_mask.shape != (B, S):
        raise PaddingShapeError(f"key_padding_mask must have shape [B, S] = {[B, S]}, got "
                                f"{list(key_padding_mask.shape)}")
    if attn_mask is not None and attn_mask.shape not in ((T, S), (B * H, T, S)):
        raise MaskShapeError(f"attn_mask must have shape [T, S] = {[T, S]} or [B * H, T, S] = "
                             f"{[B * H, T, S]}, got {list(attn_mask.shape)}")


def _as_bias(mask: Tensor | None, dtype: torch.dtype) -> Tensor | None:
    """A mask as an additive float bias (MHA convention: bool True = blocked = -inf)."""
    if mask is None:
        return None
    if mask.dtype == torch.bool:
        return torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill(
            mask, float("-inf"))
    return mask.to(dtype)


@functools.lru_cache(maxsize=8)
def _causal_reference(T: int, S: int, dtype: torch.dtype, device: str) -> Tensor:
    """The top-left causal mask ``[T, S]`` in the MHA convention, as a bool or 0/-inf float."""
    blocked = torch.ones(T, S, dtype=torch.bool, device=device).triu(1)
    return blocked if dtype == torch.bool else _as_bias(blocked, dtype)


def is_causal_mask(mask: Tensor | None) -> bool:
    """Whether a 2-D mask (MHA convention) is exactly the top-left causal mask: one comparison of
    ``T * S`` values, far cheaper than the attention it saves a conversion for."""
    if mask is None or mask.dim() != 2 or mask.requires_grad:
        return False
    return torch.equal(mask, _causal_reference(*mask.shape, mask.dtype, str(mask.device)))


def suffix_lengths(key_padding_mask: Tensor) -> tuple[int, ...] | None:
    """``L_b`` per sequence when a bool padding mask only pads a suffix of each row (right
    padding), else None. **Shapes:** ``[B, S]`` -> B ints."""
    if key_padding_mask.dtype != torch.bool:
        return None
    S = key_padding_mask.size(1)
    n = (~key_padding_mask).sum(1)
    pad = torch.arange(S, device=n.device).view(1, S) >= n.view(-1, 1)
    return tuple(n.tolist()) if torch.equal(pad, key_padding_mask) else None


@functools.lru_cache(maxsize=GRAPH_CACHE_SIZE)
def structured_graph(B: int, T: int, S: int, is_causal: bool, lengths: tuple | None,
                     device: str) -> TokenGraph:
    """The graph of B sequences of T queries over S key nodes where query t of sequence b sees
    keys ``s < L_b`` (and ``s <= t`` when causal, top-left aligned); ``lengths=None`` means
    L_b = S. Padded keys stay nodes without edges, so the dense kernel runs the graph on the
    ``[B, S]`` layout as it is (no gather). Cached: the same call returns the same graph object,
    and with it the kernels' plan and mask.
    """
    if lengths is None:
        if T == S:
            return causal([T] * B, device=device) if is_causal else full([T] * B, device=device)
        return cross([S] * B, [T] * B, causal=is_causal, device=device)
    n = torch.tensor(lengths, dtype=torch.long).view(B, 1, 1)
    t, s = torch.arange(T).view(1, T, 1), torch.arange(S).view(1, 1, S)
    b, t, s = ((s < n) & ((s <= t) | (not is_causal))).nonzero(as_tuple=True)  # row-major: sorted
    ei = torch.stack([b * S + s, b * T + t])
    return from_edge_index(ei, [S] * B, [T] * B, Pattern("padded_prefix", (is_causal,)),
                           bipartite=T != S, device=device)


def _bias_on_graph(graph, attn_mask: Tensor, B, T, S, dtype) -> Tensor:
    """A finite ``[T, S]`` float mask as ``edge_bias [E, 1]``: edges of a full graph are sorted by
    (b, t, s), i.e. row-major, so no search is needed; other graphs read it at their positions."""
    if graph.pattern.name in ("full", "cross"):
        return _repeated_bias(attn_mask, B, T, S, dtype)
    am = attn_mask.to(dtype)
    t, s = edge_positions(graph)
    return am[t, s].unsqueeze(1)


def _repeated_bias(attn_mask: Tensor, B, T, S, dtype) -> Tensor:
    """``[T, S]`` -> ``edge_bias [B T S, 1]`` (row-major edges of a full graph), memoised per mask
    tensor: a model passing the same bias tensor at every call (ALiBi, a relative-position table)
    pays the B T S copy once. A hit needs the same tensor object, still alive, with the same
    values (``torch.equal`` against a private copy, O(T S) against the O(B T S) copy it saves: an
    in-place change by any route is seen; a NaN never compares equal, so it is rebuilt)."""
    if attn_mask.requires_grad or torch.compiler.is_compiling():
        return attn_mask.to(dtype).expand(B, T, S).reshape(B * T * S, 1)
    key = (id(attn_mask), B, dtype)
    hit = _BIAS_CACHE.get(key)
    if hit is not None and hit[0]() is attn_mask and torch.equal(hit[1], attn_mask):
        _BIAS_CACHE.move_to_end(key)
        return hit[2]
    bias = attn_mask.to(dtype).expand(B, T, S).reshape(B * T * S, 1)
    ref = weakref.ref(attn_mask, lambda _, key=key: _BIAS_CACHE.pop(key, None))
    _BIAS_CACHE[key] = (ref, attn_mask.detach().clone(), bias)
    while len(_BIAS_CACHE) > BIAS_CACHE_SIZE:
        _BIAS_CACHE.popitem(last=False)
    return bias


def _general(B, T, S, H, key_padding_mask, attn_mask, is_causal, dtype, device):
    """Any masks: the dense bias ``[B, 1 or H, T, S]``, its allowed pairs as edges, and the bias
    left on those edges."""
    bias = torch.zeros(B, 1, T, S, dtype=dtype, device=device)
    if key_padding_mask is not None:
        bias = bias + _as_bias(key_padding_mask, dtype).view(B, 1, 1, S)
    if attn_mask is not None:
        am = _as_bias(attn_mask, dtype)
        bias = bias + (am.view(1, 1, T, S) if am.dim() == 2 else am.view(B, H, T, S))
    if is_causal:
        future = torch.ones(T, S, dtype=torch.bool, device=device).triu(1)
        bias = bias.masked_fill(future, float("-inf"))
    # An edge where at least one head may attend; NaN is not -inf: it stays an edge and propagates.
    allowed = (~torch.isneginf(bias)).any(1)
    graph = from_dense_mask(allowed.detach(), "sdpa")
    float_masks = any(m is not None and m.dtype != torch.bool for m in (key_padding_mask, attn_mask))
    if not float_masks and (attn_mask is None or attn_mask.dim() == 2):
        return graph, None  # a pure edge set, shared by every head: nothing left to carry
    b = edge_sequences(graph)
    t, s = edge_positions(graph)
    Hb = bias.size(1)
    return graph, bias.expand(B, Hb, T, S)[b, :, t, s]  # [E, Hb]


def masks_to_graph(B: int, T: int, S: int, H: int, key_padding_mask: Tensor | None,
                   attn_mask: Tensor | None, is_causal: bool, dtype: torch.dtype,
                   device) -> tuple[TokenGraph, Tensor | None]:
    """Turn MHA-style masks into a :class:`TokenGraph` over ``B * T`` queries and ``B * S`` keys
    and an optional per-edge bias ``[E, Hb]`` (float masks' values, per head when 3-D); the
    recognised masks of the module table take no dense -> edge conversion. Errors come before
    any work."""
    _check(B, T, S, H, key_padding_mask, attn_mask)
    lengths = None if key_padding_mask is None else suffix_lengths(key_padding_mask)
    if attn_mask is not None and is_causal and torch.compiler.is_compiling():
        # is_causal is torch's promise that attn_mask is the causal mask (torch then drops the
        # mask); an eager call checks it, a traced one cannot read the mask without a graph break
        structured_mask = True
    elif attn_mask is not None and (attn_mask.dtype == torch.bool or attn_mask.dim() == 3):
        structured_mask = is_causal_mask(attn_mask)  # a bool or per-head mask: only if causal
        is_causal = is_causal or structured_mask
    else:
        structured_mask = attn_mask is None or is_causal_mask(attn_mask)
        is_causal = is_causal or (attn_mask is not None and structured_mask)
        if not structured_mask and not torch.isneginf(attn_mask).any():
            structured_mask = None  # an additive bias on the structured graph
    if (key_padding_mask is None or lengths is not None) and structured_mask is not False:
        # traced: the uncached builder (dynamo does not honour lru_cache; the graph is traced once)
        build = structured_graph.__wrapped__ if torch.compiler.is_compiling() else structured_graph
        graph = build(B, T, S, bool(is_causal), lengths, str(device))
        bias = None if structured_mask else _bias_on_graph(graph, attn_mask, B, T, S, dtype)
        return graph, bias
    return _general(B, T, S, H, key_padding_mask, attn_mask, is_causal, dtype, device)
