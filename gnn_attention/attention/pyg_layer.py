"""``AttentionMessagePassing``: what every attention conv shares with PyG, whatever its channel
model: edge inputs in every PyG form, GAT-style self-loops, edge features on the fast kernels, and
PyG's own ``edge_updater`` + ``propagate`` form whenever PyG is watching (explain, hooks).

Notation: N_src source (key/value) nodes, N_dst target (query) nodes, E edges j -> i, H heads,
D per-head width, F edge-feature width; ``edge_kv = (a [E, F], W [H, D, F])`` are edge features
and the projection that adds e_ij = W a_ij to the keys and values (TransformerConv's rule).

Two executions of one computation:

* fast (default): :func:`graph_attention` on the planned kernel; edge features enter as a per-edge
  bias and a per-node sum (:mod:`gnn_attention.attention.edge_features`), never ``[E, H, D]``.
* message passing: ``alpha = edge_updater(...)`` then ``propagate`` with ``message = alpha *
  (v_j + e_ij)``. It runs for ``backend="message_passing"`` and whenever PyG observes the layer:
  explain mode (``self.explain``, set by ``torch_geometric.explain``: GNNExplainer's edge mask
  multiplies the messages) or any registered propagate/message/aggregate/edge-update hook
  (AttentionExplainer reads ``alpha`` from a message hook). Only then does it pay for per-edge
  ``[E, H, D]`` messages; the two executions agree to float rounding (tests).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor
from torch_geometric.nn import MessagePassing

from gnn_attention.attention import edge_features
from gnn_attention.attention.functional import graph_attention
from gnn_attention.attention.math import compute_dtype, edge_scores, segment_softmax
from gnn_attention.graphs import TokenGraph, check_edge_index
from gnn_attention.graphs.pyg import (
    SparseTensor,
    add_self_loops,
    cached_sorted_graph,
    to_edge_index,
)

HOOKS = ("_propagate_forward_pre_hooks", "_propagate_forward_hooks", "_message_forward_pre_hooks",
         "_message_forward_hooks", "_aggregate_forward_pre_hooks", "_aggregate_forward_hooks",
         "_message_and_aggregate_forward_pre_hooks", "_message_and_aggregate_forward_hooks",
         "_edge_update_forward_pre_hooks", "_edge_update_forward_hooks")
REORDERED = ("this TokenGraph reordered the edges it was built from (graph.edge_perm is set), so "
             "a per-edge {name} given separately could be in either order; build the graph with "
             "graphs.from_edge_index(edge_index, ..., edge_attr=...) and pass graph.edge_attr (in "
             "the graph's order), or rebuild it from graph.edge_index")


@dataclass(frozen=True)
class Edges:
    """A layer's edge input, normalised: what runs (``graph``: a TokenGraph or ``[2, E]`` int64),
    the edge features ``edge_attr [E, F]`` and ``edge_bias [E, H]`` (or None) in the order of
    :attr:`edge_index`, and the input's kind (``"tensor"``, ``"graph"``, ``"sparse"``,
    ``"sparse_tensor"``) with the original input. ``fast``: for a raw input, the same edges as a
    sorted TokenGraph for the kernels (its ``edge_perm`` maps them back to the caller's order)."""

    graph: Tensor | TokenGraph
    edge_attr: Tensor | None
    edge_bias: Tensor | None
    kind: str
    original: object
    fast: TokenGraph | None = None

    @property
    def edge_index(self) -> Tensor:
        """``[2, E]``: the order of every per-edge tensor here and of the returned alpha (read
        only when needed: a structured TokenGraph builds its edges on first access)."""
        return self.graph.edge_index if isinstance(self.graph, TokenGraph) else self.graph


class AttentionMessagePassing(MessagePassing):
    """Base of the attention convs: subclasses own the parameters and the channel model.

    Subclass attributes used here: ``score`` (a name of :data:`SCORES`), ``backend``, ``strict``,
    ``add_self_loops``, ``fill_value``; :meth:`score_weights`.
    """

    def observed(self) -> bool:
        """True when PyG's machinery watches this layer (explain mode or any hook): then the
        message-passing form runs, so that messages, masks and hooks see every edge."""
        return bool(self.explain) or any(len(getattr(self, h, ())) for h in HOOKS)

    def score_weights(self):
        return None

    # -- inputs ------------------------------------------------------------------------------

    def edges(self, edge_index, edge_attr: Tensor | None, edge_bias: Tensor | None,
              n_src: int, n_dst: int) -> Edges:
        """Normalise any PyG edge input (see :mod:`gnn_attention.graphs.pyg`), check it against
        the node counts and the per-edge tensors, and add self-loops if the layer asks for them."""
        if isinstance(edge_attr, bool):
            raise TypeError("the third argument is edge_attr; pass return_attention_weights by "
                            "keyword (conv(x, edge_index, return_attention_weights=True))")
        if isinstance(edge_index, TokenGraph):
            return self._graph_edges(edge_index, edge_attr, edge_bias)
        if isinstance(edge_index, Tensor) and edge_index.layout == torch.sparse_coo and \
                not edge_index.is_coalesced() and (edge_attr is not None or edge_bias is not None):
            raise ValueError("per-edge tensors given with a sparse adjacency follow its stored "
                             "order, which coalescing would change: pass adj_t.coalesce() (and "
                             "the per-edge tensors in its order)")
        ei, size, values = to_edge_index(edge_index)
        kind = "sparse_tensor" if isinstance(edge_index, SparseTensor) else \
            "tensor" if edge_index.layout == torch.strided else "sparse"
        if size is not None and size != (n_src, n_dst):
            raise ValueError(f"the adjacency has size (N_src, N_dst) = {size}, but the node "
                             f"features have {n_src} source and {n_dst} target rows")
        if edge_attr is None and values is not None and values.dim() == 2:
            edge_attr = values  # PyG: a sparse matrix's feature-vector values are edge_attr
        ei = check_edge_index(ei, n_src, n_dst, check_duplicates=False)
        if self.add_self_loops:
            if edge_bias is not None:
                raise ValueError("edge_bias cannot be combined with add_self_loops=True (the loops "
                                 "would have no bias); add the loops and their bias yourself")
            ei, edge_attr = add_self_loops(ei, min(n_src, n_dst), edge_attr, self.fill_value)
        self._check_per_edge(ei.size(1), edge_attr, edge_bias)
        # one host sort, rejecting duplicates, memoised on the caller's tensor (checked against a
        # copy of the edges at every hit); not while compiling (it reads the edges on the host, and
        # compiled graphs run the reference form anyway)
        fast = None if torch.compiler.is_compiling() else cached_sorted_graph(
            ei, n_src, n_dst, owner=edge_index if isinstance(edge_index, Tensor) else None)
        return Edges(ei, edge_attr, edge_bias, kind, edge_index, fast)

    def _graph_edges(self, graph: TokenGraph, edge_attr, edge_bias) -> Edges:
        if self.add_self_loops:
            raise ValueError("add_self_loops=True needs a [2, E] edge_index; a TokenGraph already "
                             "fixes its edges (build it with the loops you want)")
        own = _graph_inputs(graph)  # per-edge tensors the graph carries, in its own order
        if getattr(graph, "edge_perm", None) is not None:
            # the separately given tensor may follow the user's order or the graph's: refuse
            for name, t in (("edge_attr", edge_attr), ("edge_bias", edge_bias)):
                if t is not None and t is not own.get(name):
                    raise ValueError(REORDERED.format(name=name))
            if self.observed():  # explain masks follow the edge_index the model was given
                raise ValueError("PyG's explain machinery needs the edges in the order the model "
                                 "was given them; pass the [2, E] edge_index instead of a "
                                 "reordered TokenGraph")
        if edge_attr is None and getattr(self, "edge_dim", None) is not None:
            edge_attr = own.get("edge_attr")
        edge_bias = own.get("edge_bias") if edge_bias is None else edge_bias
        self._check_per_edge(graph.num_edges, edge_attr, edge_bias)
        return Edges(graph, edge_attr, edge_bias, "graph", graph)

    def _check_per_edge(self, E: int, edge_attr: Tensor | None, edge_bias: Tensor | None):
        edge_dim = getattr(self, "edge_dim", None)
        if edge_attr is not None and edge_dim is None:
            raise ValueError("edge_attr given but this layer has edge_dim=None (no edge "
                             "projection); construct it with edge_dim=F")
        if edge_attr is None and edge_dim is not None:
            raise ValueError(f"this layer has edge_dim={edge_dim}: pass edge_attr [E, {edge_dim}]")
        if edge_attr is not None and (edge_attr.dim() != 2 or edge_attr.shape != (E, edge_dim)):
            raise ValueError(f"edge_attr must have shape [E, edge_dim] = [{E}, {edge_dim}], got "
                             f"{list(edge_attr.shape)}")

    @staticmethod
    def returned_edges(edges: Edges, alpha: Tensor):
        """``(edge_index, alpha)`` as PyG returns them; a SparseTensor input gets its values
        replaced by alpha (PyG's form); every other input gets ``[2, E]`` aligned with alpha."""
        if edges.kind == "sparse_tensor":
            return edges.original.set_value(alpha, layout="coo")
        return edges.edge_index, alpha

    # -- the computation ---------------------------------------------------------------------

    def attend_edges(self, q: Tensor, k: Tensor, v: Tensor, edges: Edges,
                     edge_kv: tuple[Tensor, Tensor] | None, dropout_p: float,
                     need_alpha: bool, scale: float) -> tuple[Tensor, Tensor | None]:
        """``(out [N_dst, H, D], alpha [E, H] or None)``, alpha in ``edges.edge_index`` order and
        always given when ``need_alpha`` (the fast path returns None otherwise).

        ``scale`` multiplies the edge-key bias (the score's scale: 1/sqrt(D), or 1 for "dot").
        """
        if self.backend == "message_passing" or self.observed():
            return self._message_passing(q, k, v, edges, edge_kv, dropout_p)
        g = edges.graph if edges.fast is None else edges.fast
        perm = None if edges.fast is None else edges.fast.edge_perm
        to_graph = lambda t: t if perm is None or t is None else t.index_select(0, perm)
        bias = to_graph(edges.edge_bias)
        if edge_kv is not None and edges.edge_attr.size(0) == 0:
            edge_kv = None  # no edge: nothing to add (the sparse products dislike nnz = 0)
        if edge_kv is not None:  # only now are the edges read (a structured graph builds them)
            a, w = to_graph(edge_kv[0]).to(q.dtype), edge_kv[1].to(q.dtype)
            m = edge_features.edge_matrix(g, g.edge_index[1], q.size(0), q.size(1))
            kb = edge_features.key_bias(q, a, w, m, scale)
            bias = kb if bias is None else bias + kb
        try:
            res = graph_attention(q, k, v, g, edge_bias=bias, score=self.score,
                                  score_weight=self.score_weights(), dropout_p=dropout_p,
                                  return_attention_weights=need_alpha or edge_kv is not None,
                                  strict=self.strict, backend=self.backend)
        except ValueError as err:  # validation runs before any computation: name PyG's fix
            _reraise_with_hint(err)
        out, alpha = res if isinstance(res, tuple) else (res, None)
        if edge_kv is not None:  # the weights already carry dropout: the same as the values saw
            out = out + edge_features.value_sum(alpha.to(q.dtype), a, w, m).to(out.dtype)
        if not need_alpha:  # computed for the edge values only: no scatter back to the caller
            return out, None
        if perm is not None:  # back to the caller's edge order
            alpha = alpha.new_zeros(alpha.shape).index_copy(0, perm, alpha)
        return out, alpha

    def _message_passing(self, q, k, v, edges: Edges, edge_kv, dropout_p):
        ei = edges.edge_index  # the caller's order: explain masks follow it (duplicates were
        # rejected when the input was normalised)
        if self.strict and q.size(0) and int(torch.bincount(ei[1], minlength=q.size(0)).min()) == 0:
            raise ValueError("strict=True: a target node has no incoming edge")
        dtype = compute_dtype(q.dtype)
        q, k, vc = q.to(dtype), k.to(dtype), v.to(dtype)
        e = None if edge_kv is None else edge_features.embed(edge_kv[0].to(dtype),
                                                             edge_kv[1].to(dtype))
        size = (k.size(0), q.size(0))
        alpha = self.edge_updater(ei, q=(None, q), k=(k, None), edge_key=e,
                                  edge_bias=edges.edge_bias, size=size)
        alpha = F.dropout(alpha, dropout_p) if dropout_p > 0 else alpha
        out = self.propagate(ei, v=(vc, None), alpha=alpha, edge_value=e, size=size)
        return out.to(v.dtype), alpha.to(v.dtype)

    def edge_update(self, q_i: Tensor, k_j: Tensor, edge_key: Tensor | None,
                    edge_bias: Tensor | None, index: Tensor, size_i: int) -> Tensor:
        """``alpha_ij`` for every edge: scores of ``q_i`` against ``k_j (+ e_ij)``, then softmax
        over the edges sharing target i."""
        n = q_i.size(0)
        keys = k_j if edge_key is None else k_j + edge_key
        s = edge_scores(q_i, keys, torch.arange(n, device=q_i.device).expand(2, n),
                        score=self.score, score_weight=self.score_weights())
        return segment_softmax(s if edge_bias is None else s + edge_bias.to(s.dtype), index, size_i)

    def message(self, v_j: Tensor, alpha: Tensor, edge_value: Tensor | None) -> Tensor:
        """The message j -> i: ``alpha_ij * (v_j + e_ij)`` per head."""
        val = v_j if edge_value is None else v_j + edge_value
        return alpha.unsqueeze(-1) * val


def _graph_inputs(graph: TokenGraph) -> dict:
    """The graph's ``edge_attr`` as ``{"edge_attr": ..., "edge_bias": ...}``: a tensor is edge
    features; a dict may name either (other keys and tuples are for other readers)."""
    attr = getattr(graph, "edge_attr", None)
    if isinstance(attr, Tensor):
        return {"edge_attr": attr}
    if isinstance(attr, dict):
        return {k: attr[k] for k in ("edge_attr", "edge_bias") if k in attr}
    return {}


def _reraise_with_hint(err: ValueError):
    """Raise ``err`` again; the duplicate-edge error is completed with PyG's way to merge edges."""
    if "duplicate edge" in str(err):
        raise ValueError(f"{err}; in PyG: torch_geometric.utils.coalesce(edge_index, "
                         f"edge_attr)") from err
    raise err
