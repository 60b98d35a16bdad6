"""The equivalence sweep: message-passing attention against PyTorch's matrix attention.

For each case (self, cross with T != S, causal, key padding, causal + padding, cross + padding),
size and dtype:
  * layer level: :class:`MultiheadAttention` with weights copied from ``nn.MultiheadAttention``;
    max |difference| of outputs, of input gradients and of parameter gradients;
  * function level: :func:`graph_attention` on the graph of the mask against
    ``F.scaled_dot_product_attention`` with the equivalent boolean mask (output and q/k/v grads).
Rows whose every key is masked are left out of the comparison (torch returns NaN there, this
library returns zeros by design).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Iterable, List

import torch
import torch.nn.functional as F

from gnn_attention import graphs
from gnn_attention.attention.functional import graph_attention
from gnn_attention.models.mha import MultiheadAttention

CASES = ("self", "cross", "causal", "key_padding", "causal+padding", "cross+padding")
SIZES = ((2, 5, 7, 33, 3), (3, 16, 24, 64, 4), (2, 64, 48, 128, 8))  # B, T, S, C, H


@dataclass
class Row:
    case: str
    dtype: str
    B: int
    T: int
    S: int
    embed_dim: int
    heads: int
    mha_out: float
    mha_grad: float
    sdpa_out: float
    sdpa_grad: float


def _masks(case: str, B: int, T: int, S: int, gen: torch.Generator):
    """(key_padding_mask [B, S] or None, causal flag, S used) in the MHA convention."""
    S = S if case.startswith("cross") else T
    kpm = None
    if "padding" in case:
        lengths = torch.randint(1, S + 1, (B,), generator=gen)
        lengths[0] = S
        kpm = torch.arange(S).view(1, S) >= lengths.view(B, 1)
    return kpm, "causal" in case, S


def _maxdiff(a: Iterable[torch.Tensor], b: Iterable[torch.Tensor]) -> float:
    return max((float((x - y).abs().max()) for x, y in zip(a, b) if x.numel()), default=0.0)


def compare_case(case: str, B: int, T: int, S: int, C: int, H: int, dtype: torch.dtype,
                 seed: int = 0) -> Row:
    """Measure one case; see the module docstring."""
    gen = torch.Generator().manual_seed(seed)
    kpm, is_causal, S = _masks(case, B, T, S, gen)
    torch.manual_seed(seed)
    ref = torch.nn.MultiheadAttention(C, H, batch_first=True, dtype=dtype)
    ours = MultiheadAttention.from_torch(ref)
    x_dst = torch.randn(B, T, C, dtype=dtype, generator=gen)
    x_src = x_dst if not case.startswith("cross") else torch.randn(B, S, C, dtype=dtype, generator=gen)
    attn_mask = torch.ones(T, S, dtype=torch.bool).triu(1) if is_causal else None
    allowed = torch.ones(B, T, S, dtype=torch.bool)
    if attn_mask is not None:
        allowed &= ~attn_mask
    if kpm is not None:
        allowed &= ~kpm.view(B, 1, S)
    valid = allowed.any(-1)  # [B, T] rows with at least one key

    outs, grads = [], []
    for module in (ref, ours):
        xd = x_dst.clone().requires_grad_()
        xs = xd if x_src is x_dst else x_src.clone().requires_grad_()
        out, _ = module(xd, xs, xs, key_padding_mask=kpm, attn_mask=attn_mask, need_weights=False)
        out = out[valid]
        out.square().sum().backward()
        outs.append(out.detach())
        inputs = [xd] if xs is xd else [xd, xs]
        grads.append([t.grad for t in inputs] + [p.grad for p in module.parameters()])
        module.zero_grad()

    # Function level: graph attention on the mask's graph vs SDPA with the boolean mask.
    D = C // H
    q = torch.randn(B, H, T, D, dtype=dtype, generator=gen, requires_grad=True)
    k = torch.randn(B, H, S, D, dtype=dtype, generator=gen, requires_grad=True)
    v = torch.randn(B, H, S, D, dtype=dtype, generator=gen, requires_grad=True)
    g = graphs.from_dense_mask(allowed, "sdpa")
    nodes = lambda t: t.transpose(1, 2).reshape(-1, H, D)  # noqa: E731  [B,H,L,D] -> [B*L,H,D]
    mp = graph_attention(nodes(q), nodes(k), nodes(v), g).view(B, T, H, D)[valid]
    sd = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed.unsqueeze(1))
    sd = sd.transpose(1, 2)[valid]
    sdpa_grads = []
    for out in (mp, sd):
        gq, gk, gv = torch.autograd.grad(out.square().sum(), (q, k, v))
        sdpa_grads.append([gq, gk, gv])
    return Row(case, str(dtype).replace("torch.", ""), B, T, S, C, H,
               _maxdiff(outs[:1], outs[1:]), _maxdiff(*grads),
               _maxdiff([mp.detach()], [sd.detach()]), _maxdiff(*sdpa_grads))


def sweep(dtypes=(torch.float32, torch.float64), sizes=SIZES, cases=CASES) -> List[Row]:
    """Every case x size x dtype."""
    return [compare_case(case, *size, dtype=dt) for dt in dtypes for size in sizes for case in cases]


def format_table(rows: List[Row]) -> str:
    head = ("case", "dtype", "B", "T", "S", "C", "H", "mha out", "mha grad", "sdpa out", "sdpa grad")
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        d = asdict(r)
        cells = [str(v) for v in list(d.values())[:7]] + [f"{v:.1e}" for v in list(d.values())[7:]]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
