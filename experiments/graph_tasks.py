"""Node tasks with ground truth from torch_geometric's generated datasets: graph transformers
(GPS, Graphormer, Exphormer with per-type keys/values) against message passing (GIN, GATv2).

Tasks (both generated offline by PyG, from ``CONFIG["data_seed"]``; 40 small graphs per task, split
by graph: the first 24 train, the next 8 validation, the last 8 test):
  * ``ba_shapes``: ``ExplainerDataset(graph_generator=BAGraph(40, 1), motif_generator="house",
    num_motifs=6)``: 70 nodes per graph; classes: base node, house top, middle, bottom. No node
    features (every node gets the constant 1): only structure tells the classes apart.
  * ``infection``: ``InfectionDataset(ERGraph(60, 0.05), num_infected_nodes=4,
    max_path_length=3)``: class = hops to the nearest infected node (0..3, 4 = farther);
    features: infected / healthy one-hot.

Models (width C = 32, H = 4 heads, 3 layers, Adam lr 5e-3, 120 epochs, full batch over the
training graphs):
  gin         GINConv with a 2-layer MLP, ReLU
  gatv2       GATv2Conv (H heads of C / H, concatenated), ELU
  gps         GPSLayer(GINConv, all-pairs attention, batch norm) on x + RWSE (8 steps)
  graphormer  CentralityEncoding + GraphormerLayer (shortest-path bias, L = 5), final LayerNorm
  exphormer   ExphormerLayer(typed_kv=True): graph + expander (d = 4) + 1 virtual node + self
              loops, a bias and a key/value offset per edge type
Reported: test accuracy at the epoch of best validation accuracy (checked every 5 epochs), mean and
sample std over the seeds (the seed sets the initialisation and dropout; the data are fixed).

Run: ``python experiments/graph_tasks.py`` (5 seeds, 246 s of CPU on one thread; writes
experiments/results/graph_tasks.json and docs/figures/graph_tasks.png), or
``python experiments/graph_tasks.py quick`` (seconds: 10 graphs split 6 / 2 / 2, 3 epochs, one
seed; writes graph_tasks_quick.json only).
"""
from __future__ import annotations

import json
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn
from torch_geometric.data import Batch
from torch_geometric.datasets import ExplainerDataset, InfectionDataset
from torch_geometric.datasets.graph_generator import BAGraph, ERGraph
from torch_geometric.nn import GATv2Conv, GINConv

from gnn_attention.graph_models import (
    ExphormerLayer,
    GPSLayer,
    GraphormerLayer,
    exphormer_inputs,
    graphormer_inputs,
)
from gnn_attention.graph_models.edge_sets import pair_buckets
from gnn_attention.graph_models.encodings import CentralityEncoding, random_walk_encoding

ROOT = Path(__file__).resolve().parents[1]
MODELS = ("gin", "gatv2", "gps", "graphormer", "exphormer")
CONFIG = {"tasks": ("ba_shapes", "infection"), "models": MODELS, "seeds": (0, 1, 2, 3, 4),
          "graphs": 40, "epochs": 120, "width": 32, "heads": 4, "layers": 3, "lr": 5e-3,
          "eval_every": 5, "data_seed": 12345, "max_distance": 5, "rwse_steps": 8}
QUICK = {**CONFIG, "seeds": (0,), "graphs": 10, "epochs": 3, "eval_every": 1}


@dataclass(frozen=True)
class Split:
    """One split as a single PyG batch, with every layer's edge program built once."""

    x: Tensor
    y: Tensor
    edge_index: Tensor
    batch: Tensor
    rwse: Tensor
    buckets: object
    graphormer: object
    exphormer: object


