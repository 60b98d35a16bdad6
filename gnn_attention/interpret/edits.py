"""Interventions on the attention graph as edge sets and edge attributes.

Notation: a *site* is one attention of a model, named ``(stack, layer, kind)``, e.g.
``("encoder", 0, "self")`` or ``("decoder", 1, "cross")``; its graph has E edges j -> i,
N_src source (key/value) and N_dst target (query) nodes, H heads, D value width per head.
Every per-edge tensor is aligned with ``graph.edge_index`` of that site (sorted by (target,
source) by the builders: compute masks from the edge_index you hold, e.g. with :func:`edge_mask`).

For target i with incoming edges N(i), an edited attention computes

    e_ij     = score(q_i, k_j) + bias_ij,           e_ij = -inf  where remove[j->i]
    alpha_ij = softmax over N(i) of e_ij            (renormalised over the edges that remain)
    a_ij     = scale_ij * alpha_ij                  (no renormalisation: scale 0 drops a message)
    m_ij     = a_ij v_j,                            v_j = 0      where zero_value[j]
    m_ij     = messages_ij                          where patch[j->i]   (another run's message)
    out_i    = sum_j m_ij,                          out_i^h = 0  for h in ablate_heads

Two ways to delete an edge, on purpose: ``remove`` takes it out of the graph (the other weights
of i grow to sum to 1, as if the edge had never existed), ``scale = 0`` deletes only its message
(the other weights stay, which is what value zeroing does: zeroing v_j equals scale 0 on every
out-edge of j).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Iterable, Mapping, Optional, Sequence, Tuple

import torch
from torch import Tensor

from gnn_attention.graphs import TokenGraph

Site = Tuple[str, int, str]  # (stack, layer, "self" | "cross")
KINDS = ("self", "cross")


@dataclass(frozen=True)
class SiteEdit:
    """The edits of one attention site (see the module docstring for the math).

    Attributes:
        remove: bool ``[E, H]`` (or ``[E, 1]`` for every head): edges deleted from the graph.
        scale: float ``[E, H]`` (or ``[E, 1]``): factor on alpha after the softmax.
        patch: bool ``[E, H]`` (or ``[E, 1]``): edges whose message is replaced by ``messages``.
        messages: ``[E, H, D]``: the replacement messages (e.g. ``record.messages`` of another run).
        zero_value: bool ``[N_src]`` or ``[N_src, H]``: source nodes whose value is set to zero.
        ablate_heads: heads whose output (before the output projection) is set to zero.
    """

    remove: Optional[Tensor] = None
    scale: Optional[Tensor] = None
    patch: Optional[Tensor] = None
    messages: Optional[Tensor] = None
    zero_value: Optional[Tensor] = None
    ablate_heads: Tuple[int, ...] = ()

    def check(self, site: Site, graph: TokenGraph, num_heads: int, head_dim: int) -> None:
        """Raise (before any computation) unless every tensor fits this site's graph."""
        E, H = graph.num_edges, num_heads
        where = f"edit of site {site}"
        for name in ("remove", "scale", "patch"):
            t = getattr(self, name)
            if t is None:
                continue
            if t.dim() != 2 or t.size(0) != E or t.size(1) not in (1, H):
                raise ValueError(f"{where}: {name} must have shape [E, H] or [E, 1] with E={E}, "
                                 f"H={H}, got {list(t.shape)}")
            if (t.dtype == torch.bool) != (name != "scale"):
                raise TypeError(f"{where}: {name} must be "
                                f"{'floating point' if name == 'scale' else 'bool'}, got {t.dtype}")
        if (self.patch is None) != (self.messages is None):
            raise ValueError(f"{where}: patch and messages go together")
        if self.messages is not None and tuple(self.messages.shape) != (E, H, head_dim):
            raise ValueError(f"{where}: messages must have shape [E, H, D] = {[E, H, head_dim]}, "
                             f"got {list(self.messages.shape)}")
        z = self.zero_value
        if z is not None and (z.dtype != torch.bool or z.size(0) != graph.num_src or z.dim() > 2
                              or (z.dim() == 2 and z.size(1) != H)):
            raise ValueError(f"{where}: zero_value must be bool [N_src] or [N_src, H] with "
                             f"N_src={graph.num_src}, H={H}, got {z.dtype} {list(z.shape)}")
        bad = [h for h in self.ablate_heads if not 0 <= h < H]
        if bad:
            raise ValueError(f"{where}: ablate_heads {bad} out of range for {H} heads")


