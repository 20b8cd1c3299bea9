"""Run the benchmark suites and write one JSON record per (op, provider, mode, shape, dtype).

    python bench/run.py [--quick] [--device cpu|cuda] --out FILE.json [-k EXPR] [SUITE ...]

Record fields: op, provider, mode, shape, dtype, median_s, q1_s, q3_s, peak_mem_bytes, device,
torch, triton, commit; also rounds and timer, bytes_moved, gb_per_s and peak_gb_per_s where the op
has a memory-traffic model, and images_per_s for full training steps. ``--quick`` runs the smallest
shapes with fewer rounds (under 3 minutes on a 2-core CPU). Suites default to every ``bench/bench_*.py``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
FIELDS = ("op", "provider", "mode", "shape", "dtype", "median_s", "q1_s", "q3_s", "peak_mem_bytes", "device", "torch",
          "triton", "commit")  # fmt: skip


def records_from_pytest_json(data: dict) -> list[dict]:
    """pytest-benchmark's JSON → benchmark records (CUDA-event timings replace the wall clock where present)."""
    out = []
    for bench in data.get("benchmarks", []):
        info, stats = bench.get("extra_info", {}), bench.get("stats", {})
        if "op" not in info:
            continue
        rec = {k: info.get(k) for k in FIELDS}
        if info.get("median_s") is None:
            rec.update(median_s=stats["median"], q1_s=stats["q1"], q3_s=stats["q3"])
        if info.get("bytes_moved") and rec["median_s"]:
            rec["gb_per_s"] = info["bytes_moved"] / rec["median_s"] / 1e9
        rec["bytes_moved"], rec["peak_gb_per_s"] = info.get("bytes_moved"), info.get("peak_gb_per_s")
        if info.get("images") and rec["median_s"]:
            rec["images_per_s"] = info["images"] / rec["median_s"]
        rec["rounds"] = stats.get("rounds")
        rec["timer"] = info.get("timer")
        out.append(rec)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("suites", nargs="*", help="bench files (default: every bench/bench_*.py)")
    parser.add_argument("--quick", action="store_true", help="smallest shapes, fewer rounds")
    parser.add_argument("--device", choices=("cpu", "cuda"), help="benchmark one device only")
    parser.add_argument("--out", required=True, help="JSON file to write")
    parser.add_argument("-k", dest="keyword", help="pytest -k expression to select benchmarks")
    args = parser.parse_args(argv)
    suites = args.suites or sorted(str(p) for p in HERE.glob("bench_*.py"))
    env = dict(os.environ)
    if args.quick:
        env["ADVSIMPLEX_BENCH_QUICK"] = "1"
    if args.device:
        env["ADVSIMPLEX_BENCH_DEVICE"] = args.device
    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / "raw.json"
        cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--benchmark-only",
               f"--benchmark-json={raw}", "--benchmark-disable-gc", *suites]  # fmt: skip
        if args.keyword:
            cmd += ["-k", args.keyword]
        code = subprocess.call(cmd, cwd=HERE.parent, env=env)
        if not raw.exists():
            print(f"bench/run.py: pytest wrote no results (exit code {code})", file=sys.stderr)
            return code or 1
        records = records_from_pytest_json(json.loads(raw.read_text()))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(records, indent=1))
    print(f"bench/run.py: {len(records)} records -> {args.out}")
    return code


if __name__ == "__main__":
    sys.exit(main())
