"""Deterministic mode: the same inputs give bitwise-identical outputs and gradients, run to run.

Notation: E edges, H heads; "bits" = the exact floating-point result, not a tolerance.

Where run-to-run differences come from in attention as message passing:
  * sums whose order is not fixed: ``index_add`` / scatter-sum of the E x H messages into their
    targets, and the sparse products of the CSR kernel. On CPU these run in a fixed order for a
    fixed thread count (measured: tests/training/test_determinism.py). On CUDA they use atomic adds, whose
    order changes between runs; ``torch.use_deterministic_algorithms(True)`` makes PyTorch switch
    ``index_add`` to a sorted, deterministic implementation, and raise for an op that has none
    (so a silent difference becomes a loud error);
  * cuBLAS workspaces (GPU matmuls): fixed by ``CUBLAS_WORKSPACE_CONFIG=:4096:8``, which must be
    set before the first cuBLAS call of the process;
  * random numbers (attention dropout): fixed by seeding every generator.
The maximum per target (segment softmax) is order-independent and needs nothing.

What is *not* promised: identical bits across thread counts, devices, PyTorch versions or kernel
backends (each backend sums in its own order; they agree to within the tolerances in the tests).
"""
from __future__ import annotations

import os
import random
from contextlib import contextmanager
from typing import Iterator, Optional

import torch

CUBLAS_ENV = "CUBLAS_WORKSPACE_CONFIG"
CUBLAS_DETERMINISTIC = ":4096:8"


@contextmanager
def deterministic(seed: Optional[int] = 0, warn_only: bool = False) -> Iterator[None]:
    """Run a block deterministically; every global setting it changes is restored on exit.

    Inside the block: ``torch.use_deterministic_algorithms(True, warn_only=warn_only)``, cuDNN
    deterministic and not benchmarking, ``CUBLAS_WORKSPACE_CONFIG`` set (if unset), and, unless
    ``seed`` is None, Python's, PyTorch's CPU and CUDA generators seeded with ``seed``.
    ``warn_only=True`` warns instead of raising for an operation with no deterministic version.

    Example::

        with deterministic(seed=0):
            out = layer(x, graph)
            out.sum().backward()
    """
    saved = (torch.are_deterministic_algorithms_enabled(),
             torch.is_deterministic_algorithms_warn_only_enabled(),
             torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark,
             os.environ.get(CUBLAS_ENV))
    os.environ.setdefault(CUBLAS_ENV, CUBLAS_DETERMINISTIC)
    torch.use_deterministic_algorithms(True, warn_only=warn_only)
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
    if seed is not None:
        random.seed(seed)
        torch.manual_seed(seed)  # seeds the CUDA generators as well
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(saved[0], warn_only=saved[1])
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = saved[2], saved[3]
        if saved[4] is None:
            os.environ.pop(CUBLAS_ENV, None)
        else:
            os.environ[CUBLAS_ENV] = saved[4]
