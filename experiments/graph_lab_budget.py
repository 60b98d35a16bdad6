"""The edge-budget sweep: one attention layer, the same parameters, more and more pairs allowed to
attend, graph -> + expander -> + virtual node -> all pairs; accuracy against edges per node.

Layer: the lab's ``AttentionBlock`` (``graph_lab_common``): pre-LN multi-head attention with a
learned bias per edge type and head, then an FFN; every model has the same parameter tensors
(the type-bias table and the virtual node's state exist in all of them), only the edge set changes.

    graph      the input graph's edges + a self loop per node
    +expander  ... + a random 4-regular expander per graph (Exphormer's)
    +virtual   ... + one virtual node per graph, both directions
    full       all pairs of each graph (graph edges keep their type bias)

Tasks:

- Tree-NeighborsMatch at depth 4 (``graph_lab_neighbors_match``'s data, training and models:
  r + 1 = 5 layers, its tree cap and 80 / 20 split), training and test accuracy. Runs with the
  same configuration already in this sweep's results file or in the NeighborsMatch study's are
  reused, not trained again (``reused`` in the row): a run is deterministic (one thread, seeded).
- CSL (circular skip links, Murphy et al. 2019), generated: 41-node cycles with one skip length
  s in {2, 3, 4, 5, 6, 9, 11, 12, 13, 16} (10 classes), 15 randomly relabelled copies per class
  (150 graphs, 4-regular). All CSL graphs are 1-WL-equivalent, so without positional information
  every message-passing or attention model is at chance (10 %); node inputs here are the first
  ``pe_dim`` Laplacian eigenvectors (``gnn_attention.graph_models.encodings``) with random
  signs re-drawn at every training step. Mean read-out. Stratified 3-fold cross-validation
  (5 graphs per class per fold: 100 training and 50 test graphs), test accuracy mean and
  standard deviation over the folds (3 folds rather than the usual 5: CPU time).

    python experiments/graph_lab_budget.py          # the sweep cited in the docs
    python experiments/graph_lab_budget.py quick    # seconds (the test's version)
    python experiments/graph_lab_budget.py plot     # redraw the figure from the JSON

Writes experiments/results/graph_lab_budget.json and docs/figures/graph_lab_budget.png.
"""
from __future__ import annotations

import json
import statistics
import sys
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
import graph_lab_common as common
import graph_lab_neighbors_match as nm

from gnn_attention.graph_models.encodings import laplacian_eigenvectors, random_sign_flip

ROOT = Path(__file__).resolve().parent.parent
BUDGET = (("graph", ("graph",), "attn"), ("+expander", ("graph", "expander"), "attn_exp"),
          ("+virtual", ("graph", "expander", "virtual"), "attn_exp_vn"),
          ("full", ("graph", "full"), "full"))  # (name, edge sets, the NeighborsMatch kind)
SKIPS = (2, 3, 4, 5, 6, 9, 11, 12, 13, 16)
CSL_NODES = 41


@dataclass(frozen=True)
class Config:
    nm_depth: int = 4
    nm: nm.Config = field(default_factory=nm.Config)
    per_class: int = 15
    folds: int = 3
    pe_dim: int = 8
    layers: int = 4
    channels: int = 32
    heads: int = 4
    batch_graphs: int = 10
    max_steps: int = 800
    patience: int = 800  # no plateau stop: a set can sit at chance for hundreds of steps first
    lr: float = 1e-3
    seed: int = 0
    threads: int = 1


QUICK = Config(nm_depth=2, nm=nm.QUICK, per_class=2, folds=2, pe_dim=4, layers=2, channels=8,
               heads=2, batch_graphs=5, max_steps=4, patience=4)


def csl_graphs(per_class: int, gen: torch.Generator):
    """``(edge_index [2, E], batch [N], y [G])``: ``per_class`` relabelled copies of the
    41-cycle with skip links of each length in ``SKIPS``, class = index of the skip length; every
    edge in both directions."""
    n, i = CSL_NODES, torch.arange(CSL_NODES)
    edges, labels = [], []
    for c, s in enumerate(SKIPS):
        base = torch.cat([torch.stack([i, (i + 1) % n]), torch.stack([i, (i + s) % n])], 1)
        base = torch.cat([base, base.flip(0)], 1)
        for _ in range(per_class):
            relabel = torch.randperm(n, generator=gen)
            edges.append(relabel[base] + len(labels) * n)
            labels.append(c)
    y = torch.tensor(labels)
    return torch.cat(edges, 1), torch.arange(y.numel()).repeat_interleave(n), y


