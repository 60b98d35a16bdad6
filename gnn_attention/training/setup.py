"""What a training run is made of: its configuration and the pieces the loop assembles.

Notation: B sentences per batch, n_tok target tokens of a step (summed over ranks under DDP).

``TrainConfig`` determines a run and is saved as ``config.json`` and inside every checkpoint. The
building blocks (device, tokenisers, model, optimiser and schedule, the loss) are functions so that
tests and experiments assemble the same run as :func:`gnn_attention.training.loop.train`.
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass, field
from typing import Any, Dict, Tuple

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from gnn_attention.training.data import DEFAULT_TASK, IGNORE, Batch, Tokenizer
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
