"""The R14 benchmark harness on a tiny case: every column present, equality checked in eval."""
import dataclasses

import pytest

from gnn_attention.graph_models.bench import QUICK, gps_benchmark


@pytest.mark.slow  # ~10 s: three layers, warm-up, memory probes
def test_quick_benchmark_reports_every_column():
    cfg = dataclasses.replace(QUICK, attn_dropouts=(0.5,), reps=1)
    result = gps_benchmark(cfg)
    (row,) = result["rows"]
    assert row["max_abs_err_eval"] <= 1e-5
    for k in ("pyg", "ours", "ours_recompute"):
        assert row[f"{k}_fwd_bwd_s"] > 0 and f"{k}_peak_bytes" in row
    assert row["pairs"] <= row["padded_pairs"]
    assert result["threads"] == 2 and "load_average_before" in result
