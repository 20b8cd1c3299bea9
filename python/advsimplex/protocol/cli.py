"""``advsimplex-protocol`` / ``python -m advsimplex.protocol``: the offline zero-shot robustness protocol.

Examples::

    advsimplex-protocol                          # the full protocol into runs/protocol (about 1.5 h on 2 cores)
    advsimplex-protocol --quick                  # the smoke test into runs/protocol-quick (≤ 3 min)
    advsimplex-protocol --pretrain-only          # only the proxy CLIP (cached in runs/proxy)
    advsimplex-protocol --methods advsimplex,tecoa --out runs/two-methods
    advsimplex-protocol --print-plan             # the runs and settings, nothing is run
    advsimplex-protocol --ablations              # the protocol plus AdvSimplex with uniform ω and with Q = 4

A second invocation with the same ``--out`` continues where the first stopped.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from ..runtime import DefaultsHelpFormatter
from .training import ProtocolError


def _cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="advsimplex-protocol",
        description="Pre-train a proxy CLIP on the seven offline sets, fine-tune it adversarially on Tiny-ImageNet "
        "with AdvSimplex and its baselines at equal budget (each method's trade-off knob swept), and evaluate every "
        "model zero-shot (clean, PGD-20, AutoAttack) on the seven test splits.",
        formatter_class=DefaultsHelpFormatter,
    )
    p.add_argument("--quick", action="store_true", help="the CI smoke test: tiny budgets, two knob values per method")
    p.add_argument("--out", help="result folder (default runs/protocol, runs/protocol-quick with --quick)")
    p.add_argument("--cache", default="runs/proxy", help="folder of the cached proxy CLIP(s)")
    p.add_argument("--data-root", help="folder holding the seven sets (default $ADVSIMPLEX_DATA or ../shared/data)")
    p.add_argument(
        "--ablations",
        action="store_true",
        help="also AdvSimplex with uniform weights and with Q = 4 (same λ values; same --out reuses runs)",
    )
    p.add_argument("--methods", help="comma-separated subset of the methods (default: all that advsimplex.train has)")
    p.add_argument("--workers", type=int, default=_cpus(), help="parallel jobs (processes)")
    p.add_argument("--threads", type=int, default=1, help="torch threads per job (and of the pre-training)")
    p.add_argument("--pretrain-only", action="store_true", help="only pre-train (or show) the proxy and exit")
    p.add_argument("--print-plan", action="store_true", help="print the plan as JSON and exit")
    p.add_argument("--progress", action="store_true", help="progress bars of the training runs")
    p.add_argument("--quiet", action="store_true", help="warnings only")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit status (0: done, 1: some runs failed, 2: bad input)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    from ..evaluation.suite import DatasetNotFoundError, resolve_data_root
    from .layout import PROXY_ID
    from .pipeline import run_protocol
    from .proxy import ensure_proxy
    from .settings import build_plan

    if args.workers < 1 or args.threads < 1:
        parser.error("--workers and --threads must be positive")
    plan = build_plan(args.quick, args.ablations)
    if args.methods:
        try:
            plan = plan.with_methods([m.strip() for m in args.methods.split(",") if m.strip()])
        except ValueError as exc:
            parser.error(str(exc))
    if args.print_plan:
        runs = [m.run_id(v) for m in plan.methods for v in m.points()]
        print(json.dumps({"fingerprint": plan.fingerprint(), "runs": [PROXY_ID, *runs], **plan.to_dict()}, indent=2))
        return 0
    try:
        data_root = resolve_data_root(args.data_root)
    except DatasetNotFoundError as exc:
        parser.error(str(exc))
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO, format="%(asctime)s %(message)s",
                        stream=sys.stderr)  # fmt: skip
    out = Path(args.out or ("runs/protocol-quick" if args.quick else "runs/protocol"))
    try:
        if args.pretrain_only:
            import torch

            torch.set_num_threads(args.threads)
            _, record = ensure_proxy(plan, args.cache, str(data_root), progress=args.progress)
            print(json.dumps(record, indent=2))
            return 0
        summary = run_protocol(plan, out, cache=args.cache, data_root=data_root, workers=args.workers,
                               threads=args.threads, progress=args.progress)  # fmt: skip
    except ProtocolError as exc:
        print(f"advsimplex-protocol: error: {exc}", file=sys.stderr)
        return 1 if "failed" in str(exc) else 2
    except (FileNotFoundError, ValueError) as exc:
        print(f"advsimplex-protocol: error: {exc}", file=sys.stderr)
        return 2
    print((out / "report.md").read_text(encoding="utf-8"))
    print(f"wrote {out}/report.md, results.json, protocol.json, tradeoff.png "
          f"({summary['timing']['wall_seconds'] / 60:.1f} min)", file=sys.stderr)  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
