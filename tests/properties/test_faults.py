"""Fault injection in training: each fault is injected for real and no data may be lost.

Notation: s = optimiser step; "straight" = an uninterrupted run of the same config; "last good" =
the checkpoint written before the fault. Faults:
  * the process is killed (SIGKILL) halfway through writing a checkpoint;
  * the OS refuses a checkpoint write (a file-size limit, RLIMIT_FSIZE: the write fails with EFBIG
    as it would with ENOSPC on a full disk), and a simulated ENOSPC in-process;
  * SIGTERM / SIGINT arrive mid-training (between checkpoints): the step in flight finishes, a
    checkpoint is saved, and resuming ends bitwise equal to the straight run;
  * one DDP rank (of 2, gloo) sees a non-finite loss: every rank must stop at the same step with
    the same error, and the last good checkpoint must stay loadable.
Truncated / bit-flipped checkpoint files are covered in tests/training/test_checkpoint.py and
tests/training/test_loop.py.
"""
from __future__ import annotations

import errno
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from gnn_attention.training import loop as T
from gnn_attention.training.checkpoint import load_checkpoint
from gnn_attention.training.loop import TrainConfig, TrainingError, train

MODEL = {"d_model": 24, "nhead": 2, "num_encoder_layers": 1, "num_decoder_layers": 1,
         "dim_feedforward": 40, "dropout": 0.1}  # dropout on: resuming must restore the RNG
CFG = TrainConfig(task="reverse", preset="tiny", task_params={"count": 400, "max_len": 6},
                  model=MODEL, steps=8, batch_size=8, warmup=4, eval_every=100,
                  checkpoint_every=4, val_examples=8, test_examples=8, eval_batch_size=16,
                  device="cpu")
QUIET = dict(progress=False, log=lambda *_: None)


def assert_same_state(a: dict, b: dict) -> None:
    """Two checkpoints hold bitwise-equal model, optimiser, data position and RNG."""
    assert a["step"] == b["step"]
    for name, p in a["model"].items():
        assert torch.equal(p, b["model"][name]), name
    for k, st in a["optimizer"]["state"].items():
        assert all(torch.equal(v, b["optimizer"]["state"][k][n]) for n, v in st.items())
    assert a["data"] == b["data"] and torch.equal(a["rng"]["torch"], b["rng"]["torch"])


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    run = tmp_path_factory.mktemp("straight")
    train(CFG, run, **QUIET)
    return load_checkpoint(run / T.CHECKPOINT)


def run_faulty(run_dir: Path, body: str) -> subprocess.CompletedProcess:
    """Train ``CFG`` in a fresh interpreter after running ``body`` (which installs the fault).

    The child uses this process's thread count: float sums (and so the bits that resuming must
    reproduce) depend on how the work is split between threads."""
    script = (f"import os, signal, sys, json, resource\nimport torch\n"
              f"from gnn_attention.training import checkpoint as C, loop as T\n"
              f"torch.set_num_threads({torch.get_num_threads()})\n{body}\n"
              f"T.train(T.TrainConfig.from_json(json.loads(sys.argv[1])), sys.argv[2], "
              f"progress=False, log=lambda *_: None)\n")
    return subprocess.run([sys.executable, "-c", script, json.dumps(CFG.to_json()), str(run_dir)],
                          capture_output=True, text=True, timeout=600, check=False)


def resume_and_compare(run_dir: Path, straight: dict, last_good_step: int) -> None:
    assert load_checkpoint(run_dir / T.CHECKPOINT)["step"] == last_good_step
    train(CFG, run_dir, resume=True, **QUIET)
    assert_same_state(load_checkpoint(run_dir / T.CHECKPOINT), straight)
    assert not list(run_dir.glob(T.CHECKPOINT + ".*.tmp"))  # no temporary file left behind


# ---------------------------------------------------------------------------------------------
# Failures while writing a checkpoint


