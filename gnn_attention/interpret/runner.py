"""Run a model layer by layer with edits on its attention edges and a cache of what they carried.

Notation: N packed nodes, C = d_model, E edges j -> i per site, H heads, D = C / H; a site is
``(stack, layer, kind)`` (see :mod:`gnn_attention.interpret.edits`).

The runner walks each stack's layers itself, reading only their submodules (``self_attn``,
``multihead_attn``, ``norm1..3``, ``linear1/2``, ``dropout*``, ``activation``, ``norm_first``):

    post-norm  x = LN(x + Block(x))        pre-norm  x = x + Block(LN(x))
    encoder layer:  Block = SelfAttn(G_self), then FFN
    decoder layer:  Block = SelfAttn(G_self), CrossAttn(memory; G_cross), then FFN

At a site with no edit and no recording, attention runs through the layer's own kernel
(``attend``), so an unedited, unrecorded run equals ``model(...)`` bitwise. An edited or recorded
site runs the readable path (:func:`~gnn_attention.interpret.cache.edited_attention`), equal to
the fast kernels up to rounding (<= 1e-12 in float64 in the tests). Nothing is stored on a module:
outputs and records come back in a :class:`RunResult`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Tuple

from torch import Tensor, nn

from gnn_attention.attention.positional import apply_rotary
from gnn_attention.interpret.cache import SiteRecord, edited_attention
from gnn_attention.interpret.edits import Edits, Site, check_edits
from gnn_attention.interpret.plan import Plan, prepare


@dataclass(frozen=True)
class RunResult:
    """One run. ``output``: what ``model(...)`` returns (hidden states or logits, padded);
    ``records``: site -> :class:`SiteRecord` (recorded or edited sites); ``hidden``: stack name ->
    packed node states, the stack's input then the output of each layer (``[N, C]`` each)."""

    output: Tensor
    records: Dict[Site, SiteRecord]
    hidden: Dict[str, List[Tensor]]


@dataclass(frozen=True)
class _Pass:
    """What one run needs at every site: the edits, whether to record, where records go (a dict
    owned by this run and returned in its result)."""

    edits: Edits
    record: bool
    records: Dict[Site, SiteRecord]


def sites(plan: Plan) -> Dict[Site, Tuple]:
    """Every attention site of the planned model: site -> ``(graph, H, D)``."""
    out = {}
    for name, stack in plan.stacks.items():
        for layer_id, layer in enumerate(stack.layers):
            kinds = [("self", layer.self_attn, plan.graphs[name])]
            if hasattr(layer, "multihead_attn"):
                kinds.append(("cross", layer.multihead_attn, plan.graphs["cross"]))
            for kind, a, graph in kinds:
                _check_conv(a, (name, layer_id, kind))
                out[(name, layer_id, kind)] = (graph, a.num_heads, a.head_dim)
    return out


def _check_conv(attn: nn.Module, site: Site) -> None:
    """The readable path has no edge features and adds no self loops: a layer that uses either
    would be edited wrongly, so it is refused (our models' layers use neither)."""
    if getattr(attn, "edge_dim", None) is not None or getattr(attn, "add_self_loops", False):
        raise ValueError(f"site {site}: interventions do not support attention layers with edge "
                         f"features or added self loops")


def execute(plan: Plan, edits: Optional[Edits] = None, record: bool = False) -> RunResult:
    """Run the planned model with ``edits`` (checked first); ``record`` caches every site."""
    check_edits(edits, sites(plan))
    ctx = _Pass(dict(edits or {}), record, {})
    hidden: Dict[str, List[Tensor]] = {}
    final: Dict[str, Tensor] = {}
    memory = None
    for name, stack in plan.stacks.items():
        bias = plan.edge_bias if name == "decoder" else None
        final[name], hidden[name] = _stack(stack, name, plan.inputs[name], plan, memory, bias, ctx)
        memory = final[name]
    return RunResult(plan.finish(final), ctx.records, hidden)


def run(model: nn.Module, *args, edits: Optional[Edits] = None, record: bool = False,
        **kwargs) -> RunResult:
    """``execute(prepare(model, *args, **kwargs), edits, record)``: the model's forward
    arguments, then the edits."""
    return execute(prepare(model, *args, **kwargs), edits, record)


# ---------------------------------------------------------------------------------------------
# The walk


def _stack(stack: nn.Module, name: str, x: Tensor, plan: Plan, memory: Optional[Tensor],
           bias: Optional[Tensor], ctx: _Pass):
    graph, rotary = plan.graphs[name], plan.rotary if name == "decoder" else None
    hidden = [x]
    for i, layer in enumerate(stack.layers):
        def self_block(h, layer=layer, i=i):
            return _attend(layer.self_attn, h, h, graph, bias, rotary, (name, i, "self"), ctx)

        x = _residual(layer, x, self_block, layer.norm1, layer.dropout1)
        if hasattr(layer, "multihead_attn"):  # a decoder layer: cross-attention on the memory
            def cross_block(h, layer=layer, i=i):
                return _attend(layer.multihead_attn, memory, h, plan.graphs["cross"], None, None,
                               (name, i, "cross"), ctx)

            x = _residual(layer, x, cross_block, layer.norm2, layer.dropout2)
            x = _residual(layer, x, lambda h, layer=layer: _ffn(layer, h), layer.norm3,
                          layer.dropout3)
        else:
            x = _residual(layer, x, lambda h, layer=layer: _ffn(layer, h), layer.norm2,
                          layer.dropout2)
        hidden.append(x)
    if stack.norm is not None:
        x = stack.norm(x)
    return x, hidden


def _residual(layer: nn.Module, x: Tensor, block: Callable[[Tensor], Tensor], norm: nn.Module,
              drop: nn.Module) -> Tensor:
    """Post-norm ``LN(x + block(x))`` or pre-norm ``x + block(LN(x))``, as the layer says."""
    if layer.norm_first:
        return x + drop(block(norm(x)))
    return norm(x + drop(block(x)))


def _ffn(layer: nn.Module, x: Tensor) -> Tensor:
    return layer.linear2(layer.dropout(layer.activation(layer.linear1(x))))


def _attend(attn: nn.Module, x_kv: Tensor, x_q: Tensor, graph, bias: Optional[Tensor], rotary,
            site: Site, ctx: _Pass) -> Tensor:
    """One attention site: projections, then the layer's kernel (untouched site) or the readable
    edited path (edited or recorded site), then the output projection."""
    q, k, v = attn.project(x_kv, x_kv, x_q)
    if rotary is not None:
        q, k = apply_rotary(q, *rotary), apply_rotary(k, *rotary)
    return attend_site(attn, q, k, v, graph, bias, site, ctx)


def attend_site(attn, q: Tensor, k: Tensor, v: Tensor, graph, bias: Optional[Tensor], site: Site,
                ctx: _Pass) -> Tensor:
    """Projected heads through ``attn``'s own kernel when ``site`` is neither edited nor recorded
    (bitwise the plain forward), else through the readable edited path, its record kept in
    ``ctx``; then the output projection. **Shapes:** q ``[N_dst, H, D]``, k, v ``[N_src, H, D]``
    -> ``[N_dst, C]``."""
    edit = ctx.edits.get(site)
    if edit is None and not ctx.record:
        return attn.merge_heads(attn.attend(q, k, v, graph, bias))
    out, rec = edited_attention(q, k, v, graph, bias, attn.score, attn.score_weights(), edit)
    ctx.records[site] = rec
    return attn.merge_heads(out)
