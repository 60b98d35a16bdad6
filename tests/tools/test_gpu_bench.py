"""experiments/gpu_bench.py and gpu_check.sh on the CPU: the quick mode runs, its JSON has every
field, the library agrees with SDPA and with the float64 reference, the accuracy criterion
catches a wrong kernel, a failing method is recorded without stopping the run, and the one
predicate per pattern means the same graph as the library's builder."""
import importlib.util
import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from gnn_attention import graphs

ROOT = Path(__file__).resolve().parents[2]


def _load(name):
    spec = importlib.util.spec_from_file_location(name, ROOT / "experiments" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


gb = _load("gpu_bench")
CPU = torch.device("cpu")
TINY = replace(gb.QUICK, Ts=(32,), B=2, H=2, D=8, window=4, reps=1, slice_rows=4,
               dtypes=("fp32", "bf16"), flex="eager")


@pytest.fixture(scope="module")
def result(tmp_path_factory):
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("gb") / "bench.json"
    res = gb.run(TINY, CPU, out, log=lambda line: None)
    assert json.loads(out.read_text()) == json.loads(json.dumps(res))  # what it wrote = returned
    return res


def test_quick_json_has_every_field(result):
    assert result["schema"] == "gpu_bench/1" and result["complete"]
    assert set(result["environment"]) >= {"device", "torch", "cuda", "name"}
    assert list(result["config"]["Ts"]) == [32] and result["config"]["flex"] == "eager"
    assert len(result["cases"]) == len(gb.PATTERNS) * 2
    for c in result["cases"]:
        assert c["status"] == "ok", c
        assert set(c) >= {"pattern", "T", "B", "H", "D", "dtype", "lengths", "edges", "kernel",
                          "methods", "ratios", "accuracy_ok", "seconds"}
        assert set(c["methods"]) == {"ours", "sdpa", "flex"}
        for name, m in c["methods"].items():
            assert m["status"] == "ok", (name, m)
            assert m["max_abs_diff"] >= 0 and m["fwd"]["median_ms"] > 0
            assert m["fwd"]["min_ms"] <= m["fwd"]["median_ms"]
            if name == "flex":  # no FlexAttention backward on the CPU: skipped, with the reason
                assert "fwd_bwd" not in m and "fwd_bwd" in m["skipped"]
            else:
                assert m["fwd_bwd"]["median_ms"] > 0 and m["peak_mib"] is None  # None on CPU
        assert set(c["ratios"]) == {f"ours/{b}_{p}" for b in ("sdpa", "flex")
                                    for p in ("fwd", "fwd_bwd")}
        assert c["ratios"]["ours/sdpa_fwd"] > 0 and c["ratios"]["ours/flex_fwd_bwd"] is None


def test_library_agrees_with_sdpa_and_the_fp64_reference(result):
    for c in result["cases"]:
        ours, sdpa = c["methods"]["ours"], c["methods"]["sdpa"]
        assert c["accuracy_ok"] is True, c
        if c["dtype"] == "fp32":  # float32 on D=8: a few ulps of outputs of size <= ~3
            assert ours["max_abs_diff"] < 1e-5 and sdpa["max_abs_diff"] < 1e-5
            assert ours["grad_max_abs_diff_vs_sdpa"] < 1e-5
            assert c["methods"]["flex"]["max_abs_diff"] < 1e-5
        else:  # bf16 inputs, float32 softmax: well inside the floor
            assert ours["max_abs_diff"] < gb.FLOOR["bf16"]
            assert ours["grad_max_abs_diff_vs_sdpa"] < 0.1


def test_ragged_lengths_are_uniform_in_T_over_8_to_T():
    n = gb.case_lengths("ragged", replace(gb.Config(), B=64), 1024)
    assert min(n) >= 128 and max(n) <= 1024 and len(set(n)) > 10
    assert gb.case_lengths("full", gb.Config(), 1024) == [1024] * 8


@pytest.mark.parametrize("pattern", gb.PATTERNS)
def test_predicate_is_the_library_graph(pattern):
    cfg = replace(TINY, B=3, window=3)
    n = gb.case_lengths(pattern, cfg, 24) if pattern != "ragged" else [24, 7, 15]
    T = max(n)
    allow = gb.predicate(pattern, cfg.window, torch.tensor(n))
    mask = torch.ones(3, 1, T, T, dtype=torch.bool) if allow is None else \
        gb.dense_mask(allow, 3, T, CPU)
    ours = graphs.to_dense_mask(gb.library_graph(pattern, n, cfg.window, CPU), "sdpa")
    for b, L in enumerate(n):  # real query rows; keys past the length are blocked in both
        assert torch.equal(mask[b, 0, :L, :], torch.nn.functional.pad(ours[b, :L], (0, T - ours.size(2))))


def test_criterion_catches_a_wrong_kernel(monkeypatch):
    real = gb.graph_attention
    monkeypatch.setattr(gb, "graph_attention", lambda q, k, v, g: real(q, k, v, g) * 1.01)
    cfg = replace(TINY, patterns=("causal",), dtypes=("fp32",), flex="off")
    (c,) = gb.run(cfg, CPU, None, log=lambda line: None)["cases"]
    assert c["accuracy_ok"] is False and c["methods"]["ours"]["grad_max_abs_diff_vs_sdpa"] > 1e-3


def test_a_failing_method_is_recorded_and_the_run_goes_on(monkeypatch):
    def broken(*args):
        raise RuntimeError("out of memory\nsecond line")
    monkeypatch.setattr(gb, "graph_attention", broken)
    cfg = replace(TINY, patterns=("full", "window"), dtypes=("fp32",), flex="off")
    res = gb.run(cfg, CPU, None, log=lambda line: None)
    assert [c["status"] for c in res["cases"]] == ["ok", "ok"]
    for c in res["cases"]:
        ours = c["methods"]["ours"]
        assert ours["status"] == "error"
        assert ours["errors"]["fwd"] == "RuntimeError: out of memory"
        assert c["methods"]["sdpa"]["status"] == "ok" and c["accuracy_ok"] is None
        assert c["methods"]["flex"] == {"status": "skipped", "reason": "flex off (--flex off)"}
        assert c["ratios"]["ours/sdpa_fwd"] is None


def test_budget_skips_the_remaining_cases():
    res = gb.run(replace(TINY, budget_s=-1.0), CPU, None, log=lambda line: None)
    assert res["complete"] and {c["status"] for c in res["cases"]} == {"skipped"}
    assert "budget" in res["cases"][0]["reason"]
    assert gb.summary_line(res["cases"][0]).endswith("budget of -1 s spent")


@pytest.mark.parametrize("argv", [["--device", "cpu", "--T", "0"], ["--device", "nope"]])
def test_cli_bad_input_is_one_line_and_exit_2(argv, tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        gb.main(argv + ["--json", str(tmp_path / "x.json")])
    assert e.value.code == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal without CUDA")
def test_gpu_check_refuses_without_cuda(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "GPU_CHECK_ALLOW_CPU"}
    p = subprocess.run(["bash", "experiments/gpu_check.sh", str(tmp_path)], check=False, cwd=ROOT,
                       env=env,
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 2
    assert p.stderr.strip() == ("gpu_check: CUDA is not available "
                                "(GPU_CHECK_ALLOW_CPU=1 runs a CPU dry run)")


@pytest.mark.slow
def test_gpu_check_dry_run_on_the_cpu(tmp_path):
    env = {**os.environ, "GPU_CHECK_ALLOW_CPU": "1", "GPU_CHECK_BUDGET_S": "300"}
    p = subprocess.run(["bash", "experiments/gpu_check.sh", str(tmp_path)], check=False, cwd=ROOT,
                       env=env,
                       capture_output=True, text=True, timeout=400)
    assert p.returncode == 0, p.stdout + p.stderr
    s = json.loads((tmp_path / "summary.json").read_text())
    assert s["ok"] and s["device"] == "cpu"
    assert list(s["stages"]) == ["pytest", "bench", "train", "evaluate"]
    assert all(st["status"] == "ok" for st in s["stages"].values())
    assert s["stages"]["bench"]["cases"]["ok"] == len(gb.PATTERNS) * 3
    assert "test_exact_match" in s["stages"]["train"]["results"]
    assert (tmp_path / "train" / "metrics.csv").exists() and (tmp_path / "pytest.xml").exists()
