"""Host-side sorting of edge keys: a stable argsort that stays O(E) on shared cores.

Notation: E keys (non-negative int64, e.g. ``dst * N_src + src`` for sorting by (target, source)).
"""
from __future__ import annotations

import numpy as np

__all__ = ["stable_argsort"]


def stable_argsort(key: np.ndarray) -> np.ndarray:
    """Stable argsort of non-negative int64 keys, as least-significant-digit radix passes over
    16-bit digits (one pass per 16 bits of the largest key).

    numpy sorts 16-bit integers with a radix sort (O(E) per pass), where its int64 stable sort is a
    comparison sort (``host_sort_ms`` in ``experiments/bench_transformer_conv.py`` times both on
    the R13 keys). Sorting by the low digit first and keeping ties in place in every later pass is
    what makes the result equal the stable sort.

    **Shapes:** ``key [E]`` -> ``order [E]`` with ``key[order]`` ascending, ties in input order.
    """
    order = np.arange(key.size)
    bits = int(key.max()).bit_length() if key.size else 0
    for shift in range(0, bits, 16):
        digit = ((key[order] >> shift) & 0xFFFF).astype(np.uint16)
        order = order[np.argsort(digit, kind="stable")]
    return order
