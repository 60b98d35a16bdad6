"""Padded dense tensors <-> packed node features (the disjoint union of a batch's token graphs).

Notation: B sequences, T padded length, N = sum of the lengths (nodes), C features, H heads,
E edges. Node n of the packed form is the n-th valid position of the padded batch in row-major
order, i.e. ``mask.nonzero()[n] = (b, t)``: with right padding (lengths) this is
``n = sum_{b' < b} T_b' + t``, the node numbering of :mod:`gnn_attention.graphs`.
"""
from __future__ import annotations

import torch
from torch import Tensor


def lengths_mask(lengths: Tensor, T: int) -> Tensor:
    """``[B, T]`` bool, True at valid positions ``t < lengths[b]`` (right padding)."""
    return torch.arange(T, device=lengths.device).unsqueeze(0) < lengths.unsqueeze(1)


def check_lengths(lengths: Tensor, B: int, T: int, name: str = "lengths") -> None:
    """Raise unless ``lengths`` is a ``[B]`` integer tensor with values in ``[0, T]``."""
    if not isinstance(lengths, Tensor) or lengths.dim() != 1 or lengths.numel() != B:
        raise ValueError(f"{name} must be a [B] tensor with B={B}, got "
                         f"{list(lengths.shape) if isinstance(lengths, Tensor) else lengths!r}")
    if lengths.is_floating_point() or lengths.dtype == torch.bool:
        raise TypeError(f"{name} must hold integers, got {lengths.dtype}")
    if lengths.numel() and (int(lengths.min()) < 0 or int(lengths.max()) > T):
        raise ValueError(f"{name} must lie in [0, {T}] (the padded length), got {lengths.tolist()}")


def check_tokens(tokens: Tensor, vocab_size: int, name: str) -> None:
    """Raise unless ``tokens`` is a ``[B, T]`` integer tensor of ids below ``vocab_size``."""
    if not isinstance(tokens, Tensor) or tokens.dim() != 2:
        raise ValueError(f"{name} must be a [B, T] tensor of token ids, got "
                         f"{list(tokens.shape) if isinstance(tokens, Tensor) else type(tokens)}")
    if tokens.is_floating_point() or tokens.dtype == torch.bool:
        raise TypeError(f"{name} must hold integer token ids, got {tokens.dtype}")
    if tokens.numel() and (int(tokens.min()) < 0 or int(tokens.max()) >= vocab_size):
        raise ValueError(f"{name} ids must lie in [0, {vocab_size}), got values in "
                         f"[{int(tokens.min())}, {int(tokens.max())}]")


def pack(x: Tensor, mask: Tensor) -> Tensor:
    """Keep the valid positions: ``x [B, T, *]``, ``mask [B, T]`` -> ``[N, *]``."""
    return x[mask]


def unpack(x: Tensor, mask: Tensor) -> Tensor:
    """Scatter nodes back to padded form, zeros at padding: ``[N, *]`` -> ``[B, T, *]``."""
    out = x.new_zeros(*mask.shape, *x.shape[1:])
    out[mask] = x
    return out
