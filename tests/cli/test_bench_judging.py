"""`bench --quick` judges only the targets its sizes define (gnn_attention.tools.bench_report)."""
from gnn_attention.tools.bench_report import LARGE_T, format_ratios, ratios


def row(pattern, T, method, fwd, fb=None, peak=None):
    return {"pattern": pattern, "T": T, "method": method, "fwd_s": fwd, "fwdbwd_s": fb,
            "peak_extra_bytes": peak, "pre_s": None, "E": 10, "H": 2, "D": 4}


def rows_at(T):
    """R3 = 0.5 (target <= 0.20) and R5 = 3 (target <= 2): both would be missed."""
    return [row("P3", T, "library", 0.5, 0.5, 300), row("P3", T, "sdpa", 1.0, 1.0),
            row("P3", T, "sdpa_masked", 1.0, 1.0, 100)]


def lines(T):
    rs = ratios({"rows": rows_at(T), "sgemm_gflops": 1.0})
    text = format_ratios(rs).splitlines()
    return {r["id"]: r for r in rs}, {line.split()[0]: line for line in text[1:]
                                      if line[:1] == "R"}


def test_large_T_targets_not_judged_below_their_T():
    rs, shown = lines(256)
    for rid in ("R3", "R3b", "R5"):
        assert rs[rid]["value"] is not None and rs[rid]["judged"] is False
        assert "MISSED" not in shown[rid] and " n/a " in shown[rid], shown[rid]
    assert "not judged" in format_ratios(list(rs.values()))


def test_large_T_targets_judged_at_their_T():
    rs, shown = lines(LARGE_T)
    for rid in ("R3", "R3b", "R5"):
        assert rs[rid]["judged"] is True and "MISSED" in shown[rid], shown[rid]


def test_a_smoke_run_judges_no_target():
    """`bench --quick` runs tiny sizes: even targets set for every T are not judged there."""
    rows = rows_at(256) + [row("P1", 256, "library", 3.0, 3.0), row("P1", 256, "sdpa", 1.0, 1.0)]
    rs = ratios({"rows": rows, "sgemm_gflops": 1.0}, smoke=True)
    text = format_ratios(rs)
    assert "MISSED" not in text and "met" not in text.split()
    r1 = next(r for r in rs if r["id"] == "R1")
    assert r1["value"] == 3.0 and r1["met"] is False and r1["judged"] is False
    assert "smoke run" in r1["detail"]
    assert "MISSED" in format_ratios(ratios({"rows": rows, "sgemm_gflops": 1.0}))
