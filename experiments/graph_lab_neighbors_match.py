"""Tree-NeighborsMatch (Alon & Yahav 2021, the over-squashing benchmark), generated offline: can
the root of a depth-r binary tree read the one leaf, of 2^r, whose key matches its own?

Data, as the paper builds it: a complete binary tree of depth r (heap order, n = 2^(r+1) - 1
nodes, L = 2^r leaves), edges directed child -> parent (towards the root). Leaf l carries key l + 1
and value pi(l) + 1 for a permutation pi of the L values; the root carries a query key s + 1; the
label is pi(s). The paper draws P = min(1000, L!, 32000 // L) permutations (without repeats at
r <= 3) and uses every (permutation, query) pair, P L trees, split 80 / 20 into training and test
trees; here P is also capped by ``max_trees`` (the trees this CPU can train on in the time budget:
the counts are in the results). Reported: training accuracy (the paper's measure: can the model
fit its training set at all?) and, because a smaller training set is easier to memorise, the
accuracy on the held-out 20 % (did it learn the lookup or memorise the trees?).

Models (r + 1 layers, width C, read out at the root):

    gcn, gin, gat   PyG GCNConv / GINConv / GATConv on the tree edges, h = LN(h + ReLU(conv(h)))
    attn            the lab's attention block on the tree edges + self loops
    attn_vn         ... + one virtual node per tree (both directions)
    attn_exp        ... + a random 4-regular expander per tree (the same in every layer)
    attn_fa         tree edges in layers 1..r, all pairs in the last (the paper's "FA" layer)
    full            all pairs in every layer (tree edges marked by their type bias)

    python experiments/graph_lab_neighbors_match.py           # depths 2..5, cited in the docs
    python experiments/graph_lab_neighbors_match.py 6         # other depths (own results file)
    python experiments/graph_lab_neighbors_match.py quick     # seconds (the test's version)
    python experiments/graph_lab_neighbors_match.py plot      # redraw the figure from the JSONs

Writes experiments/results/graph_lab_neighbors_match.json (rewritten after every run) and
docs/figures/graph_lab_neighbors_match.png.
"""
from __future__ import annotations

import itertools
import json
import math
import sys
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
import graph_lab_common as common

ROOT = Path(__file__).resolve().parent.parent
MODELS = ("gcn", "gin", "gat", "attn", "attn_vn", "attn_exp", "attn_fa", "full")
ATTENTION_SETS = {"attn": ("graph",), "attn_vn": ("graph", "virtual"),
                  "attn_exp": ("graph", "expander"), "attn_exp_vn": ("graph", "expander", "virtual"),
                  "full": ("graph", "full")}  # attn_exp_vn: the budget sweep's third step


@dataclass(frozen=True)
class Config:
    depths: tuple = (2, 3, 4, 5)
    models: tuple = MODELS
    max_trees: int = 640
    batch_size: int = 32
    max_steps: int = 2000
    patience: int = 400
    channels: int = 32
    heads: int = 4
    lr: float = 1e-3
    seed: int = 0
    threads: int = 1


QUICK = Config(depths=(2, 3), max_trees=80, batch_size=32, max_steps=6, patience=6,
               channels=8, heads=2)
TEST_FRACTION = 0.2  # the paper's 80 / 20 split