def stratified_folds(y: torch.Tensor, folds: int, gen: torch.Generator) -> list:
    """Graph indices of each fold: every class's graphs shuffled and dealt round-robin."""
    out = [[] for _ in range(folds)]
    for c in torch.unique(y).tolist():
        members = torch.nonzero(y == c).flatten()
        for k, g in enumerate(members[torch.randperm(members.numel(), generator=gen)].tolist()):
            out[k % folds].append(g)
    return [torch.tensor(sorted(f)) for f in out]


def csl_batches(graphs: torch.Tensor, data, sets, cfg: Config, gen: torch.Generator) -> list:
    """Mini-batches of the given graphs (``batch_graphs`` each) with their programs, once."""
    ei, batch, y, pe = data
    out = []
    for chunk in graphs.split(cfg.batch_graphs):
        nodes = torch.cat([torch.arange(g * CSL_NODES, (g + 1) * CSL_NODES) for g in chunk.tolist()])
        local = torch.full((batch.numel(),), -1, dtype=torch.long)
        local[nodes] = torch.arange(nodes.numel())
        keep = (local[ei[0]] >= 0) & (local[ei[1]] >= 0)
        sub = local[ei[:, keep]]
        b = torch.arange(chunk.numel()).repeat_interleave(CSL_NODES)
        program = common.build_program(sets, sub, b, generator=gen)
        out.append(common.Batch(pe[nodes], y[chunk], b, None, [program] * cfg.layers))
    return out


def flip_signs(b: common.Batch, gen: torch.Generator) -> common.Batch:
    return replace(b, x=random_sign_flip(b.x, b.batch, gen))


def csl_study(name: str, sets, cfg: Config) -> list:
    gen = torch.Generator().manual_seed(cfg.seed)
    ei, batch, y = csl_graphs(cfg.per_class, gen)
    pe, _ = laplacian_eigenvectors(ei, batch, cfg.pe_dim)
    data = (ei, batch, y, pe.float())
    rows = []
    for k, test in enumerate(stratified_folds(y, cfg.folds, gen)):
        train = torch.tensor([g for g in range(y.numel()) if g not in set(test.tolist())])
        fold_gen = torch.Generator().manual_seed(cfg.seed * 100 + k)
        tr = csl_batches(train[torch.randperm(train.numel(), generator=fold_gen)], data, sets,
                         cfg, fold_gen)
        te = csl_batches(test, data, sets, cfg, fold_gen)
        torch.manual_seed(cfg.seed * 100 + k)
        model = common.AttentionNet(nn.Linear(cfg.pe_dim, cfg.channels), cfg.channels, cfg.heads,
                                    cfg.layers, len(SKIPS))
        stats = common.fit(model, tr, cfg.lr, cfg.max_steps, cfg.patience, cfg.seed + k,
                           augment=flip_signs)
        rows.append({"task": "csl", "edge_set": name, "fold": k, "train_graphs": train.numel(),
                     "test_graphs": test.numel(), "edges_per_node": common.edges_per_node(tr[0]),
                     "parameters": sum(p.numel() for p in model.parameters()), **stats,
                     "test_accuracy": common.accuracy(model, te)})
    return rows


def summarise(rows: list) -> list:
    """CSL: one line per edge set, mean and standard deviation of test accuracy over folds."""
    out = []
    for name, _, _ in BUDGET:
        acc = [r["test_accuracy"] for r in rows if r["task"] == "csl" and r["edge_set"] == name]
        epn = [r["edges_per_node"] for r in rows if r["task"] == "csl" and r["edge_set"] == name]
        if acc:
            out.append({"edge_set": name, "edges_per_node": statistics.mean(epn),
                        "test_accuracy_mean": statistics.mean(acc),
                        "test_accuracy_std": statistics.pstdev(acc), "folds": len(acc)})
    return out


