#!/usr/bin/env bash
# One-command GPU validation: build the extension with CUDA for the local GPU, run every GPU test lane, a short
# advsimplex-train run on CUDA with the default precision (bf16 autocast), and the GPU benchmarks; write the
# records, the report and the logs into one folder.
#
#     scripts/gpu_check.sh [OUT]            # OUT defaults to $OUT, else gpu-check/
#
# Needs: an NVIDIA GPU; python3 with a CUDA build of torch, Triton, pytest and pytest-benchmark (knob PYTHON);
# nvcc; the wheels of scripts/fetch_gpu_wheels.sh in .whl/ where open_clip (and ftfy, wcwidth, pyautoattack) are
# not installed; the data root with cifar10/test.npz (ADVSIMPLEX_DATA, default ../shared/data) for the training
# run and the full-step benchmarks. Built for ~8 minutes on an H100-class GPU; each stage has its own time limit
# and a failed stage does not stop the next ones (the summary says which failed).
#
# Knobs: PYTHON, OUT, WHEELS (default .whl), MAX_JOBS (default: all cores), SKIP (space-separated stage names:
# build tests train bench).
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
OUT=${1:-${OUT:-gpu-check}}
PYTHON=${PYTHON:-python3}
WHEELS=${WHEELS:-.whl}
SKIP=${SKIP:-}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
SUMMARY="$OUT/gpu-check.md"
export PYTHONUNBUFFERED=1 ADVSIMPLEX_DATA=${ADVSIMPLEX_DATA:-$ROOT/../shared/data}
status=0

log() { printf '%s\n' "$*" | tee -a "$SUMMARY"; }

stage() {  # stage NAME LIMIT_SECONDS COMMAND...: run, time and record one stage
  local name=$1 limit=$2
  shift 2
  if [[ " $SKIP " == *" $name "* ]]; then
    log "| $name | skipped | – |"
    return
  fi
  local t0=$SECONDS
  timeout "$limit" "$@" >"$OUT/$name.log" 2>&1
  local rc=$?
  local verdict=$([ $rc -eq 0 ] && echo ok || ([ $rc -eq 124 ] && echo "timed out (${limit} s)" || echo "failed (exit $rc)"))
  [ $rc -eq 0 ] || status=1
  log "| $name | $verdict | $((SECONDS - t0)) s |"
}

if ! "$PYTHON" -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)'; then
  echo "gpu_check: no CUDA device visible to $PYTHON (torch.cuda.is_available() is False)" >&2
  exit 2
fi
if [ -d "$WHEELS" ] && ls "$WHEELS"/*.whl >/dev/null 2>&1; then  # carried wheels: open_clip and what it misses
  "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/gpu-check-site \
    "$WHEELS"/*.whl || exit 2
  export PYTHONPATH=/tmp/gpu-check-site${PYTHONPATH:+:$PYTHONPATH}
fi
ARCH=$("$PYTHON" -c 'import torch; print("%d.%d" % torch.cuda.get_device_capability())')
DEVICE=$("$PYTHON" -c 'import torch; print(torch.cuda.get_device_name())')
VERSIONS=$("$PYTHON" -c 'import torch, triton; print(f"torch {torch.__version__}, Triton {triton.__version__}, CUDA {torch.version.cuda}")')
: >"$SUMMARY"
log "# GPU check: $DEVICE (sm_${ARCH/./}), $VERSIONS, commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
log ""
log "| stage | result | time |"
log "|---|---|---:|"

# 1. build: the C++ and CUDA kernels for this GPU only, installed in place (editable)
stage build 420 env FORCE_CUDA=1 TORCH_CUDA_ARCH_LIST="$ARCH" MAX_JOBS="${MAX_JOBS:-$(nproc)}" NVCC_THREADS=4 \
  "$PYTHON" -m pip install --no-deps --no-build-isolation --no-cache-dir -e .
"$PYTHON" -c 'import advsimplex; print(advsimplex.backends())' >>"$OUT/build.log" 2>&1

# 2. GPU test lanes: CUDA and compiled Triton kernels against the reference, bf16 autocast, CUDA placement
stage tests 240 "$PYTHON" -m pytest tests -q -p no:cacheprovider -x -k "cuda or gpu or triton or autocast" \
  --junitxml="$OUT/tests.xml"

# 3. a short training run on CUDA with the default precision (bf16 autocast) and the default backends
stage train 150 "$PYTHON" -m advsimplex.train --model advsimplex-demo-vit --dataset cifar10 --split test --limit 512 \
  --steps 8 --batch-size 64 --attack-steps 10 --eval-samples 256 --device cuda --no-progress --no-tensorboard \
  --out-dir /tmp/gpu-check-train --overwrite
cp /tmp/gpu-check-train/summary.json "$OUT/train-summary.json" 2>/dev/null

# 4. benchmarks: the head at B = 256, m = 10, C = 1000, d = 512 and full steps of ViT-B/32 at 224 px, batch 128,
#    m = 10 (AdvSimplex collapsed and pair jets, TeCoA, sampled with 70 points per simplex), with peak memory
stage bench 300 "$PYTHON" bench/run.py --device cuda --out "$OUT/bench.json" \
  -k "(B256-m10-C1000-d512) or (ViT-B-32-B128-m10 and not sampled-10 and not generic)" \
  bench/bench_simplex_head.py bench/bench_train_step.py
"$PYTHON" bench/report.py "$OUT/bench.json" --md "$OUT/bench.md" --png "$OUT/bench.png" >>"$OUT/bench.log" 2>&1

log ""
log "Records: bench.json (report bench.md, bench.png), train-summary.json, tests.xml, one log per stage."
exit $status
