"""Profile one training step with ``torch.profiler`` and write a trace a user can open.

    python bench/profile.py [--method advsimplex] [--model advsimplex-demo-vit] [--batch 16]
                            [--steps 10] [--device cpu|cuda] [--out trace.json] [--set key=value ...]

The step is the trainer's (PGD path, forward, backward, AdamW update; bench/steps.py) on real CIFAR-10
images. One warm-up step runs outside the profile. The trace (Chrome trace format) opens in
https://ui.perfetto.dev or chrome://tracing; the table of the most expensive operators (self time)
is printed. ``--set`` overrides any training-config key (``--set jets=generic``, ``--set order=4``).
"""

from __future__ import annotations

import sys
from pathlib import Path

# This file is named like the standard library's ``profile`` (which torch imports through cProfile):
# move its folder from the front of sys.path to the back, so that the standard module wins.
HERE = str(Path(__file__).resolve().parent)
sys.path[:] = [p for p in sys.path if str(Path(p or ".").resolve()) != HERE] + [HERE]

import argparse  # noqa: E402

import torch  # noqa: E402
from steps import METHODS, build_step  # noqa: E402
from torch.profiler import ProfilerActivity, profile, record_function  # noqa: E402


def parse_overrides(items: list[str]) -> dict:
    """``key=value`` strings → a dict for the training config (values parsed as YAML scalars)."""
    import yaml

    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise SystemExit(f"--set expects key=value, got {item!r}")
        out[key.replace("-", "_")] = yaml.safe_load(value)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--method", default="advsimplex", choices=sorted(METHODS))
    parser.add_argument("--model", default="advsimplex-demo-vit", help="open_clip model name (random weights)")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--steps", type=int, default=10, help="PGD steps m")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--out", default="trace.json", help="Chrome trace file to write")
    parser.add_argument("--rows", type=int, default=25, help="operators in the printed table")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args(argv)
    step = build_step(args.method, model=args.model, batch=args.batch, device=args.device,
                      attack_steps=args.steps, **parse_overrides(args.overrides))  # fmt: skip
    step.run()  # warm-up outside the profile
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if args.device.startswith("cuda") else [])
    with profile(activities=activities, record_shapes=True, profile_memory=True) as prof:
        with record_function(f"train_step[{args.method}]"):
            step.run()
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    prof.export_chrome_trace(args.out)
    sort = "self_cuda_time_total" if args.device.startswith("cuda") else "self_cpu_time_total"
    print(prof.key_averages().table(sort_by=sort, row_limit=args.rows))
    print(f"bench/profile.py: {args.method} step, {args.model}, batch {args.batch}, m={args.steps} on {args.device}; "
          f"trace -> {args.out}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
