"""Tree-NeighborsMatch (Alon & Yahav 2021, the over-squashing benchmark), generated offline: which
edge set lets information from 2^r leaves reach the root of a depth-r binary tree?

Each graph is a complete binary tree of depth r. Leaf l carries a key (a permutation of 1..2^r per
tree) and a label (1..2^r, random); the root carries a query key; the task is the label of the leaf
whose key equals the root's. Models (r + 1 layers, width C, read out at the root):

    gin           PyG GINConv on the tree edges (message passing)
    graph_attn    MultiheadAttentionConv on the tree edges + self loops (edge-restricted attention)
    exphormer     ExphormerLayer: tree + expander (d = 4) + one virtual node + self loops
    full          GraphormerLayer: all pairs of each tree with a shortest-path bias

Reported: training accuracy (the paper's measure: can the model fit the training set at all?).

    python experiments/graph_lab_neighbors_match.py          # depths 2..4, cited in the docs
    python experiments/graph_lab_neighbors_match.py quick    # seconds (the test's version)

Writes experiments/results/graph_lab_neighbors_match.json.
"""
from __future__ import annotations

import json
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch
from torch import nn
from torch_geometric.nn import GINConv

from gnn_attention.attention import MultiheadAttentionConv
from gnn_attention.graph_models import (
    ExphormerLayer,
    GraphormerLayer,
    exphormer_inputs,
    graphormer_inputs,
)
from gnn_attention.graphs import from_edge_index

ROOT = Path(__file__).resolve().parent.parent
MODELS = ("gin", "graph_attn", "exphormer", "full")


@dataclass(frozen=True)
class Config:
    depths: tuple = (2, 3, 4)
    models: tuple = MODELS
    samples: int = 500
    batch_size: int = 100
    epochs: int = 30
    channels: int = 32
    heads: int = 4
    lr: float = 2e-3
    seed: int = 0
    threads: int = 2


QUICK = Config(depths=(2,), samples=40, batch_size=20, epochs=2, channels=8, heads=2)


def make_trees(depth: int, count: int, gen: torch.Generator):
    """``(key [G, n], value [G, n], target [G], edge_index [2, E] of one tree)``, heap order."""
    n, leaves = 2 ** (depth + 1) - 1, 2 ** depth
    key, value = torch.zeros(count, n, dtype=torch.long), torch.zeros(count, n, dtype=torch.long)
    key[:, n - leaves:] = torch.argsort(torch.rand(count, leaves, generator=gen), 1) + 1
    value[:, n - leaves:] = torch.randint(1, leaves + 1, (count, leaves), generator=gen)
    pick = torch.randint(0, leaves, (count,), generator=gen) + n - leaves
    key[:, 0] = key.gather(1, pick.view(-1, 1)).squeeze(1)
    target = value.gather(1, pick.view(-1, 1)).squeeze(1) - 1
    child = torch.arange(1, n)
    parent = (child - 1) // 2
    ei = torch.cat([torch.stack([child, parent]), torch.stack([parent, child])], 1)
    return key, value, target, ei


def batch_of(ei: torch.Tensor, n: int, G: int):
    off = (torch.arange(G) * n).repeat_interleave(ei.size(1))
    return ei.repeat(1, G) + off, torch.arange(G).repeat_interleave(n)


