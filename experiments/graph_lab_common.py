"""Shared pieces of the graph-transformer lab (NeighborsMatch by depth, the edge-budget sweep).

Notation: G graphs in a mini-batch, N their nodes (``batch [N]``), V = 1 virtual node per graph when
the edge set has one, N' = N + G V, E attention edges j -> i (``edge_index[0]`` = source j, the key,
``edge_index[1]`` = target i, the query), K = 5 edge types, H heads, C channels.

One attention layer type serves every edge set, so a model differs from another only in *which*
pairs may attend (the point of the budget sweep): a pre-LayerNorm block

    a^h_ij = q^h_i . k^h_j / sqrt(D) + sum_k [e_ij in set k] w^h_k     (K = 5 types, below)
    h      = x + MHA(LN(x); a),   out = h + FFN(LN(h))

over the union of the chosen edge sets (``EDGE_TYPES``; a self loop on every node always). The
type-bias table and the virtual node's initial state exist in every model, used or not, so the
parameter count is the same for every edge set. The PyG baselines (GCN, GIN, GAT) use the
residual form of Alon & Yahav's models, ``h = LN(h + ReLU(conv(h)))``.

Training (:func:`fit`): the mini-batches and their edge programs are built once and reused every
epoch (batch membership fixed, batch order shuffled per epoch); a run stops as soon as an
evaluation pass over the training set is 100 % correct (triggered when the running accuracy of an
epoch reaches 1), when the best running accuracy has not improved for ``patience`` optimizer
steps, or at ``max_steps``; the stopping step, epoch and reason are returned.
"""
from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch_geometric.nn import GATConv, GCNConv, GINConv, global_mean_pool

from gnn_attention.attention import MultiheadAttentionConv
from gnn_attention.graph_models.edge_sets import (
    all_pairs,
    expander,
    graph_edges,
    typed_union,
    virtual_nodes,
)
from gnn_attention.graphs import TokenGraph

EDGE_TYPES = ("graph", "expander", "virtual", "self", "pair")
EDGE_SETS = ("graph", "expander", "virtual", "full")


@dataclass(frozen=True)
class Program:
    """One layer's attention graph over the N' nodes: ``graph`` (edges sorted by (target, source)),
    ``edge_type [E, K]`` float membership in ``EDGE_TYPES``, ``real [N]`` the row of each original
    node, ``virtual [G V]`` the rows of the virtual nodes (empty without them), ``num_real`` N."""

    graph: TokenGraph
    edge_type: Tensor
    real: Tensor
    virtual: Tensor
    num_real: int

    @property
    def edges_per_node(self) -> float:
        """Attention edges (self loops included) per original node: E / N."""
        return self.graph.num_edges / self.num_real


def build_program(sets: Sequence[str], edge_index: Tensor, batch: Tensor, degree: int = 4,
                  generator: torch.Generator | None = None) -> Program:
    """The union of the named edge sets (from ``EDGE_SETS``) plus a self loop per node.

    ``graph``: ``edge_index`` itself; ``expander``: a random ``degree``-regular expander per graph
    (Exphormer's); ``virtual``: one virtual node per graph wired both ways to its nodes; ``full``:
    every pair of nodes of a graph (virtual nodes included when present).
    **Shapes:** ``edge_index [2, E_g]``, ``batch [N]`` -> a program over N' nodes.
    """
    unknown = set(sets) - set(EDGE_SETS)
    if unknown or not sets:
        raise ValueError(f"edge sets must be a non-empty subset of {EDGE_SETS}, got {tuple(sets)}")
    graph_edges(edge_index, batch)
    n = batch.numel()
    if "virtual" in sets:
        vn = virtual_nodes(batch, 1)
        new_batch, real, virtual, lift = vn.batch, vn.real, vn.virtual.flatten(), vn.lift
    else:
        new_batch, real, virtual, lift = batch, torch.arange(n), torch.zeros(0, dtype=torch.long), \
            (lambda ei: ei)
    nodes = torch.arange(new_batch.numel())
    chosen = {"self": torch.stack([nodes, nodes])}
    if "graph" in sets:
        chosen["graph"] = lift(edge_index)
    if "expander" in sets:
        chosen["expander"] = lift(expander(batch, degree, generator))
    if "virtual" in sets:
        chosen["virtual"] = vn.edge_index
    if "full" in sets:
        chosen["pair"] = all_pairs(new_batch)
    typed = typed_union(chosen, new_batch)
    member = torch.zeros(typed.graph.num_edges, len(EDGE_TYPES))
    for k, name in enumerate(typed.names):
        member[:, EDGE_TYPES.index(name)] = typed.edge_type[:, k].float()
    return Program(typed.graph, member, real, virtual, n)


