"""Memory guard: estimate what a kernel will allocate before it allocates anything.

Notation: B sequences, H heads, D query/key width, Dv value width, T_max / S_max the longest target
/ source sequence, E edges, N_dst / N_src nodes, L the key span of one tile.

The estimates count the large temporaries of each kernel (not its inputs), in bytes of the compute
dtype, and are deliberately simple upper bounds: a dense ``[B, H, T, S]`` score tensor, the
``[E, H, D]`` gathers of the reference, the ``[E, H]`` edge scalars of the CSR kernel. Past the limit
the guard raises :class:`AttentionMemoryError` *before* the first allocation.

The limit is the one graph builders use (:mod:`gnn_attention.graphs.budget`): 8 GiB unless the
environment variable ``GNN_ATTENTION_MEMORY_LIMIT`` says otherwise (a byte count from 1 to 1e30,
optionally with a unit: ``"512MiB"``, ``"16GiB"``, ``"2e9"``; ``"0"`` or ``"off"`` disables the
guard; anything else is an error). It is read at every call, so no state hides in the library.
"""
from __future__ import annotations

from collections.abc import Callable

from gnn_attention.graphs.budget import (DEFAULT_LIMIT, ENV_VAR, MemoryLimitError,  # noqa: F401
                                         human, limit, parse_bytes)


class AttentionMemoryError(MemoryLimitError):
    """A kernel would allocate more than the memory limit (raised before any allocation)."""


def guard(kernel: str, estimate: int, what: Callable[[], str]) -> None:
    """Raise :class:`AttentionMemoryError` if ``estimate`` bytes exceed the limit.

    ``what()`` describes the problem size (graph, heads, widths) for the message (called only
    when raising: formatting it costs more than the check).
    """
    cap = limit()
    if cap and estimate > cap:
        raise AttentionMemoryError(
            f"the {kernel!r} attention kernel would need about {human(estimate)} for {what()}, over "
            f"the limit of {human(cap)}. Use a sparser pattern (e.g. a window) or a smaller batch, "
            f"or raise the limit with the environment variable {ENV_VAR} (e.g. "
            f"{ENV_VAR}=32GiB, or 'off')")
