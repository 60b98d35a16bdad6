#!/usr/bin/env bash
# The GPU check in one go (about 8 minutes on one H100/H200), from the repository root:
#     bash experiments/gpu_check.sh [OUT_DIR]        # default experiments/results/gpu_check
#     GPU_CHECK_ALLOW_CPU=1 GPU_CHECK_BUDGET_S=240 bash experiments/gpu_check.sh runs/gpu_check_dry  # CPU dry run
#
# Stages (each under `timeout`, each writing its own files; a failing stage is recorded and the
# next one still runs; no stage starts once the global budget GPU_CHECK_BUDGET_S is spent):
#   pytest     python -m pytest -m gpu            -> pytest.xml, pytest.log
#   bench      experiments/gpu_bench.py           -> gpu_bench.json, gpu_bench.log
#   train      gnn-attention train --preset base --compile (bf16 autocast on CUDA) -> train/
#   evaluate   gnn-attention evaluate train/      -> evaluate.json
#   summary    stage -> status, seconds, files; the device's nvidia-smi name -> summary.json
# Exit 0 when every stage ran and passed (and the benchmark's accuracy criterion held), else 1;
# 2 when it cannot start (no CUDA without GPU_CHECK_ALLOW_CPU=1, no package, not at the root).
# `gnn-attention bench-entry` has no --device option (CPU only), so it is not a stage here.
# Knobs (environment): GPU_CHECK_BUDGET_S (480), GPU_CHECK_STEPS (300 on CUDA, 3 on the CPU),
# GPU_CHECK_PRESET (base; tiny on the CPU), GPU_CHECK_COMPILE (1 on CUDA, 0 on the CPU),
# GPU_CHECK_BENCH_S (bench budget, 200), GNN_ATTENTION_MEMORY_LIMIT (64GiB here: the protocol
# sizes need more than the library's 8 GiB default guard).
set -u
OUT=${1:-experiments/results/gpu_check}
if [ ! -f pyproject.toml ] || [ ! -d gnn_attention ]; then
    echo "gpu_check: run from the repository root (no gnn_attention/ here)" >&2; exit 2
fi
mkdir -p "$OUT" || { echo "gpu_check: cannot create $OUT" >&2; exit 2; }
START=$(date +%s)
BUDGET=${GPU_CHECK_BUDGET_S:-480}
STAGES="$OUT/stages.tsv"

# --- Python: the active one if it has torch and the package, else a venv over the system torch
PY=python
if ! "$PY" -c 'import torch, gnn_attention' >/dev/null 2>&1; then
    VENV=${GPU_CHECK_VENV:-runs/gpu-check-venv}  # under runs/: ignored by git
    if [ ! -x "$VENV/bin/python" ]; then
        # --system-site-packages: keep the machine's CUDA torch (a pip torch could be a CPU wheel)
        python3 -m venv --system-site-packages "$VENV" || { echo "gpu_check: cannot make $VENV" >&2; exit 2; }
    fi
    PY="$VENV/bin/python"
    "$PY" -c 'import torch' >/dev/null 2>&1 || {
        echo "gpu_check: no torch in this Python; install the CUDA build of torch first" >&2; exit 2; }
    # offline first (the machine may have no registry); then with dependencies
    "$PY" -m pip install -q --no-deps --no-build-isolation -e . >"$OUT/pip.log" 2>&1
    "$PY" -c 'import torch_geometric, pytest' >/dev/null 2>&1 ||
        "$PY" -m pip install -q -e ".[test]" >>"$OUT/pip.log" 2>&1
    "$PY" -c 'import gnn_attention, torch_geometric, pytest' >/dev/null 2>&1 || {
        echo "gpu_check: could not install the package in $VENV (see $OUT/pip.log)" >&2; exit 2; }
fi
GNN=("$PY" -m gnn_attention.cli)
"$PY" -c 'import gnn_attention.cli.__main__' >/dev/null 2>&1 || GNN=("$PY" -c \
    'import sys; from gnn_attention.cli import main; sys.exit(main())')

if "$PY" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null; then
    DEVICE=cuda
elif [ "${GPU_CHECK_ALLOW_CPU:-0}" = 1 ]; then
    DEVICE=cpu
else
    echo "gpu_check: CUDA is not available (GPU_CHECK_ALLOW_CPU=1 runs a CPU dry run)" >&2; exit 2
fi
if [ "$DEVICE" = cuda ]; then
    STEPS=${GPU_CHECK_STEPS:-300}; PRESET=${GPU_CHECK_PRESET:-base}; COMPILE=${GPU_CHECK_COMPILE:-1}
    QUICK=(); BENCH_S=${GPU_CHECK_BENCH_S:-200}
else
    STEPS=${GPU_CHECK_STEPS:-3}; PRESET=${GPU_CHECK_PRESET:-tiny}; COMPILE=${GPU_CHECK_COMPILE:-0}
    QUICK=(--quick); BENCH_S=${GPU_CHECK_BENCH_S:-60}
