"""R11 rows on tiny sizes: the compiled conv runs without a graph break and equals eager; the
Transformer step row counts zero breaks for both mask kinds."""
from gnn_attention.tools import bench_compile


def test_conv_row_is_exact_and_unbroken():
    row = bench_compile.conv_case(8, "aot_eager", B=2, C=8, H=2, reps=1)
    assert row["graph_breaks"] == 0 and row["max_abs_diff"] <= 1e-6
    assert row["ratio"] == row["compiled_s"] / row["eager_s"] > 0


def test_interleaved_returns_both_medians():
    calls = []
    te, tc = bench_compile.interleaved(lambda: calls.append("e"), lambda: calls.append("c"), 3)
    assert calls == ["e", "c"] * 5 and te >= 0 and tc >= 0
