#!/usr/bin/env bash
# Lint and run the test suite (CPU; GPU tests skip without a GPU), then the benchmark suites
# once with timing disabled so that they cannot rot. Exits non-zero on any failure.
set -euo pipefail
cd "$(dirname "$0")/.."
.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/python -m pytest tests "$@"
