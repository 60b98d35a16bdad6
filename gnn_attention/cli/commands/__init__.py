"""One module per ``gnn-attention`` subcommand, each exposing ``register(subparsers)``."""
