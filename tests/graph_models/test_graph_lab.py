"""The Tree-NeighborsMatch lab, tiny: the generator's task is well posed and every model trains."""
import importlib.util
import sys
from dataclasses import replace
from pathlib import Path

import torch

from gnn_attention.graph_models import ExphormerLayer  # noqa: F401 (the lab's layers)

PATH = Path(__file__).resolve().parents[2] / "experiments" / "graph_lab_neighbors_match.py"
spec = importlib.util.spec_from_file_location("graph_lab_neighbors_match", PATH)
lab = importlib.util.module_from_spec(spec)
sys.modules[spec.name] = lab  # dataclasses look their module up there
spec.loader.exec_module(lab)


def test_trees_have_one_matching_leaf_and_its_label_is_the_target():
    key, value, target, ei = lab.make_trees(3, 50, torch.Generator().manual_seed(0))
    n, leaves = 15, 8
    assert ei.size(1) == 2 * (n - 1)
    match = key[:, n - leaves:] == key[:, :1]
    assert bool((match.sum(1) == 1).all())
    assert torch.equal(value[:, n - leaves:][match] - 1, target)


def test_every_model_runs_a_tiny_training(one_thread):
    cfg = replace(lab.QUICK, samples=8, batch_size=4, epochs=1)
    for kind in lab.MODELS:
        row = lab.run_one(kind, 2, cfg)
        assert 0.0 <= row["train_accuracy"] <= 1.0 and row["edges_per_node"] > 0
