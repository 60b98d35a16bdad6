"""The token-graph object, its provenance (:class:`Pattern`) and validation.

Notation: B sequences; sequence b has T_b target (query) and S_b source (key) tokens;
N_dst = sum T_b, N_src = sum S_b nodes; E edges j -> i; t, s = positions inside a sequence.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Callable, Optional, Sequence, Union

import torch
from torch import Tensor

Lengths = Union[Sequence[int], Tensor]
# A predicate over local positions: allows(t, s, T, S) -> bool tensor (broadcasting).
Predicate = Callable[[Tensor, Tensor, Tensor, Tensor], Tensor]
CONVENTIONS = ("sdpa", "mha")
ALIGNS = ("top_left", "bottom_right")


@dataclass(frozen=True)
class Pattern:
    """Where a graph came from: a name, its parameters and the predicate that defines its edges.

    ``allows(t, s, T, S)`` is True where target position t may attend to source position s in a
    sequence with T targets and S sources. Kernels read ``name``/``params`` to pick an execution
    strategy; ``allows`` can serve as a FlexAttention ``mask_mod``. ``allows is None`` means the edge
    set is arbitrary (e.g. from a dense mask) and only ``edge_index`` defines it.
    """

    name: str
    params: tuple = ()
    allows: Optional[Predicate] = field(default=None, compare=False, repr=False)


@dataclass(frozen=True, eq=False)
class TokenGraph:
    """A batch of token graphs as one disjoint union, plus what kernels need to execute it.

    Attributes:
        edge_index: ``[2, E]`` int64, row 0 = source j, row 1 = target i, sorted by (i, j).
        num_src, num_dst: N_src and N_dst.
        src_ptr, dst_ptr: ``[B + 1]`` per-sequence node offsets (sequence b owns source nodes
            ``src_ptr[b]:src_ptr[b+1]`` and target nodes ``dst_ptr[b]:dst_ptr[b+1]``).
        rowptr: ``[N_dst + 1]`` CSR pointers: the incoming edges of target i are
            ``rowptr[i]:rowptr[i+1]``.
        pattern: the :class:`Pattern` the edges came from.
        bipartite: True when sources and targets are different node sets (cross-attention).
        cache: per-graph memo for kernels (the execution plan is decided once and reused by every
            layer that sees this graph). Never holds user data.
    """

    edge_index: Tensor
    num_src: int
    num_dst: int
    src_ptr: Tensor
    dst_ptr: Tensor
    rowptr: Tensor
    pattern: Pattern
    bipartite: bool = False
    cache: dict = field(default_factory=dict, repr=False)

    @property
    def num_edges(self) -> int:
        return self.edge_index.size(1)

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
        return self.edge_index.device

    def in_degree(self) -> Tensor:
        """``[N_dst]`` number of incoming edges (keys a query attends to)."""
        return self.rowptr.diff()

    def to(self, device: Union[str, torch.device]) -> "TokenGraph":
        """The same graph on another device (the kernel cache starts empty there)."""
        move = lambda t: t.to(device)  # noqa: E731
        return replace(self, edge_index=move(self.edge_index), src_ptr=move(self.src_ptr),
                       dst_ptr=move(self.dst_ptr), rowptr=move(self.rowptr), cache={})

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


# ---------------------------------------------------------------------------------------------
# Validation helpers


def as_lengths(lengths: Lengths, name: str = "lengths") -> Tensor:
    """Lengths as a 1-D int64 CPU tensor, rejecting negative values and non-integers."""
    t = torch.as_tensor(lengths)
    if t.numel() == 0:  # torch.as_tensor([]) is float32: an empty batch is still integer lengths
        t = t.long()
    if t.dim() != 1:
        raise ValueError(f"{name} must be 1-D (one length per sequence), got shape {tuple(t.shape)}")
    if t.is_floating_point() or t.is_complex() or t.dtype == torch.bool:
        raise TypeError(f"{name} must hold integers, got dtype {t.dtype}")
    t = t.to(device="cpu", dtype=torch.int64)
    if (t < 0).any():
        raise ValueError(f"{name} must be non-negative, got {t.tolist()}")
    return t


def _ptr(lengths: Tensor) -> Tensor:
    return torch.cat([lengths.new_zeros(1), lengths.cumsum(0)])


def _from_ranges(src_len: Tensor, dst_len: Tensor, lo: Tensor, count: Tensor, step: int,
                 pattern: Pattern, bipartite: bool, device) -> TokenGraph:
    """Build a graph where target t of sequence b has sources ``lo[t] + step * k``, k < count[t].

    ``lo`` and ``count`` are per target node ``[N_dst]`` in local (per-sequence) positions; this is
    how every structured pattern is built without materialising a dense T x S mask.
    """
    src_ptr, dst_ptr = _ptr(src_len), _ptr(dst_len)
    count = count.clamp_min(0)
    rowptr = _ptr(count)
    num_dst = int(dst_ptr[-1])
    dst = torch.repeat_interleave(torch.arange(num_dst), count)
    seq = torch.repeat_interleave(torch.arange(dst_len.numel()), dst_len)  # [N_dst]
    k = torch.arange(dst.numel()) - rowptr[:-1][dst]
    src = src_ptr[:-1][seq][dst] + lo[dst] + step * k
    return TokenGraph(edge_index=torch.stack([src, dst]).to(device), num_src=int(src_ptr[-1]),
                      num_dst=num_dst, src_ptr=src_ptr.to(device), dst_ptr=dst_ptr.to(device),
                      rowptr=rowptr.to(device), pattern=pattern, bipartite=bipartite)


def _local_positions(dst_len: Tensor, src_len: Tensor):
    """Per target node: its position t, its sequence's T and S (each ``[N_dst]``)."""
    seq = torch.repeat_interleave(torch.arange(dst_len.numel()), dst_len)
    t = torch.arange(seq.numel()) - _ptr(dst_len)[:-1][seq]
    return t, dst_len[seq], src_len[seq]


