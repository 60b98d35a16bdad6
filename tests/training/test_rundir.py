"""Run directories under attack: two writers, planted symlinks, --overwrite killed early, read-only.

Notation: ``run`` = a run directory; ``holder`` = a second, real Python process holding the run's
lock (``gnn_attention.training.rundir.RunLock``), so the refusal is the kernel's flock answer and
not a flag inside one interpreter.
"""
from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import tempfile

import pytest
import torch

from gnn_attention.cli.app import main
from gnn_attention.training import loop as T
from gnn_attention.training import rundir
from gnn_attention.training.checkpoint import load_checkpoint, save_checkpoint
from gnn_attention.training.loop import TrainConfig, train
from gnn_attention.training.rundir import RunDirError, RunLock

MODEL = {"d_model": 16, "nhead": 2, "num_encoder_layers": 1, "num_decoder_layers": 1,
         "dim_feedforward": 24, "dropout": 0.1}
CFG = TrainConfig(task="reverse", preset="tiny", task_params={"count": 300, "max_len": 5},
                  model=MODEL, steps=4, batch_size=8, warmup=2, eval_every=100,
                  checkpoint_every=2, val_examples=8, test_examples=8, eval_batch_size=16,
                  device="cpu")
QUIET = dict(progress=False, log=lambda *_: None)
pytestmark = pytest.mark.usefixtures("one_thread")


def snapshot(path):
    """Every file under ``path`` with its bytes (what 'nothing touched' compares)."""
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*"))
            if p.is_file()}


