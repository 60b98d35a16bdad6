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

Which inputs can reach a masked slot depends on the layout:

    layout                                   masked slots   inputs that must be finite
    equal-length full / cross (no mask)      none           none: SDPA reads exactly the edges
    SDPA is_causal (no mask, no bias)        above diag.    q, k and v (an inf in q gives -inf on
                                                            a row's edges, a zero row in the
                                                            reference, and +inf - inf = NaN in
                                                            SDPA's masked slots)
    any mask (ragged, window tiles, custom)  yes            q, k and v

A masked slot can only add an exact 0 (a finite input, or a score of -inf) or a NaN (``+inf`` or
NaN score plus the mask, ``0 * inf``, ``0 * NaN``) to a row; it can never change a finite value
into another finite value. So when SDPA's output is all finite it equals the reference's, and
when it is not, the CSR kernel (which, like the reference, reads only the edges) recomputes the
call. The test costs one reduction over the output (a float32 sum is finite iff every entry is,
up to an overflow that only sends the call to the exact kernel) and one host sync.
"""
from __future__ import annotations

import torch
from torch import Tensor

from gnn_attention.attention.kernels import dense


def inputs_to_check(name: str, graph) -> str:
    """Which of ``"qkv"`` can reach a masked slot of kernel ``name`` on ``graph`` (``""``: none,
    SDPA reads exactly the edges)."""
    if name == "tiled":
        return "qkv"
    return dense.masked_inputs(graph)


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


def isolated(name: str, graph, out: Tensor) -> bool:
    """True when kernel ``name``'s output ``out`` on ``graph`` is what the reference gives: it
    has no masked slot, or ``out`` is all finite (see the module docstring).

    Under ``torch.compile`` the values cannot be read on the host without breaking the graph: the
    check is skipped there (see docs/compile.md).
    """
    if not inputs_to_check(name, graph) or torch.compiler.is_compiling():
        return True
    return all_finite(out)
