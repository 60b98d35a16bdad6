"""``gnn-attention``: argument parsing only; every command calls the library.

:mod:`.app` builds the parser from the modules of :mod:`.commands` (one per subcommand, each with
``register(subparsers)``); a command raises :class:`~.errors.UserError` for a user's mistake, which
becomes one line on stderr and exit status 2.

:func:`main` imports :mod:`.app` (and with it torch, seconds on a cold start) inside its own
guard, so Ctrl-C while the libraries load is one line and exit status 130, as at any later moment.
"""
from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Optional

from gnn_attention.cli.errors import UserError

INTERRUPTED = 130  # 128 + SIGINT


def main(argv: Sequence[str] | None = None) -> int:
    """The console script: :func:`gnn_attention.cli.app.main` once the libraries are loaded."""
    try:
        from gnn_attention.cli.app import main as run
    except KeyboardInterrupt:
        print("gnn-attention: interrupted", file=sys.stderr)
        return INTERRUPTED
    return run(argv)


def build_parser():
    from gnn_attention.cli.app import build_parser as build

    return build()


__all__ = ["UserError", "build_parser", "main"]
