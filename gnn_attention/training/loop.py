"""Training the graph Transformer: one loop for a single process and for torchrun (DDP).

Notation: B sequences per optimiser step (all processes together), W processes (``world``), step s
counted from 1; n_tok = non-padded target tokens (EOS included) of the global batch.

    loss_s  = (1 / n_tok) * sum_{tokens} CE_smoothed(logits, gold)          (label smoothing eps)
    lr_s    = lr * min(s / warmup, sqrt(warmup / s))                        (inverse-sqrt warm-up)
    theta  <- AdamW(theta, clip(grad loss_s, clip_norm))

Under DDP each rank sums its tokens' losses and divides by n_tok / W, so DDP's mean over ranks is
exactly the single-process loss of the whole batch (ranks hold different token counts).

Resume is exact: a checkpoint stores model, optimiser, scheduler, grad-scaler, every RNG state
and the data position, so an interrupted-and-resumed CPU run ends bitwise equal to a straight one.
"""
from __future__ import annotations

import json
import math
import os
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Dict, Optional, Tuple

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from gnn_attention.training.checkpoint import (CheckpointError, capture_rng, load_checkpoint, restore_rng, save_checkpoint)
from gnn_attention.training.data import (DEFAULT_TASK, IGNORE, Batch, BatchStream, Tokenizer, encode_pairs, load_task)
from gnn_attention.training.interrupt import StopOnSignal
from gnn_attention.training.metrics import MetricsLog, evaluate
from gnn_attention.training.presets import preset

CHECKPOINT = "checkpoint.pt"


class TrainingError(RuntimeError):
    """Training cannot go on (a non-finite loss, a run directory in the way)."""


@dataclass(frozen=True)
class TrainConfig:
    """Everything that determines a run; saved as ``config.json`` and inside each checkpoint."""

    task: str = DEFAULT_TASK
    preset: str = "tiny"
    task_params: Dict[str, Any] = field(default_factory=dict)
    model: Dict[str, Any] = field(default_factory=dict)
    steps: int = 0
    batch_size: int = 64
    lr: float = 1e-3
    warmup: int = 100
    label_smoothing: float = 0.1
    clip_norm: float = 1.0
    weight_decay: float = 0.01
    betas: Tuple[float, float] = (0.9, 0.98)
    eval_every: int = 1000
    checkpoint_every: int = 500
    eval_batch_size: int = 256
    val_examples: int = 256
    test_examples: int = 0  # 0 = the whole test split
    seed: int = 0
    device: str = "auto"
    compile: bool = False

    @classmethod
    def resolve(cls, task: str = DEFAULT_TASK, preset_name: str = "tiny",
                **overrides) -> "TrainConfig":
        """The preset's values with ``overrides`` (None = keep the preset's) applied."""
        p = preset(preset_name)
        train = {**p["train"], **{k: v for k, v in overrides.items() if v is not None}}
        model = {**p["model"], **train.pop("model", {})}
        cfg = cls(task=task, preset=preset_name, model=model, **train)
        cfg.check()
        return cfg

    def check(self) -> None:
        for name in ("steps", "batch_size", "warmup", "eval_every", "checkpoint_every"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not self.lr > 0 or not 0 <= self.label_smoothing < 1 or not self.clip_norm > 0:
            raise ValueError("need lr > 0, 0 <= label_smoothing < 1 and clip_norm > 0")
        if self.device not in ("auto", "cpu", "cuda"):
            raise ValueError(f"device must be auto, cpu or cuda, got {self.device!r}")

    def to_json(self) -> Dict[str, Any]:
        return json.loads(json.dumps(asdict(self)))

    @classmethod
    def from_json(cls, data: Dict[str, Any]) -> "TrainConfig":
        return cls(**{**data, "betas": tuple(data["betas"])})


# ---------------------------------------------------------------------------------------------
# Building blocks (also used by the tests and experiments)


def pick_device(name: str) -> torch.device:
    if name == "cuda" and not torch.cuda.is_available():
        raise TrainingError("--device cuda was asked for but CUDA is not available")
    return torch.device("cuda" if name == "cuda" or (name == "auto" and torch.cuda.is_available())
                        else "cpu")


def build_tokenizers(cfg: TrainConfig, data) -> Tuple[Tokenizer, Tokenizer]:
    return (Tokenizer.build([s for s, _ in data.train], data.spec.src_level),
            Tokenizer.build([t for _, t in data.train], data.spec.tgt_level))


def build_model(model_cfg: Dict[str, Any], src_tok: Tokenizer, tgt_tok: Tokenizer) -> nn.Module:
    """The graph :class:`~gnn_attention.models.Seq2SeqModel` for these vocabularies."""
    from gnn_attention.models import Seq2SeqConfig, Seq2SeqModel

    return Seq2SeqModel(Seq2SeqConfig(src_vocab_size=len(src_tok), tgt_vocab_size=len(tgt_tok),
                                      **model_cfg))


def inverse_sqrt(warmup: int):
    """``lr_s / lr = min(s / warmup, sqrt(warmup / s))`` with s = optimiser steps taken + 1."""
    return lambda k: min((k + 1) / warmup, math.sqrt(warmup / (k + 1)))


def make_optimizer(model: nn.Module, cfg: TrainConfig):
    # No weight decay on biases and LayerNorm gains (1-D tensors): decay would pull them to zero.
    decay = [p for p in model.parameters() if p.dim() > 1]
    rest = [p for p in model.parameters() if p.dim() <= 1]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                             {"params": rest, "weight_decay": 0.0}], lr=cfg.lr, betas=cfg.betas)
    return opt, torch.optim.lr_scheduler.LambdaLR(opt, inverse_sqrt(cfg.warmup))


