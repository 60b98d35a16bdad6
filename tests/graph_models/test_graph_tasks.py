"""The generated-task study (experiments/graph_tasks.py), tiny: every model trains on both
datasets, the JSON has one summary per (task, model), accuracies are fractions, and the data are
the same in two generations (seeded, numpy included)."""
import importlib.util
import json
import sys
from pathlib import Path

import torch

EXPERIMENTS = Path(__file__).resolve().parents[2] / "experiments"


def _load(name):
    spec = importlib.util.spec_from_file_location(name, EXPERIMENTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


tasks = _load("graph_tasks")


def test_quick_study_runs_every_model_on_both_tasks(tmp_path):
    res = tasks.train_and_evaluate(tasks.QUICK, tmp_path, "quick")
    saved = json.loads((tmp_path / "results" / "quick.json").read_text())
    assert set(saved["tasks"]) == set(tasks.QUICK["tasks"])
    for task in saved["tasks"].values():
        assert set(task["models"]) == set(tasks.QUICK["models"])
        for m in task["models"].values():
            assert 0.0 <= m["test"]["mean"] <= 1.0
    assert res["tasks"].keys() == saved["tasks"].keys()


def test_generation_is_reproducible():
    a, _ = tasks.generate("ba_shapes", 2, 7)
    b, _ = tasks.generate("ba_shapes", 2, 7)
    assert all(torch.equal(x.edge_index, y.edge_index) and torch.equal(x.y, y.y)
               for x, y in zip(a, b))
