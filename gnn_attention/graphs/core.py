"""The token-graph object, its provenance (:class:`Pattern`), and wrapping edges as a graph.

Notation: B sequences; sequence b has T_b target (query) and S_b source (key) tokens;
N_dst = sum T_b, N_src = sum S_b nodes; E edges j -> i; t, s = positions inside a sequence.
"""
from __future__ import annotations

from itertools import accumulate

import torch
from torch import Tensor

from gnn_attention.graphs import budget
from gnn_attention.graphs.lengths import Lengths, as_lengths, host_lengths
from gnn_attention.graphs.lengths import offsets as _ptr
from gnn_attention.graphs.pattern import Pattern, Predicate
from gnn_attention.graphs.structured import (
    ALIGNS,
    canonical_params,
    edge_bytes,
    edge_count,
    materialise,
    predicate,
    ranges,
)
from gnn_attention.graphs.validate import (
    check_edge_attr,
    check_edge_index,
    check_edges,
    check_ptrs,
    check_same_sequence,
    checked_label,
    reject_duplicates,
)

CONVENTIONS = ("sdpa", "mha")
__all__ = ["ALIGNS", "CONVENTIONS", "Lengths", "Pattern", "Predicate", "TokenGraph", "as_lengths",
           "check_edge_index", "checked_label", "from_edge_index", "host_lengths", "structured_graph"]
# Peak bytes per edge of from_edge_index: sort key, order, sorted copy and sequence ids (int64).
WRAP_BYTES_PER_EDGE = 6 * 8