def plot(result: dict, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, (a, b) = plt.subplots(1, 2, figsize=(9.6, 3.8))
    nmr = [r for r in result["rows"] if r["task"] == "neighbors_match"]
    x = [r["edges_per_node"] for r in nmr]
    a.plot(x, [r["train_accuracy"] for r in nmr], "o-", label="train")
    a.plot(x, [r["test_accuracy"] for r in nmr], "s--", label="test (held-out 20 %)")
    a.set_title(f"Tree-NeighborsMatch, r = {result['config']['nm_depth']}")
    s = result["csl_summary"]
    b.errorbar([r["edges_per_node"] for r in s], [r["test_accuracy_mean"] for r in s],
               yerr=[r["test_accuracy_std"] for r in s], fmt="o-", capsize=3)
    b.axhline(0.1, color="grey", lw=0.8, ls=":", label="chance")
    b.set_title(f"CSL, {result['config']['folds']}-fold test accuracy")
    for ax, rows in ((a, nmr), (b, s)):
        for r in rows:
            ax.annotate(r["edge_set"], (r["edges_per_node"], 0.02), fontsize=8, rotation=90)
        ax.set_xscale("log")
        ax.set_xticks([r["edges_per_node"] for r in rows], minor=False)
        ax.set_xticks([], minor=True)
        ax.set_xticklabels([f"{r['edges_per_node']:.1f}" for r in rows])
        ax.set_xlabel("attention edges per node (log)")
        ax.set_ylim(0, 1.05)
        ax.legend(fontsize=8)
    a.set_ylabel("accuracy")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _same_nm_config(saved: dict, cfg: nm.Config) -> bool:
    """Whether a saved NeighborsMatch configuration trains runs identical to ``cfg``'s (runs are
    deterministic: one thread, seeded generators); the depths and models listed do not matter."""
    want = json.loads(json.dumps(asdict(cfg)))
    return all(saved.get(k) == v for k, v in want.items() if k not in ("depths", "models"))


def reusable_nm_rows(cfg: Config, files: list) -> dict:
    """NeighborsMatch rows at ``cfg.nm_depth`` already computed with the same configuration, by
    kind: from this sweep's own results file (a stopped sweep resumes) and from the
    NeighborsMatch study's (the same runs; no need to train them twice)."""
    found = {}
    for path in files:
        if not path.exists():
            continue
        saved = json.loads(path.read_text())
        conf = saved["config"].get("nm", saved["config"])
        if not _same_nm_config(conf, cfg.nm):
            continue
        for row in saved["rows"]:
            if row.get("task", "neighbors_match") == "neighbors_match" and \
                    row["depth"] == cfg.nm_depth:
                found.setdefault(row["model"], {k: v for k, v in row.items()
                                                 if k not in ("task", "edge_set")})
    return found


def train_and_evaluate(cfg: Config, workdir: Path, name: str, figure: Path | None = None,
                       reuse: tuple = ()) -> dict:
    """CSL first (cheap), then NeighborsMatch; NM rows of the same configuration found in the
    ``reuse`` result files (:func:`reusable_nm_rows`) are taken instead of trained again."""
    torch.set_num_threads(cfg.threads)
    result = {"config": asdict(cfg), "torch": torch.__version__, "rows": [], "csl_summary": []}
    out = workdir / "results" / f"{name}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    known = reusable_nm_rows(cfg, list(reuse))
    for label, sets, _ in BUDGET:  # rewritten after every run: a stopped sweep keeps its rows
        rows = csl_study(label, sets, cfg)
        result["rows"] += rows
        result["csl_summary"] = summarise(result["rows"])
        s = result["csl_summary"][-1]
        print(f"CSL {label:9s} {s['edges_per_node']:5.1f} edges/node: test "
              f"{s['test_accuracy_mean']:.3f} +- {s['test_accuracy_std']:.3f}", flush=True)
        out.write_text(json.dumps(result, indent=1))
    for label, sets, kind in BUDGET:
        known.update(reusable_nm_rows(cfg, list(reuse)))  # the NM study may have run it since
        row = dict(known[kind], reused=True) if kind in known else \
            dict(nm.run_one(kind, cfg.nm_depth, cfg.nm), reused=False)
        result["rows"].append({"task": "neighbors_match", "edge_set": label, **row})
        print(f"NM r={cfg.nm_depth} {label:9s} {row['edges_per_node']:5.1f} edges/node: train "
              f"{row['train_accuracy']:.3f} test {row['test_accuracy']:.3f}", flush=True)
        out.write_text(json.dumps(result, indent=1))
    if figure is not None:
        plot(result, figure)
    return result


if __name__ == "__main__":
    args = sys.argv[1:]
    if args not in ([], ["quick"], ["plot"]):
        print("usage: graph_lab_budget.py [quick | plot]", file=sys.stderr)
        sys.exit(2)
    if args == ["plot"]:  # redraw the figure from the results file (e.g. of a stopped sweep)
        plot(json.loads((ROOT / "experiments/results/graph_lab_budget.json").read_text()),
             ROOT / "docs" / "figures" / "graph_lab_budget.png")
    elif args:
        train_and_evaluate(QUICK, ROOT / "experiments", "graph_lab_budget_quick")
    else:
        results = ROOT / "experiments" / "results"
        train_and_evaluate(Config(), ROOT / "experiments", "graph_lab_budget",
                           ROOT / "docs" / "figures" / "graph_lab_budget.png",
                           reuse=(results / "graph_lab_budget.json",
                                  results / "graph_lab_neighbors_match.json"))
