"""Stop training cleanly on SIGINT / SIGTERM: finish the step in flight, checkpoint, return.

A signal only sets a flag; the training loop reads it between optimiser steps, so the checkpoint
it then writes is a consistent state (never half an update) and ``--resume`` continues exactly.
Under DDP the flag is all-reduced so every rank stops after the same step.
"""
from __future__ import annotations

import signal
import threading
from typing import Optional

import torch
import torch.distributed as dist

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class StopOnSignal:
    """Context manager: while active, SIGINT/SIGTERM request a stop instead of killing the process.

    ``requested(world, device)`` says whether any rank received a signal (collective under DDP:
    every rank must call it at the same step). Previous handlers are restored on exit. Outside the
    main thread (where Python cannot install handlers) it does nothing.
    """

    def __init__(self) -> None:
        self.received: Optional[str] = None
        self._previous = {}

    def _handle(self, signum, frame) -> None:
        self.received = signal.Signals(signum).name

    def __enter__(self) -> "StopOnSignal":
        if threading.current_thread() is threading.main_thread():
            for sig in SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    def requested(self, world: int = 1, device: Optional[torch.device] = None) -> bool:
        if world == 1:
            return self.received is not None
        flag = torch.tensor([self.received is not None], dtype=torch.int32, device=device)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        return bool(flag.item())
