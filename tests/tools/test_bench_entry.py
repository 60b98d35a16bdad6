"""The entry-point benchmark (R10) on tiny sizes: every case runs, is checked against torch and
lands in the table; the masks it times are the ones it says."""
import pytest
import torch

from gnn_attention.tools import bench_entry


def test_every_case_and_mode_is_measured_and_exact():
    res = bench_entry.entry_point_ratios(T_values=(8,), B=2, C=12, H=3, reps=1, threads=1)
    rows = res["rows"]
    assert len(rows) == len(bench_entry.CASES) * len(bench_entry.MODES)
    assert {r["case"] for r in rows} == set(bench_entry.CASES)
    assert all(r["max_abs_diff"] <= 1e-5 and r["ratio"] > 0 for r in rows)
    assert res["threads"] == 1 and res["torch"] == torch.__version__
    table = bench_entry.table(res)
    assert table.count("\n") == 2 + len(bench_entry.CASES) * len(bench_entry.MODES) - 1
    assert "| T=8 |" in table


def test_case_masks():
    pad = bench_entry.case_inputs("key_padding", 4, 10)["key_padding_mask"]
    n = (~pad).sum(1)
    assert torch.equal(pad, torch.arange(10) >= n.view(4, 1)) and (n >= 5).all()  # right padding
    causal = bench_entry.case_inputs("causal", 4, 10)
    assert causal["is_causal"] and torch.isinf(causal["attn_mask"]).sum() == 45
    assert torch.isfinite(bench_entry.case_inputs("float_mask", 4, 10)["attn_mask"]).all()
    with pytest.raises(ValueError, match="case must be"):
        bench_entry.case_inputs("window", 4, 10)
