"""The memory budget: how many bytes one allocation of the library may ask for, checked before it.

Notation: E edges; a byte count is an int.

The limit is 8 GiB unless the environment variable ``GNN_ATTENTION_MEMORY_LIMIT`` says otherwise:
a positive byte count, optionally with a unit (``"512MiB"``, ``"16GiB"``, ``"2e9"``), or ``"0"`` /
``"off"`` for no limit. It is read at every check, so no state hides in the library. Graph builders
check here before they materialise edges (a structured graph never needs to); the attention kernels
keep the same limit for their temporaries (:mod:`gnn_attention.attention.kernels.memory`
reads it from here).
"""
from __future__ import annotations

import math
import os
import re
from collections.abc import Callable

ENV_VAR = "GNN_ATTENTION_MEMORY_LIMIT"
DEFAULT_LIMIT = 8 * 2**30
MAX_LIMIT = 1e30  # bytes: far beyond any machine, an exact Python int
UNITS = {"": 1, "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
         "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}


class MemoryLimitError(MemoryError):
    """An allocation would exceed the memory limit (raised before anything is allocated)."""


def parse_bytes(text: str) -> int:
    """``"8GiB"`` -> 8589934592; ``"2e9"`` -> 2000000000; ``"off"``/``"0"`` -> 0 (no limit).

    Anything else that does not name between one byte and ``MAX_LIMIT`` bytes (``"0.5"``,
    ``"1e400"``, ``"-1"``) is an error: a typo must not switch the guard off or overflow."""
    s = str(text).strip().lower().replace(" ", "")
    if s in ("off", "none", "0"):
        return 0
    m = re.fullmatch(r"([0-9]*\.?[0-9]+(?:e[+]?[0-9]+)?)([a-z]*)", s)
    value = float(m.group(1)) * UNITS[m.group(2)] if m and m.group(2) in UNITS else math.nan
    if not (math.isfinite(value) and 1 <= value <= MAX_LIMIT):
        raise ValueError(f"{ENV_VAR} must be a byte count of at least 1 and at most "
                         f"{MAX_LIMIT:.0e} such as 8GiB, 512MiB or 2e9 (or '0'/'off' for no "
                         f"limit), got {text!r}")
    return int(value)


def limit() -> int:
    """The current limit in bytes (0 = unlimited)."""
    env = os.environ.get(ENV_VAR)
    return DEFAULT_LIMIT if env is None else parse_bytes(env)


def human(n: float) -> str:
    """``1536`` -> ``"1.5 KiB"``."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024:
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return f"{n:.1f} TiB"


def check(what: Callable[[], str], estimate: int, advice: str) -> None:
    """Raise :class:`MemoryLimitError` if ``estimate`` bytes exceed the limit.

    ``what()`` names the allocation for the message (formatted only when raising)."""
    cap = limit()
    if cap and estimate > cap:
        raise MemoryLimitError(
            f"{what()} would need about {human(estimate)}, over the limit of {human(cap)}. {advice}"
            f" Or raise the limit with the environment variable {ENV_VAR} (e.g. {ENV_VAR}=32GiB, "
            f"or 'off')")
