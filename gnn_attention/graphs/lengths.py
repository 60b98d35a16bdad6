"""Per-sequence lengths as the builders take them: validated, as a CPU tensor or as Python ints.

Notation: B sequences; a length is the token count of one sequence.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Union

import torch
from torch import Tensor

Lengths = Union[Sequence[int], Tensor]


def as_lengths(lengths: Lengths, name: str = "lengths") -> Tensor:
    """Lengths as a 1-D int64 CPU tensor, rejecting negative values and non-integers."""
    try:
        t = torch.as_tensor(lengths)
    except (TypeError, ValueError, RuntimeError) as e:
        raise TypeError(f"{name} must be a sequence of integers, got {lengths!r}") from e
    if t.numel() == 0:  # torch.as_tensor([]) is float32: an empty batch is still integer lengths
        t = t.long()
    if t.dim() != 1:
        raise ValueError(f"{name} must be 1-D (one length per sequence), got shape {tuple(t.shape)}")
    if t.is_floating_point() or t.is_complex() or t.dtype == torch.bool:
        raise TypeError(f"{name} must hold integers, got dtype {t.dtype}")
    t = t.to(device="cpu", dtype=torch.int64)
    if (t < 0).any():
        raise ValueError(f"{name} must be non-negative, got {t.tolist()}")
    return t


def host_lengths(lengths: Lengths, name: str = "lengths") -> tuple[int, ...]:
    """Lengths as a tuple of Python ints, validated as :func:`as_lengths` does. A list or tuple of
    ints is checked in Python, so a builder called inside a traced function reads no tensor; a
    tensor is read once (on the host)."""
    if isinstance(lengths, (list, tuple)) and all(type(n) is int for n in lengths):
        if any(n < 0 for n in lengths):
            raise ValueError(f"{name} must be non-negative, got {list(lengths)}")
        return tuple(lengths)
    return tuple(as_lengths(lengths, name).tolist())


def offsets(lengths: Tensor) -> Tensor:
    """``[B] -> [B + 1]`` node offsets (0, then the running sum)."""
    return torch.cat([lengths.new_zeros(1), lengths.cumsum(0)])