class TokenGraph:
    """A batch of token graphs as one disjoint union, plus what kernels need to execute it.

    Attributes:
        edge_index: ``[2, E]`` int64, row 0 = source j, row 1 = target i, sorted by (i, j).
        num_src, num_dst: N_src and N_dst.
        src_ptr, dst_ptr: ``[B + 1]`` per-sequence node offsets (sequence b owns source nodes
            ``src_ptr[b]:src_ptr[b+1]`` and target nodes ``dst_ptr[b]:dst_ptr[b+1]``).
        rowptr: ``[N_dst + 1]`` CSR pointers: the incoming edges of target i are
            ``rowptr[i]:rowptr[i+1]``.
        pattern: the :class:`Pattern` the edges came from. Structured names (``full``, ``causal``,
            ``cross``, ``cross_causal``, ``window``) are checked against the edges: kernels trust
            them and may never read the edges.
        bipartite: True when sources and targets are different node sets (cross-attention).
        edge_attr: per-edge inputs given to :func:`from_edge_index`, in ``edge_index``'s order
            (a tensor with E rows, or a tuple / dict of them), else None.
        edge_perm: ``[E]`` int64, sorted position k holds the caller's edge ``edge_perm[k]``;
            None when the caller's edges were already sorted (no reordering happened).
        host_lengths: ``(S_b per sequence, T_b per sequence)`` as tuples of Python ints, held by
            every implicit graph, including after its edges were built or it was moved (None
            for graphs from edges): the plan, the edge count and the dense
            layout read them without touching a tensor, so a graph built inside a function that
            ``torch.compile`` traces costs no graph break.
        cache: per-graph memo for kernels (the execution plan is decided once and reused by every
            layer that sees this graph). Never holds user data.

    A structured graph (``edge_index=None`` with a structured pattern, as the builders make) is
    *implicit*: it holds the lengths only; ``edge_index`` and ``rowptr`` are built on first access
    and kept (``materialized`` says whether that happened); ``num_edges`` and ``in_degree()`` never
    need them. Hand-built graphs are validated: edges sorted by (target, source) without
    duplicates, CSR pointers consistent, no edge between two sequences, structured labels true.
    ``validate=False`` skips this for edges that are correct by construction.
    """

    def __init__(self, edge_index: Tensor | None, num_src: int, num_dst: int, src_ptr: Tensor,
                 dst_ptr: Tensor, rowptr: Tensor | None, pattern: Pattern,
                 bipartite: bool = False, cache: dict | None = None, *, edge_attr=None,
                 edge_perm: Tensor | None = None, validate: bool = True,
                 lengths: tuple | None = None):
        put = lambda k, v: object.__setattr__(self, k, v)
        for k, v in (("num_src", int(num_src)), ("num_dst", int(num_dst)), ("src_ptr", src_ptr),
                     ("dst_ptr", dst_ptr), ("bipartite", bool(bipartite)),
                     ("cache", {} if cache is None else cache), ("edge_attr", edge_attr),
                     ("edge_perm", edge_perm), ("_edge_index", edge_index), ("_rowptr", rowptr),
                     ("_num_edges", None), ("pattern", pattern), ("host_lengths", None)):
            put(k, v)
        if validate:
            check_ptrs(self)
        if edge_index is None:
            if rowptr is not None:
                raise ValueError("an implicit (structured) TokenGraph takes rowptr=None: both are "
                                 "built from the pattern")
            if lengths is None:  # hand-built: read once from the offsets (eagerly)
                lengths = (tuple(src_ptr.diff().tolist()), tuple(dst_ptr.diff().tolist()))
        if lengths is not None:  # kept when a built graph moves (its edges may exist by then)
            put("host_lengths", lengths)
            put("pattern", Pattern(pattern.name, canonical_params(pattern.name, pattern.params),
                                   pattern.allows or predicate(pattern.name, pattern.params)))
        elif validate:
            put("pattern", check_edges(self, edge_index, rowptr))
            if edge_attr is not None:
                check_edge_attr(edge_attr, edge_index.size(1))

    def __setattr__(self, name, value):
        raise AttributeError(f"TokenGraph is immutable (cannot set {name!r}); build a new graph")

    @property
    def materialized(self) -> bool:
        """Whether ``edge_index`` is held (always for explicit graphs; after first access else)."""
        return self._edge_index is not None

    @property
    def edge_index(self) -> Tensor:
        if self._edge_index is None:
            E = self.num_edges
            budget.check(lambda: f"materialising the {E} edges of {self!r}", edge_bytes(E),
                         "The dense and tiled kernels run structured patterns without edges; use "
                         "them (backend='auto') or a sparser pattern.")
            lo, count, step = ranges(self.pattern.name, self.pattern.params, *self._cpu_lengths())
            ei, rowptr = materialise(self.src_ptr.cpu(), self.dst_ptr.cpu(), lo, count, step)
            object.__setattr__(self, "_edge_index", ei.to(self.device))
            if self._rowptr is None:
                object.__setattr__(self, "_rowptr", rowptr.to(self.device))
        return self._edge_index

    @property
    def rowptr(self) -> Tensor:
        if self._rowptr is None:  # O(N_dst) from the per-target counts: no edge is built
            object.__setattr__(self, "_rowptr", _ptr(self._counts()).to(self.device))
        return self._rowptr

    def _cpu_lengths(self):
        if self.host_lengths is not None:  # no device sync
            return tuple(torch.tensor(n, dtype=torch.long) for n in self.host_lengths)
        return self.src_ptr.diff().cpu(), self.dst_ptr.diff().cpu()

    def _counts(self) -> Tensor:
        return ranges(self.pattern.name, self.pattern.params, *self._cpu_lengths())[1]

    @property
    def num_edges(self) -> int:
        if self._edge_index is not None:
            return self._edge_index.size(1)
        if self._num_edges is None:  # closed form per sequence on Python ints: O(B)
            n = edge_count(self.pattern.name, self.pattern.params, *self.host_lengths)
            object.__setattr__(self, "_num_edges", n)
        return self._num_edges

    @property
    def batch_size(self) -> int:
        return self.src_ptr.numel() - 1

    @property
    def src_lengths(self) -> Tensor:
        return self.src_ptr.diff()

    @property
    def dst_lengths(self) -> Tensor:
        return self.dst_ptr.diff()

    @property
    def device(self) -> torch.device:
        return self.src_ptr.device

    def in_degree(self) -> Tensor:
        """``[N_dst]`` number of incoming edges (keys a query attends to); O(N_dst) for an
        implicit graph (no edge is built)."""
        if self._rowptr is None:
            return self._counts().to(self.device)
        return self._rowptr.diff()

    def to(self, device: str | torch.device) -> TokenGraph:
        """The same graph on another device (the kernel cache starts empty there; an implicit
        graph stays implicit)."""
        move = lambda t: None if t is None else t.to(device)
        return TokenGraph(move(self._edge_index), self.num_src, self.num_dst, move(self.src_ptr),
                          move(self.dst_ptr), move(self._rowptr), self.pattern, self.bipartite,
                          edge_attr=map_edge_attr(self.edge_attr, move),
                          edge_perm=move(self.edge_perm), validate=False,
                          lengths=self.host_lengths)

    def as_edge_index(self):
        """The edges as PyG's :class:`torch_geometric.EdgeIndex` (sparse size ``(N_src, N_dst)``,
        sorted by target, i.e. ``sort_order="col"``)."""
        from torch_geometric import EdgeIndex

        return EdgeIndex(self.edge_index, sparse_size=(self.num_src, self.num_dst), sort_order="col")

    def to_pyg(self):
        """A PyG ``Data`` (self-attention graph) or ``HeteroData`` with node types ``"src"`` and
        ``"dst"`` and edge type ``("src", "attends", "dst")`` (bipartite graph)."""
        from torch_geometric.data import Data, HeteroData

        if not self.bipartite:
            return Data(edge_index=self.edge_index, num_nodes=self.num_dst, ptr=self.dst_ptr)
        data = HeteroData()
        data["src"].num_nodes, data["dst"].num_nodes = self.num_src, self.num_dst
        data["src"].ptr, data["dst"].ptr = self.src_ptr, self.dst_ptr
        data["src", "attends", "dst"].edge_index = self.edge_index
        return data

    def __repr__(self) -> str:
        kind = "bipartite, " if self.bipartite else ""
        return (f"TokenGraph({self.pattern.name}, {kind}batch={self.batch_size}, "
                f"src={self.num_src}, dst={self.num_dst}, edges={self.num_edges})")


