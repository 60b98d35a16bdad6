"""Interventions on the attention graph: run any model with a cache of per-edge scores, weights
and messages, and with edits on single (layer, head, edge) units: remove, scale, patch, zero a
node's value, ablate a head. Edits are edge sets and edge attributes, never hooks on modules.
Transformer models go through ``run`` (:mod:`.runner`); graph models (MultiheadAttentionConv
stacks, Graphormer, Exphormer, GPS) through ``run_graph`` (:mod:`.graph_runner`).

May import :mod:`gnn_attention.graphs`, :mod:`gnn_attention.attention`,
:mod:`gnn_attention.models`, :mod:`gnn_attention.graph_models` and
:mod:`gnn_attention.pretrained`.
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
from gnn_attention.interpret.effects import Effects, knockout_effects
from gnn_attention.interpret.graph_runner import (
                                                 GraphPlan,
                                                 execute_graph,
                                                 graph_sites,
                                                 prepare_graph,
                                                 run_graph,
)
from gnn_attention.interpret.plan import Plan, prepare
from gnn_attention.interpret.runner import RunResult, execute, run, sites

__all__ = ["KINDS", "Edits", "Effects", "GraphPlan", "Plan", "RunResult", "Site", "SiteEdit",
           "SiteRecord", "check_edits", "edge_mask", "edited_attention", "execute",
           "execute_graph", "graph_sites", "head_columns", "in_edges", "knockout_effects",
           "out_edges", "patch_all", "prepare", "prepare_graph", "run", "run_graph", "sites"]
