"""The training loop, resume, guards and the train/evaluate/translate commands."""
import json

import pytest
import torch

from gnn_attention.cli.app import main
from gnn_attention.training import loop as T
from gnn_attention.training.checkpoint import load_checkpoint
from gnn_attention.training.loop import TrainConfig, TrainingError, inverse_sqrt, train

# A model small enough for the default test run, with dropout on so that resuming must restore
# the RNG to be exact.
SMALL = {"d_model": 32, "nhead": 2, "num_encoder_layers": 1, "num_decoder_layers": 1,
         "dim_feedforward": 64, "dropout": 0.1}


pytestmark = pytest.mark.usefixtures("one_thread")  # see tests/conftest.py


def config(**kw):
    base = dict(task="reverse", preset="tiny", task_params={"count": 600, "max_len": 6},
                model=SMALL, steps=8, batch_size=16, warmup=4, eval_every=5,
                checkpoint_every=4, val_examples=16, test_examples=24, eval_batch_size=32,
                device="cpu")
    return TrainConfig(**{**base, **kw})


def test_inverse_sqrt_schedule():
    f = inverse_sqrt(4)
    assert [f(k) for k in range(4)] == [0.25, 0.5, 0.75, 1.0]  # linear warm-up to the peak
    assert f(15) == pytest.approx(0.5)  # then lr * sqrt(warmup / s): s = 16 -> 1/2


def test_resolve_uses_preset_and_overrides():
    cfg = TrainConfig.resolve("reverse", "tiny", steps=7, lr=None)
    assert cfg.steps == 7 and cfg.lr == 3e-3 and cfg.model["d_model"] == 64
    with pytest.raises(ValueError, match="unknown preset"):
        TrainConfig.resolve("reverse", "huge")
    with pytest.raises(ValueError, match="steps must be >= 1"):
        TrainConfig.resolve("reverse", "tiny", steps=0)


def test_interrupted_and_resumed_run_is_bitwise_identical(tmp_path):
    cfg = config()
    straight = train(cfg, tmp_path / "a", progress=False, log=lambda *_: None)
    assert train(cfg, tmp_path / "b", stop_after=4, progress=False) == {"stopped_at": 4}
    assert load_checkpoint(tmp_path / "b" / T.CHECKPOINT)["step"] == 4
    resumed = train(cfg, tmp_path / "b", resume=True, progress=False, log=lambda *_: None)
    a = load_checkpoint(tmp_path / "a" / T.CHECKPOINT)
    b = load_checkpoint(tmp_path / "b" / T.CHECKPOINT)
    assert a["step"] == b["step"] == 8
    for name, p in a["model"].items():
        assert torch.equal(p, b["model"][name]), name
    for k, st in a["optimizer"]["state"].items():
        assert all(torch.equal(v, b["optimizer"]["state"][k][n]) for n, v in st.items())
    assert a["data"] == b["data"] and torch.equal(a["rng"]["torch"], b["rng"]["torch"])
    keys = ("test_exact_match", "test_token_accuracy", "test_bleu", "test_loss")
    assert [straight[k] for k in keys] == [resumed[k] for k in keys]
    rows = (tmp_path / "b" / "metrics.csv").read_text().splitlines()
    assert len(rows) == len((tmp_path / "a" / "metrics.csv").read_text().splitlines())
    saved = json.loads((tmp_path / "a" / "config.json").read_text())
    assert TrainConfig.from_json(saved) == cfg


def test_resume_guards(tmp_path):
    cfg = config(steps=4)
    train(cfg, tmp_path, progress=False, log=lambda *_: None)
    with pytest.raises(TrainingError, match="already holds a checkpoint"):
        train(cfg, tmp_path, progress=False)
    again = train(cfg, tmp_path, progress=False, log=lambda *_: None, overwrite=True)
    assert again["steps"] == 4  # a fresh run replaced the old one, log included
    assert [r.split(",")[:2] for r in (tmp_path / "metrics.csv").read_text().splitlines()[1:]] \
        == [["4", "train"], ["4", "test"]]
    with pytest.raises(TrainingError, match="different configuration"):
        train(config(steps=6, lr=0.5), tmp_path, resume=True, progress=False)
    ckpt = tmp_path / T.CHECKPOINT
    good = ckpt.read_bytes()
    ckpt.write_bytes(good[:-300])  # truncated (e.g. copied while being written elsewhere)
    code = main(["train", "--task", "reverse", "--preset", "tiny", "--run-dir", str(tmp_path),
                 "--resume", "--no-progress"])
    assert code == 2 and ckpt.read_bytes() == good[:-300]  # refused before writing anything


def test_truncated_checkpoint_cli_message(tmp_path, capsys):
    (tmp_path / T.CHECKPOINT).write_bytes(b"PK\x03\x04 not really a zip")
    assert main(["evaluate", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "checkpoint.pt is truncated or corrupted" in err and "Traceback" not in err


def test_non_finite_loss_stops_with_a_clear_message(tmp_path, monkeypatch):
    real = T.batch_loss
    calls = []

    def poisoned(model, batch, *a, **kw):
        calls.append(1)
        loss = real(model, batch, *a, **kw)
        return loss * float("nan") if len(calls) == 3 else loss

    monkeypatch.setattr(T, "batch_loss", poisoned)
    with pytest.raises(TrainingError, match=r"loss is nan at step 3 .*parameters were not updated"):
        train(config(checkpoint_every=2), tmp_path, progress=False)
    state = load_checkpoint(tmp_path / T.CHECKPOINT)  # the last good one, from step 2
    assert state["step"] == 2
    assert all(torch.isfinite(p).all() for p in state["model"].values())


def test_cli_rejects_bad_arguments(capsys):
    assert main(["train", "--task", "reverse", "--steps", "0"]) == 2
    assert main(["train", "--task", "reverse", "--max-number", "5"]) == 2
    assert "only applies to number tasks" in capsys.readouterr().err


def test_reverse_learns_and_commands_work(tmp_path, capsys):
    """A smaller version of ``gnn-attention train --task reverse --preset tiny``: short strings,
    few steps; held-out exact match must still reach 0.9."""
    cfg = config(model={**SMALL, "d_model": 64, "nhead": 4, "dim_feedforward": 128,
                        "dropout": 0.0}, task_params={"count": 3000, "max_len": 5},
                 steps=250, batch_size=32, lr=3e-3, warmup=50, eval_every=1000,
                 checkpoint_every=1000, test_examples=100)
    res = train(cfg, tmp_path, progress=False, log=lambda *_: None)
    assert res["test_exact_match"] >= 0.9, res
    assert {"task", "steps", "train_seconds", "tokens_per_second", "test_exact_match",
            "test_token_accuracy", "test_bleu"} <= set(json.loads(
                (tmp_path / "results.json").read_text()))
    assert main(["translate", str(tmp_path), "abcde", "--plot", str(tmp_path / "a.png")]) == 0
    out = capsys.readouterr().out
    assert "abcde -> edcba" in out and (tmp_path / "a.png").stat().st_size > 1000
    assert main(["translate", str(tmp_path), "xyz"]) == 2  # symbols never seen in training
    assert main(["evaluate", str(tmp_path), "--split", "val", "--examples", "1"]) == 0
    assert "exact match" in capsys.readouterr().out
