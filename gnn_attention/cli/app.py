"""The ``gnn-attention`` command line.

Each subcommand lives in its own module under :mod:`gnn_attention.cli.commands` and exposes
``register(subparsers)``, which adds its parser and sets ``func(args) -> int``.

Exit statuses: 0 done; 2 a user's mistake, one line ``gnn-attention COMMAND: error: MESSAGE`` on
stderr and no traceback (a :class:`UserError`, an ``OSError`` such as a full disk or a read-only
folder, a ``MemoryError``); 130 interrupted (Ctrl-C), one line ``gnn-attention COMMAND:
interrupted``; 1 a failed check the command reports itself (e.g. ``bench`` accuracy). Anything
else is a bug and keeps its traceback.
"""
from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys
from typing import Optional, Sequence

from gnn_attention.cli import commands
from gnn_attention.cli.errors import UserError, check_outputs, report

INTERRUPTED = 130  # 128 + SIGINT, what shells report for a process stopped by Ctrl-C


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gnn-attention",
                                     description="Attention as message passing on token graphs.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for info in sorted(pkgutil.iter_modules(commands.__path__), key=lambda m: m.name):
        importlib.import_module(f"{commands.__name__}.{info.name}").register(sub)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    name = "gnn-attention"
    try:
        args = build_parser().parse_args(argv)
        name = f"gnn-attention {args.command}"
        check_outputs(args)
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print(f"{name}: interrupted", file=sys.stderr)
        return INTERRUPTED
    except (UserError, OSError, MemoryError) as err:
        print(f"{name}: error: {report(err)}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
