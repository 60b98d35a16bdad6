"""Training the graph Transformer: one loop for a single process and for torchrun (DDP).

Notation: B sequences per optimiser step (all processes together), W processes (``world``), step s
counted from 1; n_tok = non-padded target tokens (EOS included) of the global batch.

    loss_s  = (1 / n_tok) * sum_{tokens} CE_smoothed(logits, gold)          (label smoothing eps)
    lr_s    = lr * min(s / warmup, sqrt(warmup / s))                        (inverse-sqrt warm-up)
    theta  <- AdamW(theta, clip(grad loss_s, clip_norm))

Under DDP each rank sums its tokens' losses and divides by n_tok / W, so DDP's mean over ranks is
exactly the single-process loss of the whole batch (ranks hold different token counts).

Resume is exact: a checkpoint stores model, optimiser, scheduler, every RNG state
and the data position, so an interrupted-and-resumed CPU run ends bitwise equal to a straight one.
Checkpoints are byte-identical for identical seeded runs: Python's and NumPy's generators are
seeded with ``cfg.seed`` as torch's is, and wall-clock time (the one field that differs) is kept
out of the checkpoint, in ``timing.json``. One writer per run directory (``rundir.RunLock``).
"""
from __future__ import annotations

import contextlib
import json
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Optional, Tuple

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from gnn_attention.training.checkpoint import (
    CheckpointError,
    capture_rng,
    restore_rng,
    save_checkpoint,
)
from gnn_attention.training.data import BatchStream, Tokenizer, encode_pairs, load_task
from gnn_attention.training.interrupt import StopOnSignal
from gnn_attention.training.metrics import MetricsLog, evaluate
from gnn_attention.training.restore import load_into, load_run
from gnn_attention.training.rundir import open_run_dir, read_elapsed, write_atomic
from gnn_attention.training.setup import (
    CHECKPOINT,
    TrainConfig,
    TrainingError,
    batch_loss,
    build_model,
    build_tokenizers,
    distributed_env,
    global_tokens,
    inverse_sqrt,
    make_optimizer,
    pick_device,
)

# ---------------------------------------------------------------------------------------------
# The loop


def train(cfg: TrainConfig, run_dir, resume: bool = False, stop_after: Optional[int] = None,
          progress: bool = True, log=print, overwrite: bool = False) -> Dict[str, Any]:
    """Train ``cfg`` in ``run_dir`` and return the results (also written to ``results.json``).

    ``stop_after`` ends the run after that step with a checkpoint, as an interruption would
    (tests use it to check that resuming is exact); the results are then ``{"stopped_at": s}``.
    ``overwrite`` starts afresh in a directory that holds a checkpoint: the old run is first
    renamed to ``<run_dir>.replaced-<k>`` as a whole (nothing is deleted). The directory is locked
    for the whole run; a second writer gets :class:`~gnn_attention.training.rundir.RunDirError`.
    """
    cfg.check()
    with contextlib.ExitStack() as held:  # the run directory's lock, released however we leave
        run = _start(cfg, Path(run_dir), resume, overwrite, held, log)
        return _loop(run, stop_after, progress, log)


def _loop(run: "_Run", stop_after: Optional[int], progress: bool, log) -> Dict[str, Any]:
    cfg = run.cfg
    last = cfg.steps if stop_after is None else min(stop_after, cfg.steps)
    bar = None
    if progress and run.main:
        from tqdm import tqdm
        bar = tqdm(total=cfg.steps, initial=run.step, desc=f"train {cfg.task}", dynamic_ncols=True)
    run.model.train()
    # A signal now only sets a flag: the step in flight finishes, a checkpoint is saved, we return.
    with StopOnSignal() as stop:
        while run.step < last:
            loss, grad_norm = _step(run)
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{loss:.3f}", tok_s=f"{run.tokens / run.elapsed:.0f}")
            _log_and_validate(run, loss, grad_norm)
            interrupted = stop.requested(run.world, run.device)
            if run.step % cfg.checkpoint_every == 0 or run.step == last or interrupted:
                _checkpoint(run)
            if interrupted:
                log(f"stopped by {stop.received or 'a signal on another rank'} after step "
                    f"{run.step}; checkpoint saved to {run.ckpt_path}: continue with --resume")
                break
    if bar is not None:
        bar.close()
    if run.step < cfg.steps:
        return {"stopped_at": run.step}
    return _finish(run, log) if run.main else {}