def batch_loss(model: nn.Module, batch: Batch, label_smoothing: float, denom: float,
               autocast: bool = False) -> torch.Tensor:
    """Summed label-smoothed cross-entropy of the batch's target tokens divided by ``denom``."""
    with torch.autocast("cuda", dtype=torch.bfloat16, enabled=autocast):
        logits = model(batch.src, batch.src_lengths, batch.tgt_in, batch.tgt_lengths)
    if logits.dtype not in (torch.float32, torch.float64):  # bf16 under autocast: score in fp32
        logits = logits.float()
    return F.cross_entropy(logits.flatten(0, 1), batch.tgt_out.flatten(),
                           ignore_index=IGNORE, label_smoothing=label_smoothing,
                           reduction="sum") / denom


def global_tokens(batch: Batch, device, world: int) -> float:
    """n_tok of the whole step (summed over ranks under DDP)."""
    n = torch.tensor(float((batch.tgt_out != IGNORE).sum()), device=device)
    if world > 1:
        dist.all_reduce(n)
    return float(n)


def distributed_env() -> Tuple[int, int, int]:
    """(rank, world, local rank) from torchrun's environment (0, 1, 0 without torchrun)."""
    return (int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)),
            int(os.environ.get("LOCAL_RANK", 0)))


# ---------------------------------------------------------------------------------------------
# The loop


