"""Shared test configuration: hypothesis profiles for the property-based (fuzz) tests.

Profiles (pick one with ``pytest --hypothesis-profile NAME`` or the environment variable
``GNN_ATTENTION_HYPOTHESIS_PROFILE=NAME``; the command-line option wins):

  * ``default``: every property test draws ``FUZZ_EXAMPLES_DEFAULT`` cases, so the fuzz suite
    (``tests/properties/test_fuzz.py``) generates >= 200 cases and runs in well under two minutes on 2 cores.
  * ``long``: ``FUZZ_EXAMPLES_LONG`` cases per property test (>= 10,000 across the suite); minutes.
  * ``ci``: like ``default`` but derandomised (the same cases every run), for bisecting.

No deadline in any profile: the machines these tests run on are shared, and a slow case is not a
wrong case. Shrinking stays on, so a failure is reported as a small reproducible example.
"""
from __future__ import annotations

import os

import pytest
import torch
from hypothesis import HealthCheck, settings

FUZZ_EXAMPLES_DEFAULT = 60
FUZZ_EXAMPLES_LONG = 2100

_common = dict(deadline=None, print_blob=True,
               suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
settings.register_profile("default", max_examples=FUZZ_EXAMPLES_DEFAULT, **_common)
settings.register_profile("ci", max_examples=FUZZ_EXAMPLES_DEFAULT, derandomize=True, **_common)
settings.register_profile("long", max_examples=FUZZ_EXAMPLES_LONG, **_common)
# The command-line option is applied by hypothesis' pytest plugin after this file is imported,
# so it overrides the environment variable.
settings.load_profile(os.environ.get("GNN_ATTENTION_HYPOTHESIS_PROFILE", "default"))


@pytest.fixture
def one_thread():
    """One torch thread for the duration of a test: tiny tensors gain nothing from more threads
    and only pay their synchronisation (large when the cores are shared)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def require_minilm():
    """Skip the calling test (or fixture) unless the all-MiniLM-L6-v2 weights and ``tokenizers``
    are installed; return the weights' directory."""
    from gnn_attention.pretrained import bert as pretrained

    try:
        directory = pretrained.minilm_directory()
    except FileNotFoundError:
        pytest.skip(f"all-MiniLM-L6-v2 weights not installed ({pretrained.MINILM_INSTALL})")
    pytest.importorskip("tokenizers", reason="tokenizers not installed "
                                             "(pip install 'gnn-attention[pretrained]')")
    return directory


def require_browser():
    """Skip the calling test unless Debian's Chromium and playwright are installed; return
    ``(playwright.sync_api, path of chromium)`` for ``p.chromium.launch(executable_path=...)``."""
    import shutil

    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("needs Debian's chromium: apt-get install -y chromium")
    sync_api = pytest.importorskip("playwright.sync_api",
                                   reason="needs playwright: pip install playwright")
    return sync_api, chromium