@dataclass
class _Run:
    """The parts of one run and its counters (a value local to :func:`train`)."""

    cfg: TrainConfig
    run_dir: Path
    device: torch.device
    rank: int
    world: int
    data: Any
    src_tok: Tokenizer
    tgt_tok: Tokenizer
    core: nn.Module
    model: nn.Module
    optimizer: Any
    scheduler: Any
    stream: BatchStream
    metrics: Optional[MetricsLog]
    max_target_len: int
    step: int = 0
    elapsed: float = 0.0
    tokens: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def ckpt_path(self) -> Path:
        return self.run_dir / CHECKPOINT


def _device_and_ranks(cfg: TrainConfig):
    """``(device, rank, world, local_rank)``, joining the process group under torchrun."""
    rank, world, local_rank = distributed_env()
    device = pick_device(cfg.device)
    if world > 1:
        if device.type == "cuda":
            device = torch.device("cuda", local_rank)
            torch.cuda.set_device(device)
        if not dist.is_initialized():
            dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return device, rank, world, local_rank


def _start(cfg: TrainConfig, run_dir: Path, resume: bool, overwrite: bool,
           held: contextlib.ExitStack, log) -> _Run:
    device, rank, world, local_rank = _device_and_ranks(cfg)
    state = open_run_dir(cfg, run_dir, resume, overwrite, rank == 0, held, log)
    # Every generator seeded, not only torch's: their states are saved in each checkpoint, and
    # unseeded ones would make identical runs write different bytes.
    torch.manual_seed(cfg.seed)
    random.seed(cfg.seed)
    np.random.seed(cfg.seed)
    data = load_task(cfg.task, **cfg.task_params)
    if state is None:
        src_tok, tgt_tok = build_tokenizers(cfg, data)
    else:
        src_tok, tgt_tok = (Tokenizer.from_dict(state["tokenizers"][k]) for k in ("src", "tgt"))
    try:
        stream = BatchStream(encode_pairs(data.train, src_tok, tgt_tok), cfg.batch_size,
                             cfg.seed, rank, world)
    except ValueError as err:  # e.g. a batch larger than the training split
        raise TrainingError(f"batch size {cfg.batch_size}: {err}") from None
    core = build_model(cfg.model, src_tok, tgt_tok).to(device)
    optimizer, scheduler = make_optimizer(core, cfg)
    run = _Run(cfg, run_dir, device, rank, world, data, src_tok, tgt_tok, core, core, optimizer,
               scheduler, stream, None, max(len(t) for _, t in stream.examples))
    if state is not None:
        load_into(run.ckpt_path, state, core, optimizer, scheduler, stream)
        restore_rng(state["rng"])
        run.step, run.tokens = int(state["step"]), int(state["tokens"])
        run.elapsed = read_elapsed(run_dir, run.step)
    if world > 1:
        run.model = nn.parallel.DistributedDataParallel(
            core, device_ids=[local_rank] if device.type == "cuda" else None)
    if cfg.compile:
        run.model = torch.compile(run.model)
    if run.main:
        write_atomic(run_dir / "config.json", json.dumps(cfg.to_json(), indent=2) + "\n")
        run.metrics = MetricsLog(run_dir)
        run.metrics.truncate_after(run.step)  # a fresh run (step 0) starts an empty log
    return run


