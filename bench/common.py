"""Shared benchmark machinery: timing, peak memory and the record fields (see bench/README.md).

Each ``bench_<op>.py`` is a pytest-benchmark module. A benchmark calls :func:`measure`, which
times ``fn`` (CPU: pytest-benchmark's timer; CUDA: ``triton.testing.do_bench`` with CUDA events),
measures peak memory once, and stores the record fields in ``benchmark.extra_info``;
``bench/run.py`` turns the pytest-benchmark JSON into one record per (op, provider, mode, shape, dtype).
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable
from functools import cache
from pathlib import Path

import torch

MODES = ("fwd", "bwd", "fwd+bwd", "step")
QUICK = os.environ.get("ADVSIMPLEX_BENCH_QUICK") == "1"


def bench_devices() -> list[str]:
    """Devices to benchmark: ``$ADVSIMPLEX_BENCH_DEVICE`` (cpu or cuda) or every one present."""
    wanted = os.environ.get("ADVSIMPLEX_BENCH_DEVICE")
    present = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    return [wanted] if wanted else present


def rounds(default: int) -> int:
    return max(3, default // 4) if QUICK else default


@cache
def commit() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=Path(__file__).parent
        )
        dirty = subprocess.run(
            ["git", "status", "--porcelain"], capture_output=True, text=True, cwd=Path(__file__).parent
        )
        return out.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "") if out.returncode == 0 else "unknown"
    except OSError:
        return "unknown"


def device_name(device: torch.device | str) -> str:
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({torch.get_num_threads()} threads, {os.cpu_count()} cores)"


# Peak DRAM bandwidth (GB/s, vendor figures) of the GPUs we benchmark on, matched on the device name.
PEAK_GBPS = (
    ("H200", 4800.0),
    ("H100 NVL", 3900.0),
    ("H100 PCIe", 2000.0),
    ("H100", 3350.0),  # SXM5
    ("A100-SXM4-80GB", 2039.0),
    ("A100 80GB PCIe", 1935.0),
    ("A100", 1555.0),
    ("L40S", 864.0),
)


def peak_bandwidth_gbps(device: torch.device | str) -> float | None:
    """The device's peak memory bandwidth in GB/s when known (GPUs only), else None."""
    device = torch.device(device)
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((gbps for key, gbps in PEAK_GBPS if key in name), None)


def triton_version() -> str | None:
    try:
        import triton

        return triton.__version__
    except ImportError:
        return None


def cpu_peak_bytes(fn: Callable[[], object]) -> int:
    """Peak bytes held by torch's CPU allocator during ``fn()``, from the profiler's memory records.

    Each operator's *self* allocations minus frees (children excluded, so nested operators are not
    counted twice) are replayed in start-time order. An approximation: a transient buffer allocated
    and freed inside one operator is not seen.
    """
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    events = sorted((e for e in prof.events() if e.self_cpu_memory_usage), key=lambda e: e.time_range.start)
    current = peak = 0
    for e in events:
        current += e.self_cpu_memory_usage
        peak = max(peak, current)
    return peak


def cuda_peak_bytes(fn: Callable[[], object], device: torch.device) -> int:
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    base = torch.cuda.memory_allocated(device)
    fn()
    torch.cuda.synchronize(device)
    return torch.cuda.max_memory_allocated(device) - base


def measure(
    benchmark,
    fn: Callable[[], object],
    *,
    op: str,
    provider: str,
    mode: str,
    shape: str,
    dtype: torch.dtype | str,
    device: torch.device | str,
    rounds: int = 10,
    warmup: int = 2,
    bytes_moved: int | None = None,
) -> None:
    """Time ``fn`` and record the benchmark fields in ``benchmark.extra_info``.

    ``bytes_moved``: the memory traffic of one call by the op's traffic model, if it has one; the
    records then carry ``bytes_moved`` and ``peak_gb_per_s`` (bench/run.py adds ``gb_per_s``).
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    device = torch.device(device)
    info = {
        "op": op,
        "provider": provider,
        "mode": mode,
        "shape": shape,
        "dtype": str(dtype).replace("torch.", ""),
        "device": device_name(device),
        "torch": torch.__version__,
        "triton": triton_version(),
        "commit": commit(),
        "bytes_moved": bytes_moved,
        "peak_gb_per_s": peak_bandwidth_gbps(device),
    }
    if device.type == "cuda":
        import triton.testing

        q1, median, q3 = triton.testing.do_bench(fn, quantiles=[0.25, 0.5, 0.75], return_mode="median")
        info.update(median_s=median / 1e3, q1_s=q1 / 1e3, q3_s=q3 / 1e3, timer="cuda-events")
        info["peak_mem_bytes"] = cuda_peak_bytes(fn, device)
        benchmark.extra_info.update(info)
        benchmark.pedantic(lambda: (fn(), torch.cuda.synchronize(device)), rounds=1, iterations=1)
        return
    info["timer"] = "pytest-benchmark"
    info["peak_mem_bytes"] = cpu_peak_bytes(fn) if benchmark.enabled else None
    benchmark.extra_info.update(info)
    benchmark.pedantic(fn, rounds=rounds, iterations=1, warmup_rounds=warmup)