@dataclass(frozen=True)
class Batch:
    """A cached mini-batch: ``x [N, F]`` node inputs, ``y [B]`` targets, ``batch [N]``, ``roots
    [B]`` the read-out node of each graph (None: mean over the graph's nodes), ``edges``: a ``[2,
    E]`` edge_index (PyG baselines) or one :class:`Program` per layer (attention models)."""

    x: Tensor
    y: Tensor
    batch: Tensor
    roots: Tensor | None
    edges: object


class AttentionBlock(nn.Module):
    """The lab's one attention layer (module docstring). **Shapes:** ``x [N', C]`` -> ``[N', C]``."""

    def __init__(self, channels: int, heads: int):
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(channels), nn.LayerNorm(channels)
        self.attn = MultiheadAttentionConv(channels, heads)
        self.type_bias = nn.Parameter(torch.zeros(len(EDGE_TYPES), heads))
        self.ffn = nn.Sequential(nn.Linear(channels, channels), nn.GELU(),
                                 nn.Linear(channels, channels))

    def forward(self, x: Tensor, program: Program) -> Tensor:
        bias = program.edge_type @ self.type_bias  # [E, H]: one learned bias per type and head
        h = x + self.attn(self.norm1(x), program.graph, edge_bias=bias)
        return h + self.ffn(self.norm2(h))


def _read_out(h: Tensor, b: Batch) -> Tensor:
    return h[b.roots] if b.roots is not None else global_mean_pool(h, b.batch)


class AttentionNet(nn.Module):
    """``encoder`` -> L :class:`AttentionBlock` (layer l on ``batch.edges[l]``) -> LN -> linear.

    Virtual nodes (when the programs have them) start from a learned state.
    **Shapes:** a :class:`Batch` -> logits ``[B, classes]``."""

    def __init__(self, encoder: nn.Module, channels: int, heads: int, layers: int, classes: int):
        super().__init__()
        self.encoder = encoder
        self.blocks = nn.ModuleList(AttentionBlock(channels, heads) for _ in range(layers))
        self.virtual_init = nn.Parameter(torch.randn(channels) * 0.02)
        self.norm, self.out = nn.LayerNorm(channels), nn.Linear(channels, classes)

    def forward(self, b: Batch) -> Tensor:
        first = b.edges[0]
        if len(b.edges) != len(self.blocks):
            raise ValueError(f"{len(b.edges)} programs for {len(self.blocks)} layers")
        x = self.encoder(b.x)
        h = x.new_zeros(first.real.numel() + first.virtual.numel(), x.size(1))
        h = h.index_copy(0, first.real, x)
        h = h.index_copy(0, first.virtual, self.virtual_init.expand(first.virtual.numel(), -1))
        for block, program in zip(self.blocks, b.edges):
            h = block(h, program)  # every program of a model shares one node layout (checked below)
        return self.out(self.norm(_read_out(h.index_select(0, first.real), b)))


def check_layout(programs: Sequence[Program]) -> None:
    """All layers of an :class:`AttentionNet` must place the nodes the same way."""
    a = programs[0]
    for p in programs[1:]:
        if not (torch.equal(p.real, a.real) and torch.equal(p.virtual, a.virtual)):
            raise ValueError("the programs of one model must share one node layout")