@pytest.fixture
def holder(tmp_path):
    """A second process that holds the lock of ``tmp_path / 'run'`` until told to exit."""
    run = tmp_path / "run"
    run.mkdir()
    # The standard library only (a fast start): the same flock on the same file as RunLock.
    code = ("import fcntl, os, sys\nfd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT)\n"
            "fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)\n"
            "os.write(fd, f'{os.getpid()}\\n'.encode())\nprint('locked', flush=True)\n"
            "sys.stdin.read()\n")
    proc = subprocess.Popen([sys.executable, "-c", code, str(run / ".lock")],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "locked"
    yield run, proc
    if proc.poll() is None:
        proc.stdin.close()
        proc.wait(timeout=60)


def test_second_writer_gets_one_line_and_touches_nothing(capsys, holder):
    run, proc = holder
    before = snapshot(run)
    argv = ["train", "--task", "reverse", "--steps", "2", "--run-dir", str(run), "--no-progress"]
    assert main(argv) == 2
    assert capsys.readouterr().err == (
        f"gnn-attention train: error: run directory {run} is in use by another training run "
        f"(pid {proc.pid}); wait for it to end or choose another --run-dir\n")
    assert snapshot(run) == before and sorted(os.listdir(run)) == [".lock"]
    # The same answer through the library, and for --resume and --overwrite alike.
    for kw in ({}, {"overwrite": True}):
        with pytest.raises(RunDirError, match="is in use by another training run"):
            train(CFG, run, **QUIET, **kw)
    assert snapshot(run) == before


def test_lock_is_released_when_its_holder_dies(holder):
    run, proc = holder
    with pytest.raises(RunDirError):
        RunLock(run).__enter__()
    proc.send_signal(signal.SIGKILL)  # no cleanup code runs: the kernel drops the flock
    proc.wait(timeout=60)
    train(CFG, run, **QUIET)
    assert load_checkpoint(run / T.CHECKPOINT)["step"] == 4


@pytest.mark.slow
def test_two_train_commands_at_once_one_wins(tmp_path):
    """Two real ``gnn-attention train`` processes started together into one directory: exactly
    one trains; the other exits 2 with one line; config and checkpoint come from one run."""
    run = tmp_path / "run"
    argv = [sys.executable, "-m", "gnn_attention", "train", "--task", "reverse", "--steps", "30",
            "--batch-size", "8", "--threads", "1", "--run-dir", str(run), "--no-progress"]
    procs = [subprocess.Popen(argv + ["--seed", str(s)], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for s in (1, 2)]
    outs = [p.communicate(timeout=600) for p in procs]
    codes = sorted(p.returncode for p in procs)
    assert codes == [0, 2], outs
    loser = outs[[p.returncode for p in procs].index(2)][1]
    assert loser.count("\n") == 1 and "is in use by another training run" in loser
    winner_seed = 1 + [p.returncode for p in procs].index(0)
    state = load_checkpoint(run / T.CHECKPOINT)
    assert state["config"]["seed"] == winner_seed
    assert json.loads((run / "config.json").read_text())["seed"] == winner_seed


def test_planted_symlink_at_the_old_temporary_name_is_never_followed(tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    run = tmp_path / "run"
    run.mkdir()
    (run / "checkpoint.pt.tmp").symlink_to(victim)
    train(CFG, run, **QUIET)
    assert victim.read_text() == "precious"
    assert (run / "checkpoint.pt.tmp").is_symlink()  # left alone, not followed, not removed
    assert load_checkpoint(run / T.CHECKPOINT)["step"] == 4
    assert not list(run.glob("checkpoint.pt.*.tmp"))


def test_two_savers_never_share_a_temporary_file(tmp_path, monkeypatch):
    names = []
    real = tempfile.mkstemp

    def spy(*a, **kw):
        fd, name = real(*a, **kw)
        names.append(name)
        return fd, name

    monkeypatch.setattr(tempfile, "mkstemp", spy)
    for step in (1, 2):
        save_checkpoint(tmp_path / "c.pt", {"step": step, "w": torch.ones(3)})
    assert len(set(names)) == 2 and all(n.endswith(".tmp") for n in names)


def test_symlink_planted_at_the_lock_is_refused(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / ".lock").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(RunDirError, match="cannot write to run directory .*symbolic links"):
        train(CFG, run, **QUIET)
    assert not (tmp_path / "elsewhere").exists()


@pytest.mark.slow
def test_overwrite_killed_before_its_first_checkpoint_loses_nothing(tmp_path):
    run = tmp_path / "run"
    train(CFG, run, **QUIET)
    before = snapshot(run)
    script = ("import os, signal, sys, json\nfrom gnn_attention.training import loop as T\n"
              "def die(*a, **k):\n    os.kill(os.getpid(), signal.SIGKILL)\n"
              "T.batch_loss = die\n"
              "T.train(T.TrainConfig.from_json(json.loads(sys.argv[1])), sys.argv[2], "
              "overwrite=True, progress=False, log=lambda *_: None)\n")
    new = dataclasses.replace(CFG, seed=7)
    proc = subprocess.run([sys.executable, "-c", script, json.dumps(new.to_json()), str(run)],
                          capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    aside = snapshot(tmp_path / "run.replaced-1")
    aside.pop(".lock"), before.pop(".lock")  # holds the pid of its last holder
    assert aside == before  # the old run, byte for byte, in one place
    assert not (run / T.CHECKPOINT).exists()  # no old checkpoint beside a new config


def test_overwrite_twice_keeps_every_earlier_run(tmp_path):
    run = tmp_path / "run"
    logs = []
    train(CFG, run, **QUIET)
    for _ in range(2):
        train(CFG, run, progress=False, log=logs.append, overwrite=True)
    assert [m for m in logs if m.startswith("moved")] == [
        f"moved the previous run to {tmp_path / 'run.replaced-1'}",
        f"moved the previous run to {tmp_path / 'run.replaced-2'}"]
    for d in ("run", "run.replaced-1", "run.replaced-2"):
        assert load_checkpoint(tmp_path / d / T.CHECKPOINT)["step"] == 4


def no_steps(monkeypatch):
    def fail(*a, **k):
        raise AssertionError("a training step ran")

    monkeypatch.setattr(T, "batch_loss", fail)


def test_read_only_directory_fails_before_the_first_step(tmp_path, monkeypatch, capsys):
    """The kernel's answer for a read-only directory (EACCES, or EROFS on a read-only mount) is
    injected where the probe file is created: running as root, chmod cannot make one."""
    run = tmp_path / "run"
    run.mkdir()
    train(CFG, run, **QUIET)
    no_steps(monkeypatch)

    def refuse(*a, **k):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(rundir.tempfile, "mkstemp", refuse)
    argv = ["train", "--task", "reverse", "--run-dir", str(run), "--no-progress", "--overwrite"]
    assert main(argv) == 2
    assert capsys.readouterr().err == (f"gnn-attention train: error: cannot write to run "
                                       f"directory {tmp_path / 'run'}: Permission denied\n")


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into a mode-0555 directory")
def test_read_only_directory_by_mode(tmp_path, monkeypatch):
    run = tmp_path / "run"
    run.mkdir()
    (run / ".lock").touch()
    run.chmod(0o555)
    no_steps(monkeypatch)
    try:
        with pytest.raises(RunDirError, match="cannot write to run directory"):
            train(CFG, run, **QUIET)
    finally:
        run.chmod(0o755)


def test_run_dir_that_is_a_file_or_under_one(capsys, tmp_path):
    f = tmp_path / "afile"
    f.write_text("x")
    for target, why in ((f, ""), (f / "run", f" ({f} is a file)")):
        assert main(["train", "--task", "reverse", "--run-dir", str(target)]) == 2
        assert capsys.readouterr().err == (f"gnn-attention train: error: --run-dir {target} is "
                                           f"not a directory{why}\n")
    assert f.read_text() == "x"


def test_stale_temporary_of_a_dead_writer_is_removed_under_the_lock(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "checkpoint.pt.abc123.tmp").write_bytes(b"torn")
    train(CFG, run, **QUIET)
    assert not list(run.glob("checkpoint.pt.*.tmp"))
