"""Training the graph Transformer: the loop, checkpoints, interrupts, metrics, presets,
determinism and the offline data (:mod:`.data`).

May import :mod:`gnn_attention.models` and below.
"""
from gnn_attention.training.determinism import deterministic
from gnn_attention.training.loop import TrainConfig, TrainingError, load_run, train

__all__ = ["TrainConfig", "TrainingError", "deterministic", "load_run", "train"]
