"""Memory guard: estimate what a kernel will allocate before it allocates anything.

Notation: B sequences, H heads, D query/key width, Dv value width, T_max / S_max the longest target
/ source sequence, E edges, N_dst / N_src nodes, L the key span of one tile.

The estimates count the large temporaries of each kernel (not its inputs), in bytes of the compute
dtype, and are deliberately simple upper bounds: a dense ``[B, H, T, S]`` score tensor, the
``[E, H, D]`` gathers of the reference, the ``[E, H]`` edge scalars of the CSR kernel. Past the limit
the guard raises :class:`AttentionMemoryError` *before* the first allocation.

The limit is 8 GiB unless the environment variable ``GNN_ATTENTION_MEMORY_LIMIT`` says otherwise
(a byte count, optionally with a unit: ``"512MiB"``, ``"16GiB"``, ``"2e9"``; ``"0"`` or ``"off"``
disables the guard; a positive value below one byte is a one-byte limit, a value that is not
finite or beyond 1e30 bytes is an error). It is read at every call, so no state hides in the library.
"""
from __future__ import annotations

import math
import os
import re
from collections.abc import Callable

ENV_VAR = "GNN_ATTENTION_MEMORY_LIMIT"
DEFAULT_LIMIT = 8 * 2**30
MAX_LIMIT = 1e30  # bytes: far beyond any machine, small enough to be an exact Python int
_UNITS = {"": 1, "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
          "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}


class AttentionMemoryError(MemoryError):
    """A kernel would allocate more than the memory limit (raised before any allocation)."""


def parse_bytes(text: str) -> int:
    """``"8GiB"`` -> 8589934592; ``"2e9"`` -> 2000000000; ``"off"``/``"0"`` -> 0 (no limit)."""
    s = str(text).strip().lower().replace(" ", "")
    if s in ("off", "none", "0"):
        return 0
    m = re.fullmatch(r"([0-9]*\.?[0-9]+(?:e[0-9]+)?)([a-z]*)", s)
    if not m or m.group(2) not in _UNITS:
        raise ValueError(f"{ENV_VAR} must be a byte count such as 8GiB, 512MiB or 2e9 "
                         f"(or 'off'), got {text!r}")
    n = float(m.group(1)) * _UNITS[m.group(2)]
    if not math.isfinite(n) or n > MAX_LIMIT:  # "1e400" is inf: int() would raise OverflowError
        raise ValueError(f"{ENV_VAR} must be at most {MAX_LIMIT:.0e} bytes (or 'off' for no "
                         f"limit), got {text!r}")
    if n == 0:
        return 0
    # A fraction of a byte is a (tiny) limit, not "off": rounding 0.5 down to 0 would disable it.
    return max(1, math.ceil(n))


def limit() -> int:
    """The current limit in bytes (0 = unlimited)."""
    env = os.environ.get(ENV_VAR)
    return DEFAULT_LIMIT if env is None else parse_bytes(env)


def human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return f"{n:.1f} TiB"  # pragma: no cover


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
