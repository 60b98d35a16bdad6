"""Harnesses as functions (no argument parsing): the attention benchmark (:mod:`.bench`, with the
ratios of :mod:`.bench_report`) and the equivalence sweep against PyTorch (:mod:`.equivalence`).

May import everything below the command line.
"""