class MPNet(nn.Module):
    """A PyG baseline: ``encoder`` -> L x ``h = LN(h + ReLU(conv(h, edge_index)))`` -> linear.
    ``kind``: ``gcn`` (GCNConv, self loops added), ``gin`` (GINConv, 2-layer MLP), ``gat``
    (GATConv, H heads of C / H concatenated, self loops added)."""

    def __init__(self, kind: str, encoder: nn.Module, channels: int, heads: int, layers: int,
                 classes: int):
        super().__init__()
        C = channels
        make: dict[str, Callable[[], nn.Module]] = {
            "gcn": lambda: GCNConv(C, C),
            "gin": lambda: GINConv(nn.Sequential(nn.Linear(C, C), nn.ReLU(), nn.Linear(C, C))),
            "gat": lambda: GATConv(C, C // heads, heads=heads)}
        if kind not in make:
            raise ValueError(f"kind must be one of {tuple(make)}, got {kind!r}")
        self.encoder = encoder
        self.convs = nn.ModuleList(make[kind]() for _ in range(layers))
        self.norms = nn.ModuleList(nn.LayerNorm(C) for _ in range(layers))
        self.out = nn.Linear(C, classes)

    def forward(self, b: Batch) -> Tensor:
        h = self.encoder(b.x)
        for conv, norm in zip(self.convs, self.norms):
            h = norm(h + torch.relu(conv(h, b.edges)))
        return self.out(_read_out(h, b))


def edges_per_node(b: Batch) -> float:
    """Mean over layers of E_l / N (a PyG baseline: its edge_index, before GCN/GAT self loops)."""
    if isinstance(b.edges, Tensor):
        return b.edges.size(1) / b.batch.numel()
    return sum(p.edges_per_node for p in b.edges) / len(b.edges)


def accuracy(model: nn.Module, batches: Sequence[Batch]) -> float:
    """Fraction of correct argmax predictions over the batches, in eval mode, no gradients."""
    model.eval()
    with torch.no_grad():
        right = sum(int((model(b).argmax(1) == b.y).sum()) for b in batches)
    model.train()
    return right / sum(b.y.numel() for b in batches)


def fit(model: nn.Module, batches: Sequence[Batch], lr: float, max_steps: int, patience: int,
        seed: int, augment: Callable[[Batch, torch.Generator], Batch] | None = None) -> dict:
    """Adam on cross-entropy until the training set is fitted, stalls or ``max_steps`` (module
    docstring); budgets count optimizer steps, so a small training set gets as many updates as a
    large one. ``patience``: steps without a better running epoch accuracy. ``augment(batch,
    gen)`` transforms a batch before each step (e.g. random eigenvector signs). Returns
    ``train_accuracy`` (a final eval pass), ``epochs``, ``steps``, ``stopped`` (``fitted`` /
    ``plateau`` / ``max_steps``), ``final_loss`` (the last epoch's mean), ``seconds``."""
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    best, best_step, stopped, t0, steps, epoch = -1.0, 0, "max_steps", time.perf_counter(), 0, 0
    total = sum(b.y.numel() for b in batches)
    model.train()
    while steps < max_steps:
        epoch += 1
        right, loss_sum = 0, 0.0
        for i in torch.randperm(len(batches), generator=gen).tolist():
            b = augment(batches[i], gen) if augment else batches[i]
            logits = model(b)
            loss = nn.functional.cross_entropy(logits, b.y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            steps += 1
            right += int((logits.argmax(1) == b.y).sum())
            loss_sum += float(loss.detach()) * b.y.numel()
        running = right / total  # the epoch's accuracy while training: a cheap trigger
        if running == 1.0 and accuracy(model, batches) == 1.0:
            stopped = "fitted"
            break
        if running > best + 1e-3:
            best, best_step = running, steps
        elif steps - best_step >= patience:
            stopped = "plateau"
            break
    return {"train_accuracy": accuracy(model, batches), "epochs": epoch, "steps": steps,
            "stopped": stopped, "final_loss": loss_sum / total,
            "seconds": time.perf_counter() - t0}


def disjoint_union(edge_index: Tensor, nodes: int, count: int) -> tuple[Tensor, Tensor]:
    """``count`` copies of one graph of ``nodes`` nodes as a PyG batch: ``(edge_index [2, count
    E], batch [count nodes])``, copy g on nodes ``g nodes .. (g + 1) nodes - 1``."""
    off = (torch.arange(count) * nodes).repeat_interleave(edge_index.size(1))
    return edge_index.repeat(1, count) + off, torch.arange(count).repeat_interleave(nodes)
