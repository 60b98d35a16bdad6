"""Interventions on the attention graph: run any model with a cache of per-edge scores, weights
and messages, and with edits on single (layer, head, edge) units: remove, scale, patch, zero a
node's value, ablate a head. Edits are edge sets and edge attributes, never hooks on modules.

May import :mod:`gnn_attention.graphs`, :mod:`gnn_attention.attention`,
:mod:`gnn_attention.models` and :mod:`gnn_attention.pretrained`.
"""
from gnn_attention.interpret.cache import SiteRecord, edited_attention
from gnn_attention.interpret.edits import (
                                          KINDS,
                                          Edits,
                                          Site,
                                          SiteEdit,
                                          check_edits,
                                          edge_mask,
                                          head_columns,
                                          in_edges,
                                          out_edges,
                                          patch_all,
)
from gnn_attention.interpret.plan import Plan, prepare
from gnn_attention.interpret.runner import RunResult, execute, run, sites

__all__ = ["KINDS", "Edits", "Plan", "RunResult", "Site", "SiteEdit", "SiteRecord",
           "check_edits", "edge_mask", "edited_attention", "execute", "head_columns", "in_edges",
           "out_edges", "patch_all", "prepare", "run", "sites"]
