#!/usr/bin/env bash
# The GPU path, checked in one call (under 8 minutes on one H100/H200-class GPU):
#   1. tests/test_gpu.py            every method trains, evaluates and resumes on CUDA (bf16, channels_last)
#   2. fercore bench at 112 px      peers' pipeline vs fercore's, every method vs ce, bf16/channels_last/compile
#   3. fercore bench at 224 px      the same at the papers' input size
#   4. the quick noise sweep on CUDA (fercore/grids/noise_sweep.yaml, 4 workers on the one GPU)
# and writes one results file, $OUT/gpu_check.json (plus the logs and bench tables beside it).
#
# Needs only what a stock PyTorch GPU machine has (torch, torchvision, timm, numpy, scipy, pandas,
# scikit-learn, matplotlib, seaborn, tqdm, pyyaml, pytest): fercore is installed with --no-deps, and
# training imports neither cleanlab, submitit nor papermill. Nothing is downloaded.
#
#   OUT=/tmp/gpu benchmarks/gpu_check.sh            # OUT defaults to runs/gpu_check
# A dry run of the script itself on a CPU (what was done before spending device time):
#   DEVICE=cpu SIZES=32 BENCH="--backbone resnet10t --batch 32 --n-images 128 --steps 2 --warmup 1 --workers 0" \
#   SWEEP_PROFILE=smoke benchmarks/gpu_check.sh
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-runs/gpu_check}"
mkdir -p "$OUT"
export HF_HUB_OFFLINE=1 MPLBACKEND=Agg PYTHONUNBUFFERED=1 FERCORE_CACHE="${FERCORE_CACHE:-$OUT/cache}"
PY="${PYTHON:-python3}"
DEVICE="${DEVICE:-cuda}"
SIZES="${SIZES:-112 224}"
BENCH="${BENCH:---backbone resnet18 --batch 256 --n-images 2048 --steps 20 --workers 8}"
SWEEP_PROFILE="${SWEEP_PROFILE:-quick}"
start=$SECONDS
: >"$OUT/steps.jsonl"

step() {  # step NAME TIMEOUT_S COMMAND...: run, log, record the exit code and the seconds
  local name=$1 limit=$2; shift 2
  local t=$SECONDS
  echo "== $name: $*" | tee -a "$OUT/gpu_check.log"
  timeout "$limit" "$@" >"$OUT/$name.log" 2>&1
  local rc=$?
  tail -n 40 "$OUT/$name.log" | tee -a "$OUT/gpu_check.log"
  echo "{\"step\": \"$name\", \"rc\": $rc, \"seconds\": $((SECONDS - t))}" >>"$OUT/steps.jsonl"
  echo "== $name: rc $rc in $((SECONDS - t)) s" | tee -a "$OUT/gpu_check.log"
}

# fercore itself, without its dependencies (the image has the stack); the source tree as a fallback
if ! "$PY" -m pip install --quiet --no-deps --no-build-isolation -e . >"$OUT/install.log" 2>&1; then
  echo "pip install -e . failed (see $OUT/install.log); using PYTHONPATH=$PWD" | tee -a "$OUT/gpu_check.log"
  export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader >"$OUT/gpu.txt" 2>&1 || true
"$PY" - >"$OUT/env.json" <<'PY'
import json, platform, torch, torchvision, timm
print(json.dumps({"python": platform.python_version(), "torch": torch.__version__, "cuda": torch.version.cuda,
                  "torchvision": torchvision.__version__, "timm": timm.__version__,
                  "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}))
PY

step test_gpu 180 "$PY" -m pytest tests/test_gpu.py -q -p no:cacheprovider
for size in $SIZES; do
  # shellcheck disable=SC2086  # BENCH is a list of options
  step "bench$size" 150 "$PY" -m fercore bench --device "$DEVICE" --size "$size" $BENCH --json "$OUT/bench$size.json"
done
step sweep 240 "$PY" -m fercore sweep noise_sweep --profile "$SWEEP_PROFILE" --workers 4 --no-progress \
  --out-dir "$OUT/runs" "device=$DEVICE"

"$PY" - "$OUT" <<'PY'
import json, sys
from pathlib import Path
out = Path(sys.argv[1])
status = [json.loads(line) for line in (out / "steps.jsonl").read_text().splitlines() if line.strip()]
result = {"env": json.loads((out / "env.json").read_text()), "gpu": (out / "gpu.txt").read_text().strip(),
          "steps": status}
for p in sorted(out.glob("bench*.json")):
    result[p.stem] = json.loads(p.read_text())
sweep = out / "runs" / "sweeps" / "noise_sweep.json"
if sweep.exists():
    cells = json.loads(sweep.read_text())["cells"]
    result["sweep"] = {"cells": len(cells), "failed": [c["cell"] for c in cells if c["status"] == "failed"],
                       "seconds": sum(c["seconds"] for c in cells),
                       "last_acc": {f"{c['cell']['method']}/{c['cell']['noise']}/s{c['cell']['seed']}": c["last_acc"]
                                    for c in cells}}
(out / "gpu_check.json").write_text(json.dumps(result, indent=2))
print(f"gpu check results: {out / 'gpu_check.json'}")
PY
echo "gpu_check.sh: done in $((SECONDS - start)) s; results in $OUT/gpu_check.json"
