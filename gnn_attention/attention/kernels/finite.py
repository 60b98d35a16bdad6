"""Non-finite inputs on the SDPA kernels: when the dense or tiled kernel may run, and when the
CSR kernel must run instead.

Notation: N_dst / N_src target / source nodes, H heads, D / Dv widths; a *masked slot* is a
(query, key) pair that SDPA computes but the graph has no edge for (a padded key, a key above the
causal diagonal, a key outside a window inside its tile).

The rule (docs/decisions.md): a NaN or inf reaches exactly the rows whose edges read it. The
message-passing reference only ever touches edges, so it obeys the rule by construction. SDPA
computes every slot of its ``[T, S]`` blocks and masks afterwards, and masking cannot undo a
non-finite value: ``NaN + (-inf) = NaN`` in a masked score, ``0 * NaN = NaN`` (and ``0 * inf``)
in the weighted sum of values. So a bad key or value in a masked slot leaks into rows (or other
sequences, through padding) that never read it: measured on ``graphs.window([200, 200], 8,
dilation=3)`` with one NaN value, SDPA on tiles gave 400 NaN rows where the reference gives 3.

SDPA is not exact on non-finite inputs even without masked slots: with D = 1 a NaN query
came out as 0 (``graphs.full([5])``, the reference gives NaN). So on every SDPA kernel the call
runs as is when q, k and v are all finite, and otherwise the CSR kernel (which, like the
reference, reads only the edges) recomputes it. The test costs one float32 sum per input (finite
iff every entry is, up to an overflow that only sends the call to the exact kernel) and one host
sync.
"""
from __future__ import annotations

import torch
from torch import Tensor



def all_finite(*xs: Tensor) -> bool:
    """True iff every entry of every tensor is finite (False also when a float32 sum overflows,
    which only costs the exact kernel)."""
    total = None
    for x in xs:
        if x.numel():
            acc = torch.float64 if x.dtype == torch.float64 else torch.float32
            s = x.detach().sum(dtype=acc)
            total = s if total is None else total + s
    return total is None or bool(torch.isfinite(total))


def isolated(name: str, q: Tensor, k: Tensor, v: Tensor) -> bool:
    """True when the SDPA kernel ``name`` gives the reference's result on these inputs: they are
    all finite (see the module docstring; ``"csr"`` and ``"reference"`` always are exact).

    Under ``torch.compile`` the values cannot be read on the host without breaking the graph: the
    check is skipped there (see docs/compile.md).
    """
    if name not in ("dense", "tiled") or torch.compiler.is_compiling():
        return True
    return all_finite(q, k, v)
