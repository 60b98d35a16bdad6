"""The benchmark's smoke run (every pattern: correct output, expected kernel), its ratio logic on
hand-made rows, and the command line."""
import json
from dataclasses import replace

import pytest

from gnn_attention.cli.app import main
from gnn_attention.tools.bench_report import format_ratios, ratios
from gnn_attention.tools import bench

EXPECTED_KERNEL = {"P1": "dense", "P2": "dense", "P3": "tiled", "P4": "tiled", "P5": "tiled",
                   "P6": "dense", "P7": "dense", "P8": "csr", "P9": "dense"}


def test_smoke_every_pattern_correct_with_expected_kernel():
    cfg = replace(bench.QUICK, reps=1, methods=("library",))
    result = bench.run(cfg, progress=lambda msg: None)
    lib = {r["pattern"]: r for r in result["rows"] if r["method"] == "library"}
    assert set(lib) == set(bench.PATTERNS)
    for p, r in lib.items():
        assert r["kernel"] == EXPECTED_KERNEL[p], p
        assert r["exact"] and r["max_abs_err"] <= 1e-5, (p, r["max_abs_err"])
        assert r["fwd_s"] > 0 and r["fwdbwd_s"] > 0 and r["pre_s"] >= 0
    env = result["environment"]
    assert env["threads"] == 2 and len(env["load_average"]) == 3 and env["torch"]


def _row(pattern, T, method, fwd, fb=None, peak=None, pre=None, E=100, H=2, D=4):
    return {"pattern": pattern, "T": T, "method": method, "fwd_s": fwd, "fwdbwd_s": fb,
            "peak_extra_bytes": peak, "pre_s": pre, "E": E, "H": H, "D": D}


def test_ratios_from_rows():
    rows = [_row("P1", 128, "library", 1.05, 2.0, 300, 0.01), _row("P1", 128, "sdpa", 1.0, 2.0, 200),
            _row("P1", 256, "library", 1.2, 2.0), _row("P1", 256, "sdpa", 1.0, 2.0),
            _row("P3", 256, "library", 0.1, 0.2, pre=0.2), _row("P3", 256, "sdpa", 1.0, 1.0),
            _row("P3", 256, "naive", 2.0, 3.0)]
    rs = {r["id"]: r for r in ratios({"rows": rows, "sgemm_gflops": 1.0})}
    assert rs["R1"]["value"] == pytest.approx(1.2) and rs["R1"]["met"] is False
    assert rs["R3"]["value"] == pytest.approx(0.1) and rs["R3"]["met"] is True
    assert rs["R4"]["value"] == pytest.approx(15) and rs["R4"]["met"] is True
    assert rs["R9"]["value"] == pytest.approx(0.5) and rs["R9"]["met"] is False
    assert rs["R6"]["value"] is None and rs["R6"]["met"] is None
    assert "MISSED" in format_ratios(list(rs.values()))


def test_cli_quick_json(tmp_path, capsys):
    out = tmp_path / "b.json"
    assert main(["bench", "--quick", "--patterns", "P8", "--reps", "1", "--json", str(out)]) == 0
    data = json.loads(out.read_text())
    assert {"environment", "config", "rows", "ratios", "sgemm_gflops"} <= set(data)
    assert {r["method"] for r in data["rows"]} >= {"library", "sdpa_masked", "naive"}
    assert "R4" in capsys.readouterr().out


def test_cli_rejects_bad_sizes(capsys):
    assert main(["bench", "--quick", "--T", "4"]) == 2
    assert "T=4" in capsys.readouterr().err