Edits = Mapping[Site, SiteEdit]


def check_edits(edits: Optional[Edits], sites: Dict[Site, Tuple[TokenGraph, int, int]]) -> None:
    """Every edited site must exist (a misspelt site would otherwise be a silent no-op) and every
    edit must fit its graph; ``sites`` maps a site to ``(graph, H, D)``."""
    for site, edit in (edits or {}).items():
        if site not in sites:
            raise KeyError(f"no attention site {site}; this model has {sorted(sites)}")
        if not isinstance(edit, SiteEdit):
            raise TypeError(f"edits[{site}] must be a SiteEdit, got {type(edit).__name__}")
        edit.check(site, *sites[site])


# ---------------------------------------------------------------------------------------------
# Edge sets from node pairs and node sets


def edge_mask(graph: TokenGraph, pairs: Iterable[Tuple[int, int]], num_heads: int = 1,
              heads: Optional[Sequence[int]] = None) -> Tensor:
    """bool ``[E, num_heads]``: True on the edges ``j -> i`` named by ``pairs = [(j, i), ...]``
    (node ids as in ``graph.edge_index``) in ``heads`` (default all). A pair that is not an edge
    of the graph raises: an edit never silently misses its edge.

    **Shapes:** -> ``[E, num_heads]``.
    """
    ei = graph.edge_index
    key = ei[0] * max(graph.num_dst, 1) + ei[1]
    want = torch.tensor([j * max(graph.num_dst, 1) + i for j, i in pairs], dtype=torch.long,
                        device=ei.device)
    hit = torch.isin(key, want)
    if int(hit.sum()) != torch.unique(want).numel():
        missing = sorted(set(want.tolist()) - set(key[hit].tolist()))
        named = [(k // max(graph.num_dst, 1), k % max(graph.num_dst, 1)) for k in missing]
        raise ValueError(f"(source, target) pairs {named} are not edges of {graph}")
    return head_columns(hit, num_heads, heads)


def head_columns(edges: Tensor, num_heads: int, heads: Optional[Sequence[int]] = None) -> Tensor:
    """bool ``[E] -> [E, num_heads]``: the edge set in the chosen ``heads`` (default all)."""
    out = edges.new_zeros(edges.size(0), num_heads, dtype=torch.bool)
    cols = list(range(num_heads)) if heads is None else list(heads)
    if any(not 0 <= h < num_heads for h in cols):
        raise ValueError(f"heads {cols} out of range for {num_heads} heads")
    out[:, cols] = edges.bool().unsqueeze(1)
    return out


def out_edges(graph: TokenGraph, nodes: Sequence[int]) -> Tensor:
    """bool ``[E]``: the edges whose source (key/value node) is in ``nodes``."""
    return torch.isin(graph.edge_index[0], torch.as_tensor(list(nodes), dtype=torch.long,
                                                           device=graph.device))


def in_edges(graph: TokenGraph, nodes: Sequence[int]) -> Tensor:
    """bool ``[E]``: the edges whose target (query node) is in ``nodes``."""
    return torch.isin(graph.edge_index[1], torch.as_tensor(list(nodes), dtype=torch.long,
                                                           device=graph.device))


def patch_all(records, sites: Iterable[Site]) -> Dict[Site, SiteEdit]:
    """Edits that replace every message of ``sites`` by those recorded in another run
    (``records``: the ``records`` of a :class:`~gnn_attention.interpret.runner.RunResult`)."""
    out = {}
    for site in sites:
        m = records[site].messages
        out[site] = SiteEdit(patch=torch.ones(m.size(0), m.size(1), dtype=torch.bool,
                                              device=m.device), messages=m)
    return out