def paper_tree_count(depth: int) -> int:
    """P L: the number of trees the paper generates at depth r (before its 80 / 20 split)."""
    L = 2 ** depth
    return min(1000, math.factorial(L), 32000 // L) * L


def make_trees(depth: int, max_trees: int, gen: torch.Generator):
    """``(x [T, n, 2] = (key, value) per node, y [T], edge_index [2, n - 1] of one tree)``, the
    ``T = min(P, max_trees // L) L`` trees of the paper's construction (module docstring)."""
    n, L = 2 ** (depth + 1) - 1, 2 ** depth
    P = min(paper_tree_count(depth) // L, max(max_trees // L, 1))
    if math.factorial(L) <= 10 ** 6:  # small L: distinct permutations, drawn from all L!
        every = torch.tensor(list(itertools.permutations(range(L))))
        perms = every[torch.randperm(every.size(0), generator=gen)[:P]]
    else:
        perms = torch.argsort(torch.rand(P, L, generator=gen), 1)
    perm = perms.repeat_interleave(L, 0)  # [T, L]: every permutation with every query
    query = torch.arange(L).repeat(P)
    x = torch.zeros(P * L, n, 2, dtype=torch.long)
    x[:, n - L:, 0] = torch.arange(1, L + 1)
    x[:, n - L:, 1] = perm + 1
    x[:, 0, 0] = query + 1
    y = perm.gather(1, query.view(-1, 1)).squeeze(1)
    child = torch.arange(1, n)
    return x, y, torch.stack([child, (child - 1) // 2])


class KeyValue(nn.Module):
    """Node input, as the paper's models: ``ReLU(key embedding + value embedding)`` (index 0 =
    empty; the ReLU binds a leaf's key to its value before any sum over children mixes them).
    **Shapes:** ``[N, 2] -> [N, C]``."""

    def __init__(self, leaves: int, channels: int):
        super().__init__()
        self.key, self.value = nn.Embedding(leaves + 1, channels), nn.Embedding(leaves + 1, channels)

    def forward(self, x):
        return torch.relu(self.key(x[:, 0]) + self.value(x[:, 1]))


def programs(kind: str, ei, batch, depth: int, gen) -> list:
    if kind == "attn_fa":
        last = common.build_program(("graph", "full"), ei, batch)
        return [common.build_program(("graph",), ei, batch)] * depth + [last]
    return [common.build_program(ATTENTION_SETS[kind], ei, batch, generator=gen)] * (depth + 1)


def make_batches(kind: str, depth: int, cfg: Config, gen: torch.Generator):
    """``(train, test)``: the trees split 80 / 20 and cut once into mini-batches with their edge
    programs (built once per batch size; the expander is drawn per batch)."""
    x, y, ei1 = make_trees(depth, cfg.max_trees, gen)
    n = x.size(1)
    order = torch.randperm(y.numel(), generator=gen)
    cut = y.numel() - max(1, round(TEST_FRACTION * y.numel()))
    cache, out = {}, []
    for idx in list(order[:cut].split(cfg.batch_size)) + list(order[cut:].split(cfg.batch_size)):
        G = idx.numel()
        ei, batch = common.disjoint_union(ei1, n, G)
        if kind in ("gcn", "gin", "gat"):
            edges = ei
        elif "expander" in ATTENTION_SETS.get(kind, ()) or G not in cache:
            edges = programs(kind, ei, batch, depth, gen)
            cache[G] = edges
        else:
            edges = cache[G]
        out.append(common.Batch(x[idx].flatten(0, 1), y[idx], batch, torch.arange(G) * n, edges))
    split = -(-cut // cfg.batch_size)  # batches of training trees
    return out[:split], out[split:]


def make_model(kind: str, depth: int, cfg: Config) -> nn.Module:
    L, C = 2 ** depth, cfg.channels
    if kind in ("gcn", "gin", "gat"):
        return common.MPNet(kind, KeyValue(L, C), C, cfg.heads, depth + 1, L)
    return common.AttentionNet(KeyValue(L, C), C, cfg.heads, depth + 1, L)


def run_one(kind: str, depth: int, cfg: Config) -> dict:
    gen = torch.Generator().manual_seed(cfg.seed * 1000 + depth)
    train, test = make_batches(kind, depth, cfg, gen)
    torch.manual_seed(cfg.seed)
    model = make_model(kind, depth, cfg)
    stats = common.fit(model, train, cfg.lr, cfg.max_steps, cfg.patience, cfg.seed)
    return {"model": kind, "depth": depth, "train_trees": sum(b.y.numel() for b in train),
            "test_trees": sum(b.y.numel() for b in test), "paper_trees": paper_tree_count(depth),
            "edges_per_node": common.edges_per_node(train[0]),
            "parameters": sum(p.numel() for p in model.parameters()), **stats,
            "test_accuracy": common.accuracy(model, test)}


def plot(result: dict, path: Path) -> None:
    """Training accuracy (the paper's measure) and held-out accuracy against depth, per model."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
    depths = sorted({r["depth"] for r in result["rows"]})
    for ax, key, title in ((axes[0], "train_accuracy", "training accuracy"),
                           (axes[1], "test_accuracy", "held-out 20 % accuracy")):
        for m in result["config"]["models"]:
            rows = sorted((r for r in result["rows"] if r["model"] == m), key=lambda r: r["depth"])
            if rows:
                ax.plot([r["depth"] for r in rows], [r[key] for r in rows],
                        "--" if m in ("gcn", "gin", "gat") else "-", marker="o", label=m)
        ax.plot(depths, [1 / 2 ** d for d in depths], ":", color="grey", label="chance")
        ax.set_xlabel("tree depth r")
        ax.set_title(f"Tree-NeighborsMatch: {title}")
        ax.set_xticks(depths)
        ax.set_ylim(0, 1.05)
    axes[0].set_ylabel("accuracy (dashed: PyG message passing)")
    axes[1].legend(fontsize=8, ncol=2)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def train_and_evaluate(cfg: Config, workdir: Path, name: str, figure: Path | None = None) -> dict:
    torch.set_num_threads(cfg.threads)
    result = {"config": asdict(cfg), "torch": torch.__version__, "rows": []}
    (workdir / "results").mkdir(parents=True, exist_ok=True)
    for r in cfg.depths:
        for m in cfg.models:  # the file is rewritten after every run: a stopped sweep keeps its rows
            row = run_one(m, r, cfg)
            result["rows"].append(row)
            (workdir / "results" / f"{name}.json").write_text(json.dumps(result, indent=1))
            print(f"r={r} {m:9s} train acc {row['train_accuracy']:.3f} on {row['train_trees']} trees, "
                  f"test {row['test_accuracy']:.3f}, "
                  f"{row['stopped']} at step {row['steps']} ({row['edges_per_node']:.1f} edges/"
                  f"node, {row['seconds']:.0f} s)", flush=True)
    if figure is not None:
        plot(result, figure)
    return result


def merged_results(folder: Path) -> dict:
    """The default study's results plus the rows of extra-depth runs (``..._r6.json``, from
    ``python experiments/graph_lab_neighbors_match.py 6``) trained with the same configuration."""
    result = json.loads((folder / "graph_lab_neighbors_match.json").read_text())
    same = {k: v for k, v in result["config"].items() if k != "depths"}
    have = {(r["model"], r["depth"]) for r in result["rows"]}
    for extra in sorted(folder.glob("graph_lab_neighbors_match_r*.json")):
        other = json.loads(extra.read_text())
        if {k: v for k, v in other["config"].items() if k != "depths"} == same:
            result["rows"] += [r for r in other["rows"] if (r["model"], r["depth"]) not in have]
    return result


def main(args: list) -> None:
    if args == ["quick"]:
        train_and_evaluate(QUICK, ROOT / "experiments", "graph_lab_neighbors_match_quick")
        return
    if args == ["plot"]:  # redraw the figure from the results files (e.g. of a stopped sweep)
        plot(merged_results(ROOT / "experiments" / "results"),
             ROOT / "docs" / "figures" / "graph_lab_neighbors_match.png")
        return
    if not all(a.isdigit() and 2 <= int(a) <= 8 for a in args):
        print("usage: graph_lab_neighbors_match.py [quick | plot | DEPTH ...] (depths 2..8)",
              file=sys.stderr)
        sys.exit(2)
    if not args:
        train_and_evaluate(Config(), ROOT / "experiments", "graph_lab_neighbors_match",
                           ROOT / "docs" / "figures" / "graph_lab_neighbors_match.png")
        return
    depths = tuple(sorted({int(a) for a in args}))
    train_and_evaluate(replace(Config(), depths=depths), ROOT / "experiments",
                       "graph_lab_neighbors_match_r" + "_".join(map(str, depths)))


if __name__ == "__main__":
    main(sys.argv[1:])
