"""A graph's provenance: the pattern name, its parameters and the predicate defining its edges.

Notation: t, s local target / source positions; T, S the sequence's target / source lengths.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from torch import Tensor

# A predicate over local positions: allows(t, s, T, S) -> bool tensor (broadcasting).
Predicate = Callable[[Tensor, Tensor, Tensor, Tensor], Tensor]


@dataclass(frozen=True)
class Pattern:
    """Where a graph came from: a name, its parameters and the predicate that defines its edges.

    ``allows(t, s, T, S)`` is True where target position t may attend to source position s in a
    sequence with T targets and S sources. Kernels read ``name``/``params`` to pick an execution
    strategy; ``allows`` can serve as a FlexAttention ``mask_mod``. ``allows is None`` means the edge
    set is arbitrary (e.g. from a dense mask) and only ``edge_index`` defines it.
    """

    name: str
    params: tuple = ()
    allows: Predicate | None = field(default=None, compare=False, repr=False)