def train(cfg: TrainConfig, run_dir, resume: bool = False, stop_after: Optional[int] = None,
          progress: bool = True, log=print, overwrite: bool = False) -> Dict[str, Any]:
    """Train ``cfg`` in ``run_dir`` and return the results (also written to ``results.json``).

    ``stop_after`` ends the run after that step with a checkpoint, as an interruption would
    (tests use it to check that resuming is exact); the results are then ``{"stopped_at": s}``.
    ``overwrite`` starts afresh in a directory that holds a checkpoint (replaced at the first save).
    """
    cfg.check()
    run_dir = Path(run_dir)
    rank, world, local_rank = distributed_env()
    device = pick_device(cfg.device)
    if world > 1:
        if device.type == "cuda":
            device = torch.device("cuda", local_rank)
            torch.cuda.set_device(device)
        if not dist.is_initialized():
            dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    main = rank == 0
    ckpt_path = run_dir / CHECKPOINT
    state = None
    if resume:
        state = load_checkpoint(ckpt_path)  # fails before anything is written
        saved = TrainConfig.from_json(state["config"])
        if replace(saved, steps=cfg.steps, device=cfg.device) != cfg:
            raise TrainingError(f"--resume with a different configuration than {ckpt_path} "
                                f"(only --steps and --device may change)")
    elif ckpt_path.exists() and not overwrite:
        raise TrainingError(f"{run_dir} already holds a checkpoint; pass --resume to continue it "
                            f"or choose another --run-dir")
    if main:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "config.json").write_text(json.dumps(cfg.to_json(), indent=2) + "\n")

    torch.manual_seed(cfg.seed)
    data = load_task(cfg.task, **cfg.task_params)
    if state is None:
        src_tok, tgt_tok = build_tokenizers(cfg, data)
    else:
        src_tok, tgt_tok = (Tokenizer.from_dict(state["tokenizers"][k]) for k in ("src", "tgt"))
    core = build_model(cfg.model, src_tok, tgt_tok).to(device)
    optimizer, scheduler = make_optimizer(core, cfg)
    scaler = torch.amp.GradScaler("cuda", enabled=False)  # bf16 autocast needs no loss scaling
    stream = BatchStream(encode_pairs(data.train, src_tok, tgt_tok), cfg.batch_size, cfg.seed,
                         rank, world)
    max_target_len = max(len(t) for _, t in stream.examples)
    step = 0
    if state is not None:
        core.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        scaler.load_state_dict(state["scaler"])
        stream.load_state_dict(state["data"])
        restore_rng(state["rng"])
        step = int(state["step"])
    model = core
    if world > 1:
        model = nn.parallel.DistributedDataParallel(
            core, device_ids=[local_rank] if device.type == "cuda" else None)
    if cfg.compile:
        model = torch.compile(model)
    autocast = device.type == "cuda"
    metrics = MetricsLog(run_dir) if main else None
    if metrics is not None:
        metrics.truncate_after(step)  # a fresh run (step 0) starts an empty log
    elapsed, tokens = (float(state["elapsed"]), int(state["tokens"])) if state else (0.0, 0)

    def checkpoint():
        if main:
            save_checkpoint(ckpt_path, {
                "step": step, "model": core.state_dict(), "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict(),
                "rng": capture_rng(), "data": stream.state_dict(), "config": cfg.to_json(),
                "tokenizers": {"src": src_tok.to_dict(), "tgt": tgt_tok.to_dict()},
                "elapsed": elapsed, "tokens": tokens, "max_target_len": max_target_len})
        if world > 1:
            dist.barrier()

    last = cfg.steps if stop_after is None else min(stop_after, cfg.steps)
    bar = None
    if progress and main:
        from tqdm import tqdm
        bar = tqdm(total=cfg.steps, initial=step, desc=f"train {cfg.task}", dynamic_ncols=True)
    model.train()
    # A signal now only sets a flag: the step in flight finishes, a checkpoint is saved, we return.
    with StopOnSignal() as stop:
        while step < last:
            t0 = time.perf_counter()
            batch = next(stream).to(device)
            denom = global_tokens(batch, device, world) / world
            loss = batch_loss(model, batch, cfg.label_smoothing, denom, autocast)
            step_loss = loss.detach().clone()
            if world > 1:
                dist.all_reduce(step_loss)
                step_loss /= world
            if not torch.isfinite(step_loss):
                raise TrainingError(
                    f"loss is {float(step_loss)} at step {step + 1} "
                    f"(lr {scheduler.get_last_lr()[0]:.3g}); parameters were not updated. Lower --lr "
                    f"or raise the warm-up; the last good "
                    f"checkpoint is {ckpt_path if ckpt_path.exists() else 'not written yet'}")
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.unscale_(optimizer)
            grad_norm = nn.utils.clip_grad_norm_(core.parameters(), cfg.clip_norm)
            scaler.step(optimizer)
            scaler.update()
            scheduler.step()
            if device.type == "cuda":
                torch.cuda.synchronize()
            step += 1
            n_tok = batch.num_tokens * world
            elapsed, tokens = elapsed + time.perf_counter() - t0, tokens + n_tok
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{float(step_loss):.3f}", tok_s=f"{tokens / elapsed:.0f}")
            if metrics is not None and (step % 50 == 0 or step == cfg.steps):
                metrics.log(step, "train", loss=float(step_loss), lr=scheduler.get_last_lr()[0],
                            grad_norm=float(grad_norm), tokens_per_second=tokens / elapsed,
                            elapsed_seconds=elapsed)
            if step % cfg.eval_every == 0 and step < cfg.steps and main:
                val = evaluate(core, data.val[:cfg.val_examples], src_tok, tgt_tok, device,
                               cfg.eval_batch_size)
                metrics.log(step, "val", **{k: val[k] for k in ("loss", "exact_match",
                                                                "token_accuracy", "bleu")})
                model.train()
            interrupted = stop.requested(world, device)
            if step % cfg.checkpoint_every == 0 or step == last or interrupted:
                checkpoint()
            if interrupted:
                log(f"stopped by {stop.received or 'a signal on another rank'} after step {step}; "
                    f"checkpoint saved to {ckpt_path}: continue with --resume")
                break
    if bar is not None:
        bar.close()
    if step < cfg.steps:
        return {"stopped_at": step}
    results: Dict[str, Any] = {}
    if main:
        test = data.test[:cfg.test_examples] if cfg.test_examples else data.test
        ev = evaluate(core, test, src_tok, tgt_tok, device, cfg.eval_batch_size)
        results = {"task": cfg.task, "preset": cfg.preset, "steps": step,
                   "train_seconds": round(elapsed, 3),
                   "tokens_per_second": round(tokens / max(elapsed, 1e-9), 1),
                   "test_exact_match": ev["exact_match"], "test_token_accuracy":
                   ev["token_accuracy"], "test_bleu": ev["bleu"], "test_examples": len(test),
                   "test_loss": ev["loss"], "device": str(device), "world_size": world,
                   "torch_threads": torch.get_num_threads(), "torch": torch.__version__}
        metrics.log(step, "test", **{k: ev[k] for k in ("loss", "exact_match", "token_accuracy",
                                                        "bleu")})
        metrics.close()
        (run_dir / "results.json").write_text(json.dumps(results, indent=2) + "\n")
        log(json.dumps(results, indent=2))
    return results


def load_run(run_dir, device: str = "cpu"):
    """``(config, model, src_tok, tgt_tok, checkpoint)`` of a run directory, model in eval mode."""
    state = load_checkpoint(Path(run_dir) / CHECKPOINT, map_location="cpu")
    cfg = TrainConfig.from_json(state["config"])
    src_tok, tgt_tok = (Tokenizer.from_dict(state["tokenizers"][k]) for k in ("src", "tgt"))
    model = build_model(cfg.model, src_tok, tgt_tok)
    model.load_state_dict(state["model"])
    return cfg, model.to(pick_device(device)).eval(), src_tok, tgt_tok, state


__all__ = ["CHECKPOINT", "CheckpointError", "TrainConfig", "TrainingError", "batch_loss",
           "build_model", "build_tokenizers", "distributed_env", "global_tokens", "inverse_sqrt",
           "load_run", "make_optimizer", "pick_device", "train"]
