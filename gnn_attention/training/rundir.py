"""Run directories: one writer at a time, writable before the first step, an old run moved aside.

Notation: ``run_dir`` = the directory a training run writes (``config.json``, ``checkpoint.pt``,
``metrics.csv``, ``results.json``, ``timing.json``); ``LOCK`` = ``run_dir/.lock``, held with
``fcntl.flock(LOCK_EX | LOCK_NB)`` for the whole run; ``aside`` = ``<run_dir>.replaced-<k>``, the
first free k >= 1.

Why a kernel lock (flock) and not a pid file: the kernel drops it when its holder dies (even by
SIGKILL), so a crashed run never leaves a stale lock, and two processes cannot both win it. The
pid written into the lock file only makes the refusal name the holder.
Why ``--overwrite`` renames the whole directory: one ``rename`` is atomic, so at no moment does the
old checkpoint sit next to the new run's config, and nothing the user saved is deleted (a run killed
before its first checkpoint leaves the old run intact in ``aside``).
"""
from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Iterable, List, Optional

from gnn_attention.training.checkpoint import CheckpointError
from gnn_attention.training.restore import read_state
from gnn_attention.training.setup import CHECKPOINT, TrainConfig, TrainingError

LOCK = ".lock"


class RunDirError(TrainingError):
    """The run directory cannot be used: a file, not writable, or in use by another run."""


def check_location(run_dir: Path) -> None:
    """Refuse a ``run_dir`` that is a file or lies under one, before anything is created."""
    for p in [run_dir, *run_dir.parents]:
        if p.exists() or p.is_symlink():
            if not p.is_dir():
                where = "" if p == run_dir else f" ({p} is a file)"
                raise RunDirError(f"--run-dir {run_dir} is not a directory{where}")
            return


def _describe(err: OSError) -> str:
    return os.strerror(err.errno) if err.errno else str(err)


