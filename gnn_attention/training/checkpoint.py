"""Atomic, verifiable training checkpoints that load with ``torch.load(weights_only=True)``.

A checkpoint is one ``torch.save`` file holding only tensors and plain Python data (dicts, lists,
tuples, str, int, float, bool, None): model/optimiser/scheduler state dicts, RNG states,
the data position, the resolved config and the tokenisers as JSON-able dicts. Nothing is pickled
by class, so loading never executes code from the file.

Notation: ``payload`` = the dict the trainer saves; ``digest`` = SHA-256 over every tensor's dtype,
shape and bytes and every plain value, in sorted-key order.

Why a digest: a truncated zip archive fails to open, but a flipped byte inside tensor data loads
silently with wrong numbers (checked with torch 2.13); the digest turns both into a clear error.
Why tmp + ``os.replace``: the rename is atomic on POSIX, so a crash or a failed write mid-save
leaves the previous checkpoint untouched: the last good checkpoint is never replaced by a bad one.
Why ``tempfile.mkstemp`` for the temporary file (``<name>.<random>.tmp``, created with
``O_CREAT | O_EXCL | O_NOFOLLOW``): a fixed name such as ``checkpoint.pt.tmp`` is shared by two
writers, and a symlink planted there would be followed and its target overwritten; an exclusive,
unique name is never an existing file or link.
"""
from __future__ import annotations

import hashlib
import os
import random
import tempfile
from pathlib import Path
from typing import Any, Dict, Union

import numpy as np
import torch

FORMAT = 1
REQUIRED = ("format", "digest", "step", "model", "optimizer", "scheduler", "rng",
            "data", "config", "tokenizers")


class CheckpointError(RuntimeError):
    """A checkpoint that is missing, truncated, corrupted or not one of ours (names the file)."""


def digest(obj: Any) -> str:
    """SHA-256 of nested dicts/lists/tuples/tensors/plain values (dict order does not matter)."""
    h = hashlib.sha256()
    _feed(h, obj)
    return h.hexdigest()


def _feed(h, obj: Any) -> None:
    if isinstance(obj, torch.Tensor):
        t = obj.detach().to("cpu").contiguous()
        h.update(f"T{t.dtype}{tuple(t.shape)}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    elif isinstance(obj, dict):
        h.update(f"D{len(obj)}".encode())
        for key in sorted(obj, key=repr):
            _feed(h, key)
            _feed(h, obj[key])
    elif isinstance(obj, (list, tuple)):
        h.update(f"{'L' if isinstance(obj, list) else 'U'}{len(obj)}".encode())
        for item in obj:
            _feed(h, item)
    elif obj is None or isinstance(obj, (bool, int, float, str)):
        h.update(f"{type(obj).__name__}:{obj!r};".encode())
    else:
        raise TypeError(f"checkpoint payload may only hold tensors and plain data, got "
                        f"{type(obj).__name__}")


def save_checkpoint(path: Union[str, Path], payload: Dict[str, Any]) -> Path:
    """Write ``payload`` (plus ``format`` and ``digest``) to ``path`` atomically.

    The file is written to a new ``<path>.<random>.tmp`` in the same directory (exclusive
    creation, links never followed), flushed to disk, then renamed over ``path``; on any failure
    the temporary file is removed and ``path`` keeps its old content.
    """
    path = Path(path)
    body = {k: v for k, v in payload.items() if k not in ("format", "digest")}
    body["format"] = FORMAT
    body["digest"] = digest(body)
    fd, tmp_name = tempfile.mkstemp(prefix=f"{path.name}.", suffix=".tmp", dir=path.parent)
    tmp = Path(tmp_name)
    try:
        os.fchmod(fd, 0o644)  # mkstemp's 0600 would hide the checkpoint from other readers
        with os.fdopen(fd, "wb") as f:
            torch.save(body, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def load_checkpoint(path: Union[str, Path], map_location="cpu") -> Dict[str, Any]:
    """Load and verify a checkpoint written by :func:`save_checkpoint`.

    Raises:
        CheckpointError: the file is missing, is not a readable torch archive (e.g. truncated),
            holds non-plain objects, lacks required entries or fails its digest.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}")
    try:
        body = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # torch raises RuntimeError, UnicodeDecodeError, UnpicklingError...
        # torch's first sentence names what failed; its further advice (e.g. to retry with
        # weights_only=False) does not apply to a file that is simply damaged.
        first = (str(err).splitlines() or [""])[0].split(". ")[0].rstrip(".")
        raise CheckpointError(f"checkpoint {path} is truncated or corrupted and cannot be read "
                              f"({type(err).__name__}: {first})") from err
    if not isinstance(body, dict) or body.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a gnn-attention training checkpoint "
                              f"(format {FORMAT})")
    missing = [k for k in REQUIRED if k not in body]
    if missing:
        raise CheckpointError(f"checkpoint {path} lacks {missing}")
    stored = body.pop("digest")
    if digest(body) != stored:
        raise CheckpointError(f"checkpoint {path} is corrupted: its content does not match the "
                              f"digest written with it")
    return body


# ---------------------------------------------------------------------------------------------
# Random number generator states as plain data


def capture_rng() -> Dict[str, Any]:
    """Python, NumPy and torch (CPU and every CUDA device) generator states."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    state = {"python": random.getstate(),
             "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss),
                       float(gauss)],
             "torch": torch.get_rng_state(), "cuda": []}
    if torch.cuda.is_available():
        state["cuda"] = list(torch.cuda.get_rng_state_all())
    return state


def restore_rng(state: Dict[str, Any]) -> None:
    """Inverse of :func:`capture_rng`."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"].cpu())
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])
