#!/usr/bin/env bash
# Lint, run the test suite (CPU; GPU tests skip without a GPU), then run every benchmark once with
# timing disabled (quick shapes) so that the suites cannot rot. Exits non-zero on any failure.
set -euo pipefail
cd "$(dirname "$0")/.."
.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/python -m pytest tests "$@"
ADVSIMPLEX_BENCH_QUICK=1 .venv/bin/python -m pytest -q -p no:cacheprovider --benchmark-disable bench/bench_*.py