class RunLock:
    """Context manager: create ``run_dir`` if needed and hold its lock, or raise
    :class:`RunDirError` naming the process that holds it. Nothing else in the directory is
    touched, whichever way it ends."""

    def __init__(self, run_dir: Path):
        self.run_dir = Path(run_dir)
        self.fd: Optional[int] = None

    def __enter__(self) -> "RunLock":
        check_location(self.run_dir)
        try:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            # O_NOFOLLOW: a symlink planted at .lock is refused, never followed.
            fd = os.open(self.run_dir / LOCK, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
        except OSError as err:
            raise RunDirError(f"cannot write to run directory {self.run_dir}: "
                              f"{_describe(err)}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise RunDirError(f"run directory {self.run_dir} is in use by another training run "
                              f"(pid {holder}); wait for it to end or choose another "
                              f"--run-dir") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self.fd = fd
        return self

    def __exit__(self, *exc) -> None:
        if self.fd is not None:
            os.close(self.fd)  # closing the descriptor releases the flock
            self.fd = None


def check_writable(run_dir: Path, files: Iterable[str]) -> None:
    """Create and remove a probe file in ``run_dir`` and open each existing ``files`` entry for
    appending (without writing), so that a read-only directory fails before the first step
    instead of after training. Raises :class:`RunDirError`."""
    try:
        fd, probe = tempfile.mkstemp(prefix=".probe.", dir=run_dir)
        os.close(fd)
        os.unlink(probe)
        for name in files:
            path = run_dir / name
            if path.exists():
                with open(path, "a"):
                    pass
    except OSError as err:
        raise RunDirError(f"cannot write to run directory {run_dir}: {_describe(err)}") from None


def remove_stale_temporaries(run_dir: Path, name: str) -> List[Path]:
    """Delete ``<name>.*.tmp`` regular files left by a writer that died mid-save (called with the
    lock held, so no live writer owns one); symlinks of that name are left alone."""
    removed = []
    for p in run_dir.glob(f"{name}.*.tmp"):
        if p.is_file() and not p.is_symlink():
            p.unlink()
            removed.append(p)
    return removed


def move_aside(run_dir: Path) -> Path:
    """Rename ``run_dir`` to the first free ``<run_dir>.replaced-<k>`` (one atomic rename) and
    return the new name. The caller holds the old directory's lock and then locks a fresh one."""
    for k in range(1, 10_000):
        aside = run_dir.with_name(f"{run_dir.name}.replaced-{k}")
        if aside.exists() or aside.is_symlink():
            continue
        try:
            # rename(2) onto an existing empty directory would succeed: os.mkdir claims the name
            # first (O_EXCL-like), then the rename replaces that empty directory.
            os.mkdir(aside)
        except FileExistsError:
            continue
        except OSError as err:
            raise RunDirError(f"cannot move the previous run in {run_dir} aside: "
                              f"{_describe(err)}") from None
        try:
            os.rename(run_dir, aside)
        except OSError as err:
            os.rmdir(aside)
            if err.errno in (errno.ENOTEMPTY, errno.EEXIST):
                continue
            raise RunDirError(f"cannot move the previous run in {run_dir} aside: "
                              f"{_describe(err)}") from None
        return aside
    raise RunDirError(f"too many replaced runs next to {run_dir}; remove some")


# ---------------------------------------------------------------------------------------------
# Opening a run directory for training


def resume_state(cfg: TrainConfig, run_dir: Path, resume: bool, overwrite: bool):
    """The checkpoint to continue from (None for a fresh run); raises before anything is written
    when the directory is in the way, the checkpoint is not sound or the configuration changed."""
    ckpt_path = run_dir / CHECKPOINT
    if resume:
        saved, _, _, state = read_state(ckpt_path)
        if replace(saved, steps=cfg.steps, device=cfg.device) != cfg:
            raise TrainingError(f"--resume with a different configuration than {ckpt_path} "
                                f"(only --steps and --device may change)")
        if cfg.steps < state["step"]:
            raise TrainingError(f"--steps {cfg.steps} is below the {state['step']} steps "
                                f"{ckpt_path} has already trained; pass --steps "
                                f">= {state['step']}")
        return state
    if ckpt_path.exists() and not overwrite:
        raise TrainingError(f"{run_dir} already holds a checkpoint; pass --resume to continue it "
                            f"or choose another --run-dir")
    return None


RUN_FILES = ("config.json", "metrics.csv", "results.json", "timing.json")


def open_run_dir(cfg: TrainConfig, run_dir: Path, resume: bool, overwrite: bool, main: bool,
                 held: contextlib.ExitStack, log):
    """Lock ``run_dir`` (rank 0), read the state to resume, move an old run aside for
    ``overwrite`` and prove the directory writable: all before the first step."""
    check_location(run_dir)
    if resume and not (run_dir / CHECKPOINT).exists():
        raise CheckpointError(f"no checkpoint at {run_dir / CHECKPOINT}")  # nothing created
    if main:
        held.enter_context(RunLock(run_dir))
    state = resume_state(cfg, run_dir, resume, overwrite)
    if main and state is None and (run_dir / CHECKPOINT).exists():  # --overwrite
        aside = move_aside(run_dir)
        held.close()  # the old lock moved away with the old run; lock the new directory
        held.enter_context(RunLock(run_dir))
        log(f"moved the previous run to {aside}")
    if main:
        check_writable(run_dir, RUN_FILES)
        remove_stale_temporaries(run_dir, CHECKPOINT)
    return state


def write_atomic(path: Path, text: str) -> None:
    """``text`` to ``path`` through a unique temporary file and a rename (no torn files)."""
    fd, tmp = tempfile.mkstemp(prefix=f"{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o644)
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_elapsed(run_dir: Path, step: int) -> float:
    """Training seconds up to ``step`` from ``timing.json`` (0.0 when it belongs to another
    step or is unreadable: only the reported time is affected, never the training)."""
    try:
        timing = json.loads((run_dir / "timing.json").read_text())
        return float(timing["elapsed_seconds"]) if timing.get("step") == step else 0.0
    except (OSError, ValueError, TypeError, KeyError, AttributeError):
        return 0.0