def from_edge_index(edge_index: Tensor, src_lengths: Lengths, dst_lengths: Lengths,
                    pattern: Optional[Pattern] = None, bipartite: bool = False,
                    device=None) -> TokenGraph:
    """Wrap arbitrary edges (validated, sorted by (target, source)) as a :class:`TokenGraph`.

    Raises if an edge leaves its sequence (batching is a disjoint union) or appears twice (the
    edges are a set: a repeated edge would count its key twice in the softmax).
    """
    m, n = as_lengths(src_lengths, "src_lengths"), as_lengths(dst_lengths, "dst_lengths")
    src_ptr, dst_ptr = _ptr(m), _ptr(n)
    num_src, num_dst = int(src_ptr[-1]), int(dst_ptr[-1])
    ei = check_edge_index(edge_index, num_src, num_dst, check_duplicates=False).to("cpu")
    if ei.size(1):
        seq_s = torch.searchsorted(src_ptr, ei[0], right=True) - 1
        seq_d = torch.searchsorted(dst_ptr, ei[1], right=True) - 1
        if (seq_s != seq_d).any():
            raise ValueError("edge_index has edges between two different sequences; a batch of "
                             "token graphs is a disjoint union")
    key = ei[1] * max(num_src, 1) + ei[0]
    order = torch.argsort(key, stable=True)
    ei = ei[:, order]
    _reject_duplicates(ei, key[order])  # sorted keys: O(E), the sort was needed anyway
    rowptr = _ptr(torch.bincount(ei[1], minlength=num_dst))
    device = edge_index.device if device is None else device
    return TokenGraph(ei.to(device), num_src, num_dst, src_ptr.to(device), dst_ptr.to(device),
                      rowptr.to(device), pattern or Pattern("custom"), bipartite)


def check_edge_index(edge_index: Tensor, num_src: int, num_dst: int,
                     check_duplicates: bool = True) -> Tensor:
    """Validate ``edge_index`` (``[2, E]`` integer, indices in range, no edge twice) and return it
    as int64.

    Duplicates are rejected, not merged: attention edges form a set, and a repeated edge j -> i
    would silently give key j twice the weight in the softmax of target i. The check costs O(E) when
    the edges are already sorted by (target, source) (as in every :class:`TokenGraph`), else one sort.
    """
    if not isinstance(edge_index, Tensor):
        raise TypeError(f"edge_index must be a Tensor or TokenGraph, got {type(edge_index).__name__}")
    if edge_index.dtype not in (torch.int64, torch.int32):
        raise TypeError(f"edge_index must have an integer dtype (int64), got {edge_index.dtype}")
    if edge_index.dim() != 2 or edge_index.size(0) != 2:
        raise ValueError(f"edge_index must have shape [2, E], got {tuple(edge_index.shape)}")
    if torch.compiler.is_compiling():
        # Value checks read the data on the host, which would break a compiled graph: under
        # torch.compile only dtype and shape are checked (run eagerly once to validate values).
        return edge_index.long()
    if edge_index.numel():
        lo, hi = edge_index.min(dim=1).values.tolist(), edge_index.max(dim=1).values.tolist()
        if min(lo) < 0 or hi[0] >= num_src or hi[1] >= num_dst:
            raise IndexError(f"edge_index out of range: sources must lie in [0, {num_src}) and "
                             f"targets in [0, {num_dst}), got sources in [{lo[0]}, {hi[0]}] and "
                             f"targets in [{lo[1]}, {hi[1]}]")
    ei = edge_index.long()
    if check_duplicates and ei.size(1) > 1:
        key, edges = ei[1] * max(num_src, 1) + ei[0], ei
        if not bool((key[1:] >= key[:-1]).all()):
            key, order = key.sort()
            edges = ei[:, order]
        _reject_duplicates(edges, key)
    return ei


def _reject_duplicates(ei: Tensor, sorted_key: Tensor) -> None:
    """Raise if two consecutive (sorted) edge keys are equal, naming the first repeated edge."""
    same = sorted_key[1:] == sorted_key[:-1]
    if bool(same.any()):
        first = int(same.nonzero()[0])
        j, i = ei[0, first].item(), ei[1, first].item()
        raise ValueError(f"edge_index has {int(same.sum())} duplicate edge(s), first j={j} -> i={i}; "
                         f"attention edges form a set (a repeated edge would count its key twice in "
                         f"the softmax): remove them, e.g. torch.unique(edge_index, dim=1)")
