"""``gnn-attention``: argument parsing only; every command calls the library.

:mod:`.app` builds the parser from the modules of :mod:`.commands` (one per subcommand, each with
``register(subparsers)``); a command raises :class:`~.errors.UserError` for a user's mistake, which
becomes one line on stderr and exit status 2.
"""
from gnn_attention.cli.app import build_parser, main
from gnn_attention.cli.errors import UserError

__all__ = ["UserError", "build_parser", "main"]
