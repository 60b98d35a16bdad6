"""Reading a run back from its checkpoint: every field checked before anything is built from it.

Notation: ``state`` = the verified payload of :func:`~gnn_attention.training.checkpoint.
load_checkpoint`; ``cfg`` = the :class:`~gnn_attention.training.setup.TrainConfig` it holds.

Why checks after the digest: the digest proves the file is what some writer saved, not that the
writer was this code. A checkpoint re-saved by hand (or by a buggy tool) with a consistent digest
can hold a config that no model accepts, tokenisers that do not match the embeddings, or
``d_model = 2**20`` (13 TB of parameters); each becomes one :class:`CheckpointError` here. The
model is first built on PyTorch's ``meta`` device, which allocates no storage, and its parameter
names and shapes are compared with the stored tensors; only then is the real model built.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Tuple

import torch
from torch import nn

from gnn_attention.training.checkpoint import CheckpointError, load_checkpoint
from gnn_attention.training.data import Tokenizer
from gnn_attention.training.setup import CHECKPOINT, TrainConfig, build_model, pick_device


def _first_line(err: Exception) -> str:
    return (str(err).splitlines() or [type(err).__name__])[0]


def read_state(path: Path) -> Tuple[TrainConfig, Tokenizer, Tokenizer, Dict[str, Any]]:
    """``(cfg, src_tok, tgt_tok, state)`` of the checkpoint at ``path``, validated.

    Raises:
        CheckpointError: unreadable or corrupted (see ``load_checkpoint``), or a config,
            tokeniser, step or model tensor that this code could not have written.
    """
    state = load_checkpoint(path)
    try:
        cfg = TrainConfig.from_json(state["config"])
        cfg.check()
        src_tok, tgt_tok = (Tokenizer.from_dict(state["tokenizers"][k]) for k in ("src", "tgt"))
    except (TypeError, ValueError, KeyError, AttributeError) as err:
        raise CheckpointError(f"checkpoint {path} holds an invalid run description "
                              f"({type(err).__name__}: {_first_line(err)})") from None
    if not isinstance(state["step"], int) or state["step"] < 0:
        raise CheckpointError(f"checkpoint {path} holds an invalid step {state['step']!r}")
    check_model_tensors(path, cfg, src_tok, tgt_tok, state["model"])
    return cfg, src_tok, tgt_tok, state


def check_model_tensors(path: Path, cfg: TrainConfig, src_tok: Tokenizer, tgt_tok: Tokenizer,
                        tensors: Any) -> None:
    """Raise :class:`CheckpointError` unless ``tensors`` has exactly the parameter names, shapes
    and floating dtypes of the model ``cfg`` describes (built on ``meta``: no memory used)."""
    try:
        with torch.device("meta"):
            expected = build_model(cfg.model, src_tok, tgt_tok).state_dict()
    except (TypeError, ValueError) as err:
        raise CheckpointError(f"checkpoint {path} holds an invalid model configuration "
                              f"({type(err).__name__}: {_first_line(err)})") from None
    if not isinstance(tensors, dict):
        raise CheckpointError(f"checkpoint {path}: model weights are not a state dict")
    missing = sorted(set(expected) - set(tensors))
    extra = sorted(set(tensors) - set(expected))
    if missing or extra:
        raise CheckpointError(f"checkpoint {path} does not match its model configuration: "
                              f"missing {missing[:3]}, unexpected {extra[:3]}")
    for name, want in expected.items():
        got = tensors[name]
        if not isinstance(got, torch.Tensor) or tuple(got.shape) != tuple(want.shape) \
                or not got.is_floating_point():
            shown = tuple(got.shape) if isinstance(got, torch.Tensor) else type(got).__name__
            raise CheckpointError(f"checkpoint {path} does not match its model configuration: "
                                  f"{name} is {shown}, the model needs {tuple(want.shape)}")


def load_into(path: Path, state: Dict[str, Any], model: nn.Module, optimizer=None,
              scheduler=None, stream=None) -> None:
    """Load the stored states into the run's objects; a mismatch torch or the stream detects
    (optimiser groups, scheduler or data-position fields) becomes a :class:`CheckpointError`."""
    try:
        model.load_state_dict(state["model"])
        if optimizer is not None:
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
            stream.load_state_dict(state["data"])
    except (TypeError, ValueError, KeyError, RuntimeError, IndexError) as err:
        raise CheckpointError(f"checkpoint {path} does not fit this run "
                              f"({type(err).__name__}: {_first_line(err)})") from None


def load_run(run_dir, device: str = "cpu"):
    """``(config, model, src_tok, tgt_tok, checkpoint)`` of a run directory, model in eval mode."""
    path = Path(run_dir) / CHECKPOINT
    cfg, src_tok, tgt_tok, state = read_state(path)
    model = build_model(cfg.model, src_tok, tgt_tok)
    load_into(path, state, model)
    return cfg, model.to(pick_device(device)).eval(), src_tok, tgt_tok, state