def test_simulated_disk_full_keeps_the_last_good_checkpoint(tmp_path, monkeypatch, straight):
    real_fsync, calls = os.fsync, []

    def full_disk(fd):  # the second checkpoint's data never reaches the disk
        calls.append(fd)
        if len(calls) == 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", full_disk)
    with pytest.raises(OSError, match="No space left on device"):
        train(CFG, tmp_path, **QUIET)
    monkeypatch.undo()
    resume_and_compare(tmp_path, straight, last_good_step=4)


@pytest.mark.slow  # fresh interpreters: ~10-30 s each on 2 shared cores
def test_os_refusing_the_write_keeps_the_last_good_checkpoint(tmp_path, straight):
    # A real failed write(2): the file-size limit drops to 4 KiB during the second save.
    body = """
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # fail the write with EFBIG instead of dying
real, calls = C.save_checkpoint, []
def limited(path, payload):
    calls.append(1)
    if len(calls) < 2:
        return real(path, payload)
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (4096, hard))
    try:
        return real(path, payload)
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
T.save_checkpoint = limited
"""
    proc = run_faulty(tmp_path, body)
    assert proc.returncode != 0 and "File too large" in proc.stderr, proc.stderr[-2000:]
    resume_and_compare(tmp_path, straight, last_good_step=4)


@pytest.mark.slow
def test_killed_while_writing_keeps_the_last_good_checkpoint(tmp_path, straight):
    body = """
real, calls = torch.save, []
def dying(obj, f, *a, **kw):
    calls.append(1)
    real(obj, f, *a, **kw)
    if len(calls) == 2:  # the second checkpoint is on disk only in part when the process dies
        f.flush(); f.truncate(f.tell() // 2); f.flush()
        os.kill(os.getpid(), signal.SIGKILL)
torch.save = dying
"""
    proc = run_faulty(tmp_path, body)
    assert proc.returncode == -9
    # The torn write is there, unused (removed by the next run, which holds the lock).
    assert len(list(tmp_path.glob(T.CHECKPOINT + ".*.tmp"))) == 1
    resume_and_compare(tmp_path, straight, last_good_step=4)


# ---------------------------------------------------------------------------------------------
# Signals


@pytest.mark.slow
@pytest.mark.parametrize("sig", ["SIGTERM", "SIGINT"])
def test_signal_saves_a_checkpoint_and_resume_is_exact(tmp_path, straight, sig):
    body = f"""
real, calls = T.batch_loss, []
def interrupted(*a, **kw):
    calls.append(1)
    if len(calls) == 6:  # during step 6, between checkpoints (every 4 steps)
        os.kill(os.getpid(), signal.{sig})
    return real(*a, **kw)
T.batch_loss = interrupted
"""
    proc = run_faulty(tmp_path, body)
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    # The step in flight (6) finishes, then a checkpoint is written between optimiser steps.
    resume_and_compare(tmp_path, straight, last_good_step=6)


# ---------------------------------------------------------------------------------------------
# A non-finite loss on one DDP rank


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _nan_worker(rank: int, world: int, port: int, run_dir: str) -> None:
    torch.set_num_threads(1)
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    real, calls = T.batch_loss, []

    def poisoned(*a, **kw):  # only rank 1 sees the NaN, at step 6
        calls.append(1)
        loss = real(*a, **kw)
        return loss * float("nan") if rank == 1 and len(calls) == 6 else loss

    T.batch_loss = poisoned
    try:
        train(CFG, run_dir, **QUIET)
        outcome = "finished"
    except TrainingError as err:
        outcome = str(err).split(";")[0]
    finally:
        torch.distributed.destroy_process_group()
    Path(run_dir, f"rank{rank}.txt").write_text(outcome)


@pytest.mark.slow
def test_non_finite_loss_on_one_rank_stops_every_rank_alike(tmp_path):
    mp.spawn(_nan_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    outcomes = [(tmp_path / f"rank{r}.txt").read_text() for r in range(2)]
    assert outcomes[0] == outcomes[1] and outcomes[0].startswith("loss is nan at step 6"), outcomes
    state = load_checkpoint(tmp_path / T.CHECKPOINT)  # the last good one, from step 4
    assert state["step"] == 4 and all(torch.isfinite(p).all() for p in state["model"].values())
