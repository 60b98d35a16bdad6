"""Identical seeded runs write byte-identical checkpoints; wall-clock time lives beside them.

Notation: two runs are *identical* when their ``TrainConfig`` (seed included), thread count and
torch build are equal. Before this, their checkpoints differed in the elapsed seconds and in the
unseeded Python / NumPy generator states the checkpoint carries.
"""
from __future__ import annotations

import json
import random

import numpy as np
import pytest

from gnn_attention.training import presets, setup
from gnn_attention.training import loop as T
from gnn_attention.training.checkpoint import digest, load_checkpoint
from gnn_attention.training.loop import TrainConfig, train
from gnn_attention.training.restore import load_run, read_state

MODEL = {"d_model": 16, "nhead": 2, "num_encoder_layers": 1, "num_decoder_layers": 1,
         "dim_feedforward": 24, "dropout": 0.1}
CFG = TrainConfig(task="reverse", preset="tiny", task_params={"count": 300, "max_len": 5},
                  model=MODEL, steps=4, batch_size=8, warmup=2, eval_every=100,
                  checkpoint_every=2, val_examples=8, test_examples=8, eval_batch_size=16,
                  device="cpu")
QUIET = dict(progress=False, log=lambda *_: None)
pytestmark = pytest.mark.usefixtures("one_thread")


def test_identical_runs_write_identical_bytes(tmp_path):
    for name, noise in (("a", 1), ("b", 2)):
        random.seed(noise), np.random.seed(noise)  # whatever the caller did before
        train(CFG, tmp_path / name, **QUIET)
    a, b = ((tmp_path / d / T.CHECKPOINT).read_bytes() for d in "ab")
    assert a == b
    timing = [json.loads((tmp_path / d / "timing.json").read_text()) for d in "ab"]
    assert [t["step"] for t in timing] == [4, 4] and all(t["elapsed_seconds"] > 0 for t in timing)
    assert "elapsed" not in load_checkpoint(tmp_path / "a" / T.CHECKPOINT)


def test_a_different_seed_changes_the_bytes(tmp_path):
    train(CFG, tmp_path / "a", **QUIET)
    train(TrainConfig(**{**CFG.to_json(), "betas": tuple(CFG.betas), "seed": 1}),
          tmp_path / "b", **QUIET)
    a, b = (load_checkpoint(tmp_path / d / T.CHECKPOINT) for d in "ab")
    assert digest(a["model"]) != digest(b["model"])
    assert a["rng"]["python"] != b["rng"]["python"]  # Python's generator follows the seed too


def test_resume_reads_elapsed_time_from_timing(tmp_path):
    train(CFG, tmp_path, stop_after=2, **QUIET)
    first = json.loads((tmp_path / "timing.json").read_text())["elapsed_seconds"]
    res = train(CFG, tmp_path, resume=True, **QUIET)
    assert res["train_seconds"] >= round(first, 3)
    (tmp_path / "timing.json").write_text("{not json")  # damaged: only the reported time suffers
    cfg, model, src_tok, tgt_tok, state = load_run(tmp_path)
    assert state["step"] == 4 and not model.training


def test_read_state_returns_the_run_description(tmp_path):
    train(CFG, tmp_path, **QUIET)
    cfg, src_tok, tgt_tok, state = read_state(tmp_path / setup.CHECKPOINT)
    assert cfg == CFG and len(src_tok) == state["model"]["src_embed.weight"].shape[0]
    assert presets.preset("tiny")["model"]["d_model"] == 64  # the preset CFG.preset names