def structured_graph(pattern: Pattern, src_len: tuple[int, ...], dst_len: tuple[int, ...],
                     bipartite: bool, device=None) -> TokenGraph:
    """An implicit graph of a structured pattern from per-sequence lengths (Python ints): O(B) to
    build, edges only when asked; no tensor value is read (traceable without a graph break)."""
    src_off, dst_off = [0, *accumulate(src_len)], [0, *accumulate(dst_len)]
    ptr = lambda off: torch.tensor(off, dtype=torch.long, device=device)
    return TokenGraph(None, src_off[-1], dst_off[-1], ptr(src_off), ptr(dst_off), None, pattern,
                      bipartite, validate=False, lengths=(tuple(src_len), tuple(dst_len)))


def map_edge_attr(edge_attr, fn):
    """``fn`` applied to the per-edge tensor(s) of ``edge_attr`` (a tensor, tuple/list, dict)."""
    if edge_attr is None or isinstance(edge_attr, Tensor):
        return None if edge_attr is None else fn(edge_attr)
    if isinstance(edge_attr, dict):
        return {k: fn(v) for k, v in edge_attr.items()}
    return tuple(fn(v) for v in edge_attr)


def from_edge_index(edge_index: Tensor, src_lengths: Lengths, dst_lengths: Lengths,
                    pattern: Pattern | None = None, bipartite: bool = False, device=None,
                    edge_attr=None) -> TokenGraph:
    """Wrap arbitrary edges (validated, sorted by (target, source)) as a :class:`TokenGraph`.

    Raises if the lengths describe different numbers of sequences, an edge leaves its sequence
    (batching is a disjoint union) or appears twice (the edges are a set: a repeated edge would
    count its key twice in the softmax), or a structured ``pattern`` label is not what the edges
    are (kernels trust those labels and may never read the edges).

    ``edge_attr`` (a tensor with E rows, or a tuple / dict of them) is reordered with the edges and
    kept as ``graph.edge_attr``. ``graph.edge_perm[k]`` is the caller's index of sorted edge k,
    None when the edges were already sorted: per-edge values in the caller's order ``v`` are
    ``v[graph.edge_perm]`` in the graph's order.

    **Shapes:** ``edge_index [2, E]``, ``src_lengths`` / ``dst_lengths`` ``[B]``,
    ``edge_attr [E, ...]`` -> a graph with ``edge_index [2, E]``, ``edge_perm [E]`` or None.
    """
    m, n = as_lengths(src_lengths, "src_lengths"), as_lengths(dst_lengths, "dst_lengths")
    if m.numel() != n.numel():
        raise ValueError(f"src_lengths has {m.numel()} sequences, dst_lengths has {n.numel()}")
    src_ptr, dst_ptr = _ptr(m), _ptr(n)
    num_src, num_dst = int(src_ptr[-1]), int(dst_ptr[-1])
    ei = check_edge_index(edge_index, num_src, num_dst, check_duplicates=False)
    E = ei.size(1)
    if edge_attr is not None:
        check_edge_attr(edge_attr, E)
    budget.check(lambda: f"sorting {E} edges", WRAP_BYTES_PER_EDGE * E,
                 "Use a structured builder (graphs.full, causal, window, cross) where one fits.")
    ei = ei.to("cpu")
    check_same_sequence(ei, src_ptr, dst_ptr)
    key = ei[1] * max(num_src, 1) + ei[0]
    perm = None
    if E > 1 and not bool((key[1:] > key[:-1]).all()):  # already sorted: no copy, no permutation
        perm = torch.argsort(key, stable=True)
        ei, key = ei[:, perm], key[perm]
    reject_duplicates(ei, key)  # sorted keys: O(E), the sort was needed anyway
    rowptr = _ptr(torch.bincount(ei[1], minlength=num_dst))
    label = checked_label(pattern or Pattern("custom"), ei, src_ptr, dst_ptr, rowptr)
    device = edge_index.device if device is None else device
    if edge_attr is not None:
        edge_attr = map_edge_attr(edge_attr, lambda a: (
            a if perm is None else a[perm.to(a.device)]).to(device))
    return TokenGraph(ei.to(device), num_src, num_dst, src_ptr.to(device), dst_ptr.to(device),
                      rowptr.to(device), label, bipartite, edge_attr=edge_attr,
                      edge_perm=None if perm is None else perm.to(device), validate=False)


