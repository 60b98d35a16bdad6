"""Named model sizes and training schedules for ``gnn-attention train --preset``.

Notation: C = d_model, H heads, L_e / L_d encoder / decoder layers, F = feed-forward width;
``batch_size`` counts sequences per optimiser step (split across processes under torchrun);
``lr`` is the peak of the inverse-square-root schedule, reached after ``warmup`` steps.

``tiny`` and ``small`` are sized for 2 CPU cores (figures in docs/results.md, with the commands);
``base`` is the GPU preset. A command-line flag (``--steps``, ``--batch-size``, ``--lr``) overrides
the preset, and the resolved values are what the run directory's ``config.json`` records.
"""
from __future__ import annotations

from typing import Dict

PRESETS: Dict[str, Dict[str, Dict[str, object]]] = {
    "tiny": {
        "model": {"d_model": 64, "nhead": 4, "num_encoder_layers": 2, "num_decoder_layers": 2,
                  "dim_feedforward": 256, "dropout": 0.0},
        "train": {"steps": 600, "batch_size": 64, "lr": 3e-3, "warmup": 150,
                  "eval_every": 250, "checkpoint_every": 250},
    },
    "small": {
        "model": {"d_model": 128, "nhead": 4, "num_encoder_layers": 3, "num_decoder_layers": 3,
                  "dim_feedforward": 512, "dropout": 0.1},
        "train": {"steps": 3000, "batch_size": 64, "lr": 2e-3, "warmup": 300,
                  "eval_every": 1000, "checkpoint_every": 500},
    },
    "base": {
        "model": {"d_model": 256, "nhead": 8, "num_encoder_layers": 4, "num_decoder_layers": 4,
                  "dim_feedforward": 1024, "dropout": 0.1},
        "train": {"steps": 20000, "batch_size": 128, "lr": 1e-3, "warmup": 2000,
                  "eval_every": 2000, "checkpoint_every": 2000},
    },
}

# Training choices shared by every preset (overridable from the command line).
COMMON_TRAIN: Dict[str, object] = {"label_smoothing": 0.1, "clip_norm": 1.0, "weight_decay": 0.01,
                                   "betas": (0.9, 0.98), "eval_batch_size": 256,
                                   "val_examples": 256}


def preset(name: str) -> Dict[str, Dict[str, object]]:
    """A copy of preset ``name``: ``{"model": {...}, "train": {...}}`` (common values merged)."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
    p = PRESETS[name]
    return {"model": dict(p["model"]), "train": {**COMMON_TRAIN, **p["train"]}}