def _step(run: _Run) -> Tuple[float, float]:
    """One optimiser step; returns ``(loss averaged over ranks, gradient norm)``."""
    t0 = time.perf_counter()
    batch = next(run.stream).to(run.device)
    denom = global_tokens(batch, run.device, run.world) / run.world
    loss = batch_loss(run.model, batch, run.cfg.label_smoothing, denom, run.device.type == "cuda")
    step_loss = loss.detach().clone()
    if run.world > 1:
        dist.all_reduce(step_loss)
        step_loss /= run.world
    if not torch.isfinite(step_loss):
        raise TrainingError(
            f"loss is {float(step_loss)} at step {run.step + 1} "
            f"(lr {run.scheduler.get_last_lr()[0]:.3g}); parameters were not updated. Lower --lr "
            f"or raise the warm-up; the last good checkpoint is "
            f"{run.ckpt_path if run.ckpt_path.exists() else 'not written yet'}")
    run.optimizer.zero_grad(set_to_none=True)
    loss.backward()  # bf16 autocast (the CUDA setting) needs no loss scaling
    grad_norm = nn.utils.clip_grad_norm_(run.core.parameters(), run.cfg.clip_norm)
    run.optimizer.step()
    run.scheduler.step()
    if run.device.type == "cuda":
        torch.cuda.synchronize()
    run.step += 1
    run.elapsed += time.perf_counter() - t0
    run.tokens += batch.num_tokens * run.world
    return float(step_loss), float(grad_norm)


def _log_and_validate(run: _Run, loss: float, grad_norm: float) -> None:
    cfg, step = run.cfg, run.step
    if run.metrics is not None and (step % 50 == 0 or step == cfg.steps):
        run.metrics.log(step, "train", loss=loss, lr=run.scheduler.get_last_lr()[0],
                        grad_norm=grad_norm, tokens_per_second=run.tokens / run.elapsed,
                        elapsed_seconds=run.elapsed)
    if step % cfg.eval_every == 0 and step < cfg.steps and run.main:
        val = evaluate(run.core, run.data.val[:cfg.val_examples], run.src_tok, run.tgt_tok,
                       run.device, cfg.eval_batch_size)
        run.metrics.log(step, "val", **{k: val[k] for k in ("loss", "exact_match",
                                                            "token_accuracy", "bleu")})
        run.model.train()


def _checkpoint(run: _Run) -> None:
    if run.main:
        save_checkpoint(run.ckpt_path, {
            "step": run.step, "model": run.core.state_dict(),
            "optimizer": run.optimizer.state_dict(), "scheduler": run.scheduler.state_dict(),
            "rng": capture_rng(), "data": run.stream.state_dict(), "config": run.cfg.to_json(),
            "tokenizers": {"src": run.src_tok.to_dict(), "tgt": run.tgt_tok.to_dict()},
            "tokens": run.tokens, "max_target_len": run.max_target_len})
        # Wall-clock time differs run to run: beside the checkpoint, not in it.
        write_atomic(run.run_dir / "timing.json",
                      json.dumps({"step": run.step, "elapsed_seconds": run.elapsed}) + "\n")
    if run.world > 1:
        dist.barrier()


def _finish(run: _Run, log) -> Dict[str, Any]:
    """Evaluate on the test split; write ``results.json`` and the last metrics."""
    cfg = run.cfg
    test = run.data.test[:cfg.test_examples] if cfg.test_examples else run.data.test
    ev = evaluate(run.core, test, run.src_tok, run.tgt_tok, run.device, cfg.eval_batch_size)
    results = {"task": cfg.task, "preset": cfg.preset, "steps": run.step,
               "train_seconds": round(run.elapsed, 3),
               "tokens_per_second": round(run.tokens / max(run.elapsed, 1e-9), 1),
               "test_exact_match": ev["exact_match"], "test_token_accuracy":
               ev["token_accuracy"], "test_bleu": ev["bleu"], "test_examples": len(test),
               "test_loss": ev["loss"], "device": str(run.device), "world_size": run.world,
               "torch_threads": torch.get_num_threads(), "torch": torch.__version__}
    run.metrics.log(run.step, "test", **{k: ev[k] for k in ("loss", "exact_match",
                                                            "token_accuracy", "bleu")})
    run.metrics.close()
    (run.run_dir / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    log(json.dumps(results, indent=2))
    return results


__all__ = ["CHECKPOINT", "CheckpointError", "TrainConfig", "TrainingError", "batch_loss",
           "build_model", "build_tokenizers", "distributed_env", "global_tokens", "inverse_sqrt",
           "load_run", "make_optimizer", "pick_device", "train"]