def generate(task: str, graphs: int, seed: int):
    torch.manual_seed(seed)
    np.random.seed(seed)  # PyG's barabasi_albert_graph draws its edges with numpy
    if task == "ba_shapes":
        ds = ExplainerDataset(graph_generator=BAGraph(num_nodes=40, num_edges=1),
                              motif_generator="house", num_motifs=6, num_graphs=graphs)
        data = [d.clone() for d in ds]
        for d in data:
            d.x = torch.ones(d.num_nodes, 1)
        return data, 4
    if task == "infection":
        ds = InfectionDataset(graph_generator=ERGraph(num_nodes=60, edge_prob=0.05),
                              num_infected_nodes=4, max_path_length=3, num_graphs=graphs)
        return [d.clone() for d in ds], 5
    raise ValueError(f"unknown task {task!r}")


def prepare(data: list, cfg: dict, seed: int) -> Split:
    b = Batch.from_data_list([type(d)(x=d.x, edge_index=d.edge_index, y=d.y) for d in data])
    ei, batch = b.edge_index, b.batch
    return Split(b.x, b.y, ei, batch, random_walk_encoding(ei, batch.numel(), cfg["rwse_steps"]),
                 pair_buckets(batch), graphormer_inputs(ei, batch, cfg["max_distance"]),
                 exphormer_inputs(ei, batch, degree=4, num_virtual=1,
                                  generator=torch.Generator().manual_seed(seed)))


def gin_mlp(c: int) -> nn.Module:
    return nn.Sequential(nn.Linear(c, c), nn.ReLU(), nn.Linear(c, c))