class Net(nn.Module):
    def __init__(self, kind: str, depth: int, cfg: Config):
        super().__init__()
        C, L = cfg.channels, 2 ** depth
        self.kind = kind
        self.key, self.value = nn.Embedding(L + 1, C), nn.Embedding(L + 1, C)
        mk = {"gin": lambda: GINConv(nn.Sequential(nn.Linear(C, C), nn.ReLU(), nn.Linear(C, C))),
              "graph_attn": lambda: MultiheadAttentionConv(C, cfg.heads),
              "exphormer": lambda: ExphormerLayer(C, cfg.heads),
              "full": lambda: GraphormerLayer(C, cfg.heads, max_distance=2 * depth)}[kind]
        self.layers = nn.ModuleList(mk() for _ in range(depth + 1))
        self.norms = nn.ModuleList(nn.LayerNorm(C) for _ in range(depth + 1))
        self.out = nn.Linear(C, L)

    def forward(self, key, value, prog, roots):
        h = self.key(key) + self.value(value)
        vstate = None
        for layer, norm in zip(self.layers, self.norms):
            if self.kind == "exphormer":
                h, vstate = layer(h, prog, vstate)
            elif self.kind == "full":
                h = layer(h, prog)
            else:
                h = norm(h + torch.relu(layer(h, prog)))
        return self.out(h[roots])


def program(kind: str, ei, batch, depth: int, gen):
    if kind == "gin":
        return ei
    if kind == "graph_attn":
        n = batch.numel()
        loops = torch.arange(n).expand(2, n)
        sizes = torch.bincount(batch)
        return from_edge_index(torch.cat([ei, loops], 1), sizes, sizes)
    if kind == "exphormer":
        return exphormer_inputs(ei, batch, degree=4, generator=gen)
    return graphormer_inputs(ei, batch, 2 * depth)


def run_one(kind: str, depth: int, cfg: Config) -> dict:
    gen = torch.Generator().manual_seed(cfg.seed + depth)
    torch.manual_seed(cfg.seed)
    key, value, target, ei1 = make_trees(depth, cfg.samples, gen)
    n, B = key.size(1), cfg.batch_size
    ei, batch = batch_of(ei1, n, B)
    prog = program(kind, ei, batch, depth, gen)  # every mini-batch has the same shape
    roots = torch.arange(B) * n
    model = Net(kind, depth, cfg)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    t0 = time.perf_counter()
    for _ in range(cfg.epochs):
        for s in range(0, cfg.samples - B + 1, B):
            loss = nn.functional.cross_entropy(
                model(key[s:s + B].flatten(), value[s:s + B].flatten(), prog, roots), target[s:s + B])
            opt.zero_grad()
            loss.backward()
            opt.step()
    correct = 0
    with torch.no_grad():
        for s in range(0, cfg.samples - B + 1, B):
            pred = model(key[s:s + B].flatten(), value[s:s + B].flatten(), prog, roots).argmax(1)
            correct += int((pred == target[s:s + B]).sum())
    return {"model": kind, "depth": depth, "train_accuracy": correct / (cfg.samples // B * B),
            "final_loss": loss.item(), "seconds": time.perf_counter() - t0,
            "edges_per_node": _edges(prog) / batch.numel()}


def _edges(prog) -> int:
    if isinstance(prog, torch.Tensor):
        return prog.size(1)
    if hasattr(prog, "typed"):
        return prog.typed.graph.num_edges
    return getattr(prog, "graph", prog).num_edges


def train_and_evaluate(cfg: Config, workdir: Path, name: str) -> dict:
    torch.set_num_threads(cfg.threads)
    result = {"config": asdict(cfg), "torch": torch.__version__, "rows": []}
    (workdir / "results").mkdir(parents=True, exist_ok=True)
    for r in cfg.depths:
        for m in cfg.models:  # the file is rewritten after every run: a stopped sweep keeps its rows
            row = run_one(m, r, cfg)
            result["rows"].append(row)
            (workdir / "results" / f"{name}.json").write_text(json.dumps(result, indent=1))
            print(f"r={row['depth']} {row['model']:10s} train acc {row['train_accuracy']:.3f} "
                  f"({row['edges_per_node']:.1f} edges/node, {row['seconds']:.0f} s)", flush=True)
    return result


if __name__ == "__main__":
    quick = sys.argv[1:] == ["quick"]
    train_and_evaluate(QUICK if quick else Config(), ROOT / "experiments",
                       "graph_lab_neighbors_match_quick" if quick else "graph_lab_neighbors_match")
