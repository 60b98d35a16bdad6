"""``gnn-attention bench-entry``: every part runs on tiny sizes, writes its rows, and a smoke run
judges no target (the targets are defined at the protocol sizes); mistakes get one line, exit 2."""
import json

import pytest

from gnn_attention.cli.app import main
from gnn_attention.tools import bench_rss


def test_quick_mha_and_graphs_write_rows_and_judge_nothing(tmp_path, capsys):
    path = tmp_path / "entry.json"
    assert main(["bench-entry", "--quick", "--parts", "mha", "graphs", "--threads", "1",
                 "--json", str(path)]) == 0
    out = capsys.readouterr().out
    assert "MISSED" not in out and " met" not in out
    assert out.count("(smoke run: not judged)") == 2
    res = json.loads(path.read_text())
    assert res["quick"] and res["mha"]["met"] is None and res["graphs"]["met"] is None
    rows = res["mha"]["result"]["rows"]
    assert {(r["case"], r["mode"]) for r in rows} == {
        (c, m) for c in ("none", "key_padding", "causal", "float_mask") for m in ("eval", "train")}
    assert all(r["max_abs_diff"] <= 1e-5 for r in rows)
    built = res["graphs"]["result"]["rows"]
    assert {r["pattern"] for r in built} == {"full", "causal", "window", "cross"}
    assert not any(r["materialized_after_build"] for r in built)


@pytest.mark.slow  # compiles four models and starts two Python processes
def test_quick_compile_and_rss(tmp_path, capsys):
    path = tmp_path / "entry.json"
    assert main(["bench-entry", "--quick", "--parts", "compile", "rss", "--json", str(path)]) == 0
    res = json.loads(path.read_text())
    rows = res["compile"]["result"]
    assert all(r["graph_breaks"] == 0 and r["max_abs_diff"] <= 1e-5 for r in rows)
    assert {r["case"].split(",")[0] for r in rows} >= {"Transformer train step"}
    rss = res["rss"]["result"]
    assert rss["conv"]["materialized"] is False and rss["sdpa"]["extra_bytes"] > 0


@pytest.mark.slow
def test_peak_rss_counts_what_the_call_allocates():
    """SDPA's measured need at T=4096 covers its q, k, v and output (4 [1, H, T, D] tensors)."""
    r = bench_rss.measure("sdpa", 4096, 4, 32, threads=1)
    four = 4 * 4096 * 4 * 32 * 4
    assert four <= r["extra_bytes"] < 2 * four


@pytest.mark.parametrize("argv", [["--T", "4"], ["--reps", "0"], ["--threads", "0"]])
def test_bad_sizes_are_one_line(capsys, argv):
    assert main(["bench-entry", "--quick", "--parts", "mha", *argv]) == 2
    err = capsys.readouterr().err
    assert err == ("gnn-attention bench-entry: error: --reps and --threads must be >= 1 and every "
                   "--T >= 8\n")