class Net(nn.Module):
    """Input projection, ``layers`` layers of one kind, a linear read-out per node."""

    def __init__(self, kind: str, in_dim: int, classes: int, cfg: dict):
        super().__init__()
        C, H, n = cfg["width"], cfg["heads"], cfg["layers"]
        self.kind = kind
        self.inp = nn.Linear(in_dim + (cfg["rwse_steps"] if kind == "gps" else 0), C)
        if kind == "gin":
            self.layers = nn.ModuleList(GINConv(gin_mlp(C)) for _ in range(n))
        elif kind == "gatv2":
            self.layers = nn.ModuleList(GATv2Conv(C, C // H, heads=H) for _ in range(n))
        elif kind == "gps":
            self.layers = nn.ModuleList(GPSLayer(C, GINConv(gin_mlp(C)), heads=H) for _ in range(n))
        elif kind == "graphormer":
            self.centrality = CentralityEncoding(16, C)
            self.layers = nn.ModuleList(GraphormerLayer(C, H, cfg["max_distance"]) for _ in range(n))
            self.final_norm = nn.LayerNorm(C)
        elif kind == "exphormer":
            self.layers = nn.ModuleList(ExphormerLayer(C, H, typed_kv=True) for _ in range(n))
        else:
            raise ValueError(f"unknown model {kind!r}")
        self.out = nn.Linear(C, classes)

    def forward(self, s: Split) -> Tensor:
        x = s.x if self.kind != "gps" else torch.cat([s.x, s.rwse], 1)
        h = self.inp(x)
        if self.kind == "graphormer":
            h = self.centrality(h, s.edge_index)
        virtual = None
        for layer in self.layers:
            if self.kind == "gin":
                h = torch.relu(layer(h, s.edge_index))
            elif self.kind == "gatv2":
                h = nn.functional.elu(layer(h, s.edge_index))
            elif self.kind == "gps":
                h = layer(h, s.edge_index, s.batch, buckets=s.buckets)
            elif self.kind == "graphormer":
                h = layer(h, s.graphormer)
            else:
                h, virtual = layer(h, s.exphormer, virtual)
        if self.kind == "graphormer":
            h = self.final_norm(h)
        return self.out(h)


def accuracy(model: Net, s: Split) -> float:
    model.eval()
    with torch.no_grad():
        acc = (model(s).argmax(1) == s.y).float().mean().item()
    model.train()
    return acc


def train_one(kind: str, splits: dict, in_dim: int, classes: int, cfg: dict, seed: int) -> dict:
    torch.manual_seed(seed)
    model = Net(kind, in_dim, classes, cfg)
    opt = torch.optim.Adam(model.parameters(), lr=cfg["lr"])
    tr = splits["train"]
    best = (-1.0, 0.0, 0)
    t0, c0 = time.perf_counter(), time.process_time()
    for epoch in range(1, cfg["epochs"] + 1):
        opt.zero_grad()
        loss = nn.functional.cross_entropy(model(tr), tr.y)
        loss.backward()
        opt.step()
        if epoch % cfg["eval_every"] == 0 or epoch == cfg["epochs"]:
            val = accuracy(model, splits["val"])
            if val > best[0]:
                best = (val, accuracy(model, splits["test"]), epoch)
    return {"val": best[0], "test": best[1], "best_epoch": best[2], "final_loss": loss.item(),
            "train": accuracy(model, tr), "seconds": time.perf_counter() - t0,
            "cpu_seconds": time.process_time() - c0}


def summarise(runs: list) -> dict:
    def ms(key):
        vals = [r[key] for r in runs]
        return {"mean": statistics.fmean(vals),
                "std": statistics.stdev(vals) if len(vals) > 1 else 0.0}
    return {"test": ms("test"), "val": ms("val"), "train": ms("train"),
            "seconds": sum(r["seconds"] for r in runs),
            "cpu_seconds": sum(r["cpu_seconds"] for r in runs), "runs": runs}


def train_and_evaluate(cfg: dict, workdir: Path, name: str) -> dict:
    torch.set_num_threads(1)
    results = {"config": {k: list(v) if isinstance(v, tuple) else v for k, v in cfg.items()},
               "tasks": {}}
    t0, c0 = time.perf_counter(), time.process_time()
    for task in cfg["tasks"]:
        data, classes = generate(task, cfg["graphs"], cfg["data_seed"])
        a, b = int(0.6 * len(data)), int(0.8 * len(data))
        parts = {"train": data[:a], "val": data[a:b], "test": data[b:]}
        splits = {k: prepare(v, cfg, cfg["data_seed"]) for k, v in parts.items()}
        info = {k: {"graphs": len(v), "nodes": int(splits[k].y.numel())} for k, v in parts.items()}
        res = {"classes": classes, "splits": info, "models": {}}
        for kind in cfg["models"]:
            runs = [train_one(kind, splits, data[0].x.size(1), classes, cfg, s)
                    for s in cfg["seeds"]]
            res["models"][kind] = summarise(runs)
            m = res["models"][kind]["test"]
            print(f"{task:10s} {kind:11s} test {m['mean']:.3f} +- {m['std']:.3f} "
                  f"({res['models'][kind]['cpu_seconds']:.0f} s CPU)", flush=True)
        results["tasks"][task] = res
    results["seconds"] = time.perf_counter() - t0  # wall: depends on the machine's load
    results["cpu_seconds"] = time.process_time() - c0  # one thread: what the run itself costs
    out = workdir / "results" / f"{name}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=1))
    return results


def plot(results: dict, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    tasks = list(results["tasks"])
    fig, axes = plt.subplots(1, len(tasks), figsize=(4.5 * len(tasks), 3.2), squeeze=False)
    for ax, task in zip(axes[0], tasks, strict=True):
        models = results["tasks"][task]["models"]
        names = list(models)
        means = [models[m]["test"]["mean"] for m in names]
        stds = [models[m]["test"]["std"] for m in names]
        ax.bar(names, means, yerr=stds, capsize=3, color="#4c72b0")
        ax.set_ylim(0, 1)
        ax.set_title(f"{task}: test accuracy (mean +- std, {len(results['config']['seeds'])} seeds)",
                     fontsize=9)
        ax.tick_params(axis="x", labelsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)


def main(args: list) -> None:
    if args == ["quick"]:
        train_and_evaluate(QUICK, ROOT / "experiments", "graph_tasks_quick")
    elif not args:
        res = train_and_evaluate(CONFIG, ROOT / "experiments", "graph_tasks")
        plot(res, ROOT / "docs" / "figures" / "graph_tasks.png")
    else:
        print("usage: graph_tasks.py [quick]", file=sys.stderr)
        raise SystemExit(2)


if __name__ == "__main__":
    main(sys.argv[1:])
