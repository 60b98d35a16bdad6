"""Single-edge knockout effects: remove one attention edge in one layer and head at a time and
measure how much the output at that edge's target moves.

Notation: a *unit* u = (site, edge e = j -> i, head h); N_i = the incoming edges of target i;
y_i = the model's output row at target position i (padded layout); labels[i] = the token the
model predicts at position i (the teacher-forced next token). For every unit, the model runs with
only that unit removed (score -inf: the other weights of i in that head renormalise, see
:mod:`gnn_attention.interpret.edits`) and

    readout "state"   (encoder-only: y = final hidden states)
        effect_u = || y_i - y_i^(-u) ||_2
    readout "logprob" (seq2seq / decoder-only: y = logits)
        effect_u = log softmax(y_i)[labels[i]] - log softmax(y_i^(-u))[labels[i]]

so a positive logprob effect means the edge helped the predicted token. Only target i's own
output is read: an edge can also move other positions, which this number does not count.

Batching: C units run as C copies of the one sentence in one batch, a disjoint union of graphs,
so no edge crosses two copies and copy c carries only its own removal (``chunk`` copies per
forward pass). Selection: ``top_k = k`` knocks out, for each (site, head, target), only the k
incoming edges with the largest weight (ties broken by edge order); every other unit is NaN
(not measured). ``top_k = None`` measures every unit: sum over sites of E x H forward copies.

Rounding: the clean output comes from a separate unbatched run, so an effect below ~1e-6 in
float32 (~1e-14 in float64) is rounding, not a measurement.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import torch
from torch import Tensor, nn

from gnn_attention.interpret.edits import Site, SiteEdit
from gnn_attention.interpret.plan import prepare
from gnn_attention.interpret.runner import execute
from gnn_attention.interpret.runner import sites as all_sites
from gnn_attention.models import DecoderOnlyModel, EncoderOnlyModel, Seq2SeqModel

READOUTS = {EncoderOnlyModel: "state", Seq2SeqModel: "logprob", DecoderOnlyModel: "logprob"}


@dataclass(frozen=True)
class Effects:
    """Knockout effects of one sentence, per site, aligned with that site's ``edge_index``.

    **Shapes:** ``edge_index[site] [2, E]`` (local node ids: sources j, targets i),
    ``alpha[site] [E, H]`` (the clean weights), ``effect[site] [E, H]`` float64, NaN where a
    unit was not measured (``top_k``).
    """

    readout: str
    top_k: int | None
    edge_index: dict[Site, Tensor]
    alpha: dict[Site, Tensor]
    effect: dict[Site, Tensor]


def knockout_effects(model: nn.Module, *args, sites: Sequence[Site] | None = None,
                     labels: Tensor | None = None, top_k: int | None = None,
                     chunk: int = 256, **kwargs) -> Effects:
    """The knockout effect of every unit (or the ``top_k`` per target and head) of ``sites``.

    Args:
        model: an eval-mode EncoderOnlyModel (readout "state"), Seq2SeqModel or DecoderOnlyModel
            (readout "logprob").
        *args, **kwargs: the model's forward arguments for ONE sequence (batch size 1).
        sites: which attention sites (default: every site whose targets have an output; for a
            seq2seq model the decoder's self and cross sites).
        labels: ``[T]`` the token predicted at each output position (logprob readout only).
        top_k: knock out only the k heaviest incoming edges per (site, head, target).
        chunk: copies of the sentence per forward pass (memory vs speed).

    **Shapes:** seq2seq ``(src [1, S], src_lengths [1], tgt_in [1, T], tgt_lengths [1])``,
    encoder-only ``input_ids [1, T]``, ``labels [T]`` -> :class:`Effects`.
    """
    readout = _readout(model)
    if top_k is not None and top_k < 1:
        raise ValueError(f"top_k must be at least 1, got {top_k}")
    if chunk < 1:
        raise ValueError(f"chunk must be at least 1, got {chunk}")
    plan = prepare(model, *args, **kwargs)
    if next(iter(plan.masks.values())).size(0) != 1:
        raise ValueError("knockout_effects takes one sequence (batch size 1); its copies are "
                         "made inside")
    chosen = _check_sites(plan, sites, readout)
    out_stack = "encoder" if readout == "state" else "decoder"
    positions = plan.masks[out_stack][0].nonzero().flatten()  # local node id -> padded position
    if readout == "logprob":
        labels = _check_labels(labels, positions.numel())
    elif labels is not None:
        raise ValueError("labels are for the logprob readout; an encoder-only model reads states")
    with torch.no_grad():
        clean = execute(plan, record=True)
        units = _units(clean.records, chosen, top_k)
        values = torch.empty(len(units["site"]), dtype=torch.float64)
        for start in range(0, values.numel(), chunk):
            part = {k: v[start:start + chunk] for k, v in units.items()}
            values[start:start + chunk] = _knock(model, args, kwargs, clean, chosen, part,
                                                 out_stack, positions, labels, readout)
    effect = {}
    for k, site in enumerate(chosen):
        rec = clean.records[site]
        e = torch.full(rec.alpha.shape, float("nan"), dtype=torch.float64)
        here = units["site"] == k
        e[units["edge"][here], units["head"][here]] = values[here]
        effect[site] = e
    return Effects(readout, top_k, {s: clean.records[s].edge_index for s in chosen},
                   {s: clean.records[s].alpha for s in chosen}, effect)


def _readout(model: nn.Module) -> str:
    for cls, name in READOUTS.items():
        if isinstance(model, cls):
            return name
    raise TypeError(f"no knockout readout for {type(model).__name__}; supported: "
                    f"{', '.join(c.__name__ for c in READOUTS)}")


def _check_sites(plan, sites: Sequence[Site] | None, readout: str) -> list[Site]:
    """The chosen sites, in the model's order; only sites whose targets are output positions
    (a seq2seq encoder site's targets are source tokens, which have no output to read)."""
    allowed = [s for s in all_sites(plan) if readout == "state" or s[0] == "decoder"]
    if sites is None:
        return allowed
    chosen = [tuple(s) for s in sites]
    bad = [s for s in chosen if s not in allowed]
    if bad:
        raise ValueError(f"sites {bad} have no output at their targets to read; choose from "
                         f"{allowed}")
    if not chosen:
        raise ValueError("sites is empty")
    return [s for s in allowed if s in chosen]


def _check_labels(labels: Tensor | None, T: int) -> Tensor:
    if labels is None:
        raise ValueError("the logprob readout needs labels [T]: the token predicted at each "
                         "output position")
    labels = torch.as_tensor(labels, dtype=torch.long)
    if labels.shape != (T,):
        raise ValueError(f"labels must have shape [T] = [{T}], got {list(labels.shape)}")
    return labels


def _units(records, chosen: list[Site], top_k: int | None) -> dict[str, Tensor]:
    """Every unit to knock out as parallel ``site`` (index into ``chosen``), ``edge``, ``head``,
    ``target`` (local target node) tensors."""
    out: dict[str, list[Tensor]] = {"site": [], "edge": [], "head": [], "target": []}
    for k, site in enumerate(chosen):
        rec = records[site]
        keep = _top_k_mask(rec.alpha, rec.edge_index[1], top_k)           # [E, H]
        edge, head = keep.nonzero(as_tuple=True)
        out["site"].append(torch.full_like(edge, k))
        out["edge"].append(edge)
        out["head"].append(head)
        out["target"].append(rec.edge_index[1][edge])
    return {k: torch.cat(v) for k, v in out.items()}


def _top_k_mask(alpha: Tensor, target: Tensor, top_k: int | None) -> Tensor:
    """bool ``[E, H]``: the ``top_k`` heaviest incoming edges of each target, per head."""
    keep = torch.ones(alpha.shape, dtype=torch.bool)
    if top_k is None:
        return keep
    for i in target.unique().tolist():
        into = (target == i).nonzero().flatten()
        if into.numel() <= top_k:
            continue
        keep[into] = False
        # A stable sort keeps the earlier edge on ties, so the selection is deterministic.
        best = alpha[into].argsort(dim=0, descending=True, stable=True)[:top_k]   # [k, H]
        keep[into[best], torch.arange(alpha.size(1)).expand_as(best)] = True
    return keep


def _repeat(x, copies: int):
    return x.repeat(copies, *([1] * (x.dim() - 1))) if isinstance(x, Tensor) else x


@dataclass(frozen=True)
class _Suffix:
    """The layers ``first..`` of a stack and its final norm: what the runner walks."""

    layers: list
    norm: nn.Module | None


def _suffix_plan(plan, clean, out_stack: str, first: int, C: int):
    """``plan`` (C copies) started at layer ``first`` of ``out_stack`` from the clean states.

    A removal in layer l >= first changes nothing before layer l, so the layers below ``first``
    (and a seq2seq encoder, whose memory no decoder edit reaches) are copied from the clean
    run instead of recomputed: ``hidden[l]`` is the state entering layer l, ``hidden[-1]`` the
    last layer's output before the stack's norm. Site names shift: layer l becomes l - first.
    """
    inputs, stacks = {}, {}
    for name, stack in plan.stacks.items():
        start = first if name == out_stack else len(stack.layers)
        inputs[name] = clean.hidden[name][start].repeat(C, 1)
        stacks[name] = _Suffix(list(stack.layers)[start:], stack.norm)
    return replace(plan, inputs=inputs, stacks=stacks)


def _knock(model, args, kwargs, clean, chosen: list[Site], part: dict[str, Tensor],
           out_stack: str, positions: Tensor, labels: Tensor | None, readout: str) -> Tensor:
    """One batch of ``C = len(part["site"])`` copies, copy c with unit c removed -> ``[C]``."""
    C = part["site"].numel()
    first = min(chosen[k][1] for k in part["site"].unique().tolist())
    plan = _suffix_plan(prepare(model, *(_repeat(a, C) for a in args),
                                **{k: _repeat(v, C) for k, v in kwargs.items()}),
                        clean, out_stack, first, C)
    edits = {}
    for k, site in enumerate(chosen):
        mine = part["site"] == k
        if not mine.any():
            continue
        graph = plan.graphs["cross" if site[2] == "cross" else site[0]]
        ei = graph.edge_index
        n_src, n_dst = graph.num_src // C, graph.num_dst // C
        copy = ei[1] // n_dst
        local = (ei[0] - copy * n_src, ei[1] - copy * n_dst)
        # The local edge id of each batch edge: its (j, i) pair looked up in the one-copy graph.
        one = clean.records[site].edge_index
        table = torch.full((n_src * n_dst,), -1, dtype=torch.long)
        table[one[0] * n_dst + one[1]] = torch.arange(one.size(1))
        local_edge = table[local[0] * n_dst + local[1]]
        if bool((local_edge < 0).any()):  # a copy's graph must be the one sentence's graph
            raise RuntimeError(f"site {site}: the batched graph is not {C} copies of one graph")
        unit_edge = torch.where(mine, part["edge"], -1)
        hit = unit_edge[copy] == local_edge                                  # [E_batch]
        remove = torch.zeros(ei.size(1), clean.records[site].alpha.size(1), dtype=torch.bool)
        remove[hit.nonzero().flatten(), part["head"][copy[hit]]] = True
        edits[(site[0], site[1] - first, site[2])] = SiteEdit(remove=remove)
    out = execute(plan, edits).output
    pos = positions[part["target"]]
    rows = torch.arange(C)
    clean_out = clean.output
    if readout == "state":
        return (out[rows, pos] - clean_out[0, pos]).double().norm(dim=-1)
    y = labels[part["target"]]
    base = clean_out[0].double().log_softmax(-1)[pos, y]
    return base - out.double().log_softmax(-1)[rows, pos, y]