fi
export GNN_ATTENTION_MEMORY_LIMIT=${GNN_ATTENTION_MEMORY_LIMIT:-64GiB}
COMPILE_FLAG=(); [ "$COMPILE" = 1 ] && COMPILE_FLAG=(--compile)
: > "$STAGES"
echo "gpu_check: device $DEVICE, python $PY, budget ${BUDGET}s, writing $OUT"

# stage NAME LIMIT_S FILES -- COMMAND...: run under timeout (capped by what is left of the budget)
stage() {
    local name=$1 limit=$2 files=$3; shift 4
    local left=$(( BUDGET - ($(date +%s) - START) ))
    if [ "$left" -lt 10 ]; then
        printf '%s\tskipped\t0\t%s\tbudget spent\n' "$name" "$files" >> "$STAGES"
        echo "gpu_check: $name skipped (budget spent)"; return
    fi
    [ "$limit" -gt "$left" ] && limit=$left
    local t0 rc status
    t0=$(date +%s)
    timeout --kill-after=10 "$limit" "$@" > "$OUT/$name.log" 2>&1
    rc=$?
    case $rc in 0) status=ok ;; 124|137) status=timeout ;; *) status=failed ;; esac
    printf '%s\t%s\t%s\t%s\texit %s (limit %ss)\n' "$name" "$status" "$(( $(date +%s) - t0 ))" \
        "$files" "$rc" "$limit" >> "$STAGES"
    echo "gpu_check: $name $status ($(( $(date +%s) - t0 )) s, exit $rc; log $OUT/$name.log)"
}

stage pytest 90 "pytest.xml,pytest.log" -- "$PY" -m pytest -m gpu -q -p no:cacheprovider \
    --junitxml="$OUT/pytest.xml"
stage bench $(( BENCH_S + 60 )) "gpu_bench.json,bench.log" -- "$PY" experiments/gpu_bench.py \
    --device "$DEVICE" --json "$OUT/gpu_bench.json" --budget-s "$BENCH_S" "${QUICK[@]}"
stage train 150 "train/results.json,train/metrics.csv,train.log" -- "${GNN[@]}" train \
    --preset "$PRESET" --device "$DEVICE" "${COMPILE_FLAG[@]}" --steps "$STEPS" \
    --run-dir "$OUT/train" --overwrite --no-progress
if [ -f "$OUT/train/results.json" ]; then
    stage evaluate 60 "evaluate.json,evaluate.log" -- "${GNN[@]}" evaluate "$OUT/train" \
        --device "$DEVICE" --json "$OUT/evaluate.json"
else
    printf 'evaluate\tskipped\t0\tevaluate.json\tno trained run (train/results.json missing)\n' >> "$STAGES"
fi

# --- summary.json: stages, the device, the headline figures of each stage's own JSON
GPU_NAME=$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -n 1)
"$PY" - "$OUT" "$DEVICE" "${GPU_NAME:-none}" "$(( $(date +%s) - START ))" "$BUDGET" <<'EOF'
import json, sys
from pathlib import Path
out, device, gpu, seconds, budget = sys.argv[1], sys.argv[2], sys.argv[3], *map(int, sys.argv[4:])
stages = {}
for line in Path(out, "stages.tsv").read_text().splitlines():
    name, status, secs, files, note = line.split("\t")
    stages[name] = {"status": status, "seconds": int(secs), "note": note,
                    "files": [f for f in files.split(",") if Path(out, f).exists()]}
def load(name):
    try:
        return json.loads(Path(out, name).read_text())
    except (OSError, ValueError):
        return None
bench, train, ev = load("gpu_bench.json"), load("train/results.json"), load("evaluate.json")
if bench:
    cases = bench["cases"]
    stages["bench"]["cases"] = {k: sum(c["status"] == k for c in cases) for k in ("ok", "error", "skipped")}
    stages["bench"]["accuracy_failures"] = [f"{c['pattern']} T={c['T']} {c['dtype']}"
                                            for c in cases if c.get("accuracy_ok") is False]
if train and "train" in stages:
    stages["train"]["results"] = train
if ev and "evaluate" in stages:
    stages["evaluate"]["scores"] = ev
summary = {"device": device, "nvidia_smi_name": gpu, "torch_device_name":
           (bench or {}).get("environment", {}).get("name"), "seconds": seconds, "budget_s": budget,
           "ok": all(s["status"] == "ok" for s in stages.values()) and
           not stages.get("bench", {}).get("accuracy_failures"), "stages": stages}
Path(out, "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
print(f"gpu_check: {gpu} ({device}) in {seconds} s of {budget}:")
for name, s in stages.items():
    print(f"  {name:<9} {s['status']:<8} {s['seconds']:>4} s  {s['note']}")
print(f"gpu_check: {'every stage ran and passed' if summary['ok'] else 'NOT every stage passed'}"
      f"; {out}/summary.json")
sys.exit(0 if summary["ok"] else 1)
EOF
