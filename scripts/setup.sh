#!/usr/bin/env bash
# Create .venv at the repository root and install advsimplex into it (editable), compiling the
# extension advsimplex._C. Idempotent: a second run only rebuilds what changed.
#
# Knobs: PYTHON (interpreter for the venv, default python3), FORCE_CUDA, TORCH_CUDA_ARCH_LIST,
# CUDA_HOME, MAX_JOBS, ADVSIMPLEX_CPU_ARCH (e.g. native: C++ kernels tuned for this CPU only; unset: a portable
# build) (see setup.py).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -r requirements.txt
# --no-build-isolation: build against the torch installed above (a build env would fetch another).
MAX_JOBS=${MAX_JOBS:-2} .venv/bin/python -m pip install --quiet --no-build-isolation --no-deps -e .
.venv/bin/python -c "import advsimplex; print('advsimplex', advsimplex.__version__, 'backends:', {k: v[0] for k, v in advsimplex.backends().items()})"
