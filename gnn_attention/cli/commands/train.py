"""``gnn-attention train``: train the graph Transformer on an offline task (single process or
under ``torchrun``), writing checkpoints, ``metrics.csv``, ``config.json`` and ``results.json``."""
from __future__ import annotations

import os

import torch

from gnn_attention.cli.errors import UserError
from gnn_attention.training.data import DEFAULT_TASK, TASKS, load_task
from gnn_attention.training.presets import PRESETS

# Measured (docs/reliability.md, section 8): en-de tiny, 20 steps, interleaved in one process on
# 2 cores at load average 11-19: median 0.39 s per step with 1 thread, 15.7 s with 2.
DEFAULT_THREADS = 1


def register(sub) -> None:
    p = sub.add_parser("train", help="train the graph Transformer on an offline task")
    p.add_argument("--task", default=DEFAULT_TASK, choices=list(TASKS),
                   help=f"what to learn (default {DEFAULT_TASK}): " +
                   "; ".join(f"{k}: {v.description}" for k, v in TASKS.items()))
    p.add_argument("--preset", default="tiny", choices=list(PRESETS),
                   help="model size and schedule (default tiny: minutes on 2 CPU cores)")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"],
                   help="auto = CUDA when present")
    p.add_argument("--steps", type=int, help="optimiser steps (default: the preset's)")
    p.add_argument("--batch-size", type=int, help="sequences per step, all processes together")
    p.add_argument("--lr", type=float, help="peak learning rate")
    p.add_argument("--run-dir", default=None, help="where to write (default runs/<task>-<preset>)")
    p.add_argument("--resume", action="store_true", help="continue from <run-dir>/checkpoint.pt")
    p.add_argument("--overwrite", action="store_true",
                   help="start afresh even if <run-dir> holds a checkpoint of an earlier run")
    p.add_argument("--compile", action="store_true", help="torch.compile the model")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=DEFAULT_THREADS,
                   help=f"CPU threads for torch (default {DEFAULT_THREADS}: on a 2-core machine "
                        "shared with other jobs, 2 threads made each step about 40x slower); "
                        "raise it on an idle multi-core machine")
    p.add_argument("--max-number", type=int, default=None,
                   help="number tasks: largest number generated (default 9999)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def available_cores() -> int:
    """CPU cores this process may run on (its affinity mask, not the machine's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def run(args) -> int:
    from gnn_attention.training.checkpoint import CheckpointError
    from gnn_attention.training.loop import TrainConfig, TrainingError, train

    cores = available_cores()
    if args.threads < 1:
        raise UserError(f"--threads must be >= 1, got {args.threads}")
    if args.threads > cores:  # torch would start the threads anyway (100000 segfaults)
        raise UserError(f"--threads {args.threads} is more than the {cores} CPU cores this "
                        f"process may use")
    task_params = {}
    if args.max_number is not None:
        if "max_number" not in TASKS[args.task].params:
            raise UserError(f"--max-number only applies to number tasks, not {args.task}")
        task_params["max_number"] = args.max_number
        try:  # too small a range leaves a split empty: say so before any model is built
            load_task(args.task, **task_params)
        except ValueError as err:
            raise UserError(f"--max-number {args.max_number}: {err}") from None
    try:
        cfg = TrainConfig.resolve(args.task, args.preset, steps=args.steps,
                                  batch_size=args.batch_size, lr=args.lr, seed=args.seed,
                                  device=args.device, compile=args.compile or None,
                                  task_params=task_params or None)
    except ValueError as err:
        raise UserError(str(err)) from err
    run_dir = args.run_dir or f"runs/{args.task}-{args.preset}"
    previous_threads = torch.get_num_threads()
    try:
        if args.resume and args.overwrite:
            raise UserError("--resume and --overwrite exclude each other")
        torch.set_num_threads(args.threads)  # restored below: main() may be called in-process
        results = train(cfg, run_dir, resume=args.resume, progress=not args.no_progress,
                        overwrite=args.overwrite)
    except (CheckpointError, TrainingError) as err:
        raise UserError(str(err)) from err
    finally:
        torch.set_num_threads(previous_threads)
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()  # started by train() under torchrun
    print(f"run directory: {run_dir}")
    return 130 if "stopped_at" in results else 0  # 130: interrupted (checkpoint saved)
