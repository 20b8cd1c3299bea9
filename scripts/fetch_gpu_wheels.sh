#!/usr/bin/env bash
# Download, on a machine with network, the wheels that a GPU image with torch and Triton but without open_clip
# needs for scripts/gpu_check.sh: into .whl/ (ignored by git), for CPython 3.12 on manylinux x86_64 (the
# workplace's H100/H200 image). The GPU image already has torch, triton, pytest, pytest-benchmark, timm, regex,
# huggingface-hub, safetensors, pyyaml, tqdm, matplotlib and tensorboard.
#
# Knobs: PYVER (default 3.12), DEST (default .whl).
set -euo pipefail
cd "$(dirname "$0")/.."
PYVER=${PYVER:-3.12}
DEST=${DEST:-.whl}
PYTHON=${PYTHON:-python3}
mkdir -p "$DEST"
platforms=()
for p in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64 manylinux1_x86_64; do
  platforms+=(--platform "$p")
done
# open_clip and its two dependencies missing there; pyautoattack for the evaluation lane.
for req in open_clip_torch==3.3.0 ftfy wcwidth pyautoattack==0.2.0; do
  "$PYTHON" -m pip download --quiet --no-deps --only-binary=:all: --python-version "$PYVER" --implementation cp \
    "${platforms[@]}" -d "$DEST" "$req"
done
ls -1 "$DEST"
