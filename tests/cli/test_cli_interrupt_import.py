"""Ctrl-C while ``gnn-attention`` is still importing torch: one line, exit status 130.

``import gnn_attention`` loads no torch (its names are imported on first use), so the console
script is inside :func:`gnn_attention.cli.main`'s guard before the slow imports start. The test
sends SIGINT once the child has mapped libtorch (the import is under way) and accepts the line of
either guard (the import's, or the command's if the import won the race).
"""
import os
import signal
import subprocess
import sys
import time

import pytest


def test_importing_the_package_loads_no_torch():
    code = "import sys, gnn_attention, gnn_attention.cli; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def _torch_mapped(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/maps") as f:
            return "libtorch" in f.read()
    except FileNotFoundError:
        return False


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/PID/maps")
def test_ctrl_c_during_the_torch_import_is_one_line():
    child = subprocess.Popen([sys.executable, "-m", "gnn_attention", "bench", "--quick"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not _torch_mapped(child.pid) and child.poll() is None and time.monotonic() < deadline:
        time.sleep(0.002)
    os.kill(child.pid, signal.SIGINT)
    _, err = child.communicate(timeout=120)
    assert child.returncode == 130, err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0] in ("gnn-attention: interrupted",
                                            "gnn-attention bench: interrupted"), err
