"""Subcommands of ``gnn-attention``: one module each, discovered by :mod:`gnn_attention.cli`."""
