"""The README's main job (``python -m advsimplex``): AdvSimplex against TeCoA on CIFAR-10, offline, on a CPU.

Stages (presets in ``advsimplex/configs/train``):

1. ``demo-pretrain``: CLIP-style contrastive pre-training of ``advsimplex-demo-vit`` on the CIFAR-10
   training arrays (captions from the class names), so that zero-shot prompts mean something;
2. ``demo-advsimplex``: adversarial fine-tuning of that model with AdvSimplex;
3. ``demo-tecoa``: TeCoA fine-tuning with the same budget (steps, batch, PGD path, optimiser);
4. zero-shot clean and PGD accuracy of the three models on the same held-out test images
   (``advsimplex.evaluation``: the numbers ``advsimplex-eval`` gives for these checkpoints).

Outputs in ``--out`` (default ``runs/demo``): one folder per stage (checkpoints, metrics, TensorBoard,
``model.safetensors``), ``eval/results.json`` and ``eval/report.md``, ``summary.json``.
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import time
from collections.abc import Sequence
from pathlib import Path

import torch

from ..runtime import eps_label
from .config import ConfigError
from .presets import load_config

log = logging.getLogger("advsimplex.train.demo")

STAGES = (
    ("pretrain", "demo-pretrain", "pre-trained (contrastive)"),
    ("advsimplex", "demo-advsimplex", "+ AdvSimplex fine-tuning"),
    ("tecoa", "demo-tecoa", "+ TeCoA fine-tuning (same budget)"),
)


def _stage_config(preset: str, out: Path, name: str, model: str | None, progress: bool, resume: bool):
    overrides = {"out_dir": str(out / name), "eval_samples": 0, "progress": progress}
    if model is not None:
        overrides["model"] = model
    if resume:
        overrides["resume"] = "auto"
    else:  # a fresh run replaces an earlier run of this stage (its checkpoints must not be resumed later)
        overrides["overwrite"] = True
    return load_config(preset, overrides)


def run_demo(
    out: str | Path = "runs/demo",
    *,
    samples: int = 2000,
    eps: float = 1 / 255,
    pgd_steps: int = 10,
    seed: int = 0,
    progress: bool = True,
    resume: bool = False,
) -> dict:
    """Run the three stages and the evaluation; returns the summary (also written to ``out/summary.json``)."""
    from ..evaluation import AttackSettings, EvalConfig, ModelSpec, evaluate, markdown_report, write_results
    from .trainer import train

    out = Path(out)
    t_start = time.perf_counter()
    trained: dict[str, dict] = {}
    model_path: str | None = None
    for name, preset, _ in STAGES:
        cfg = _stage_config(preset, out, name, None if name == "pretrain" else model_path, progress, resume)
        log.info("== stage %s (preset %s): %s, %s", name, preset, cfg.method, cfg.model)
        t0 = time.perf_counter()
        result = train(cfg)
        trained[name] = {
            "preset": preset, "method": cfg.method, "steps": result.step, "batch_size": cfg.batch_size,
            "attack_steps": cfg.attack_steps if cfg.adversarial else None, "lr": cfg.lr, "optimizer": cfg.optimizer,
            "lam": cfg.lam if cfg.method == "advsimplex" else None,
            "variant": cfg.variant if cfg.method == "advsimplex" else None,
            "eps": cfg.eps if cfg.adversarial else None, "alpha": cfg.alpha if cfg.adversarial else None,
            "train_seconds": result.seconds, "stage_seconds": time.perf_counter() - t0,
            "model": str(result.model_path),
        }  # fmt: skip
        if name == "pretrain":
            model_path = str(result.model_path)
    log.info("== evaluation: clean and PGD-%d at ε = %s on %d CIFAR-10 test images", pgd_steps, eps_label(eps),
             samples)  # fmt: skip
    t0 = time.perf_counter()
    specs = [ModelSpec(trained[name]["model"], label=label) for name, _, label in STAGES]
    eval_log = logging.getLogger("advsimplex.evaluation")
    level = eval_log.level
    eval_log.setLevel(logging.WARNING)  # no per-batch lines
    try:
        records = evaluate(
            EvalConfig(models=specs, datasets=["cifar10"], eps=(eps,), attacks=("pgd",),
                       settings=AttackSettings(pgd_steps=pgd_steps), samples=samples, seed=seed, batch_size=250)
        )  # fmt: skip
    finally:
        eval_log.setLevel(level)
    eval_seconds = time.perf_counter() - t0
    write_results(out / "eval" / "results.json", records, {"demo": True, "samples": samples, "eps": eps, "seed": seed})
    (out / "eval" / "report.md").write_text(markdown_report(records, "AdvSimplex demo"), encoding="utf-8")
    rows = []
    for (name, _, label), spec in zip(STAGES, specs):
        acc = {r["attack"]: r for r in records if r["model"] == spec.display}
        rows.append({"stage": name, "label": label, "clean": acc["clean"]["accuracy"], "pgd": acc["pgd"]["accuracy"],
                     "eval_seconds": acc["clean"]["seconds"] + acc["pgd"]["seconds"], **trained[name]})  # fmt: skip
    summary = {
        "model": "advsimplex-demo-vit", "dataset": "cifar10", "samples": records[0]["samples"], "seed": seed,
        "eval": {"attack": f"PGD-{pgd_steps} (CE, step ε/4, uniform start, best iterate)", "eps": eps},
        "rows": rows, "eval_seconds": eval_seconds, "wall_seconds": time.perf_counter() - t_start,
        "machine": _machine(),
    }  # fmt: skip
    out.mkdir(parents=True, exist_ok=True)
    (out / "summary.json").write_text(json.dumps(summary, indent=2), encoding="utf-8")
    return summary


def _machine() -> dict:
    import os

    import advsimplex

    return {
        "advsimplex": advsimplex.__version__, "torch": torch.__version__, "python": platform.python_version(),
        "cpu_threads": torch.get_num_threads(), "cpus": os.cpu_count(), "processor": platform.processor() or
        platform.machine(), "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
    }  # fmt: skip


def format_table(summary: dict) -> str:
    """The before/after table of :func:`run_demo`'s summary (markdown)."""
    eps = eps_label(summary["eval"]["eps"])
    pgd = summary["eval"]["attack"].split(" ")[0]
    lines = [
        f"Zero-shot CIFAR-10, {summary['samples']} test images (seed {summary['seed']}); robust = {pgd} at ε = {eps}",
        "",
        f"| model / stage | clean acc | robust acc ({pgd}, ε = {eps}) | training | train time |",
        "|---|---:|---:|---|---:|",
    ]
    for r in summary["rows"]:
        if r["method"] == "clip":
            what = f"contrastive, {r['steps']} steps × {r['batch_size']}"
        else:
            method = f"{r['method']} ({r['variant']}, λ = {r['lam']:g})" if r["method"] == "advsimplex" else r["method"]
            what = (f"{method}, {r['steps']} steps × {r['batch_size']}, m = {r['attack_steps']}, "
                    f"ε = {eps_label(r['eps'])}, α = {eps_label(r['alpha'])}")  # fmt: skip
        lines.append(f"| {r['label']} | {100 * r['clean']:.1f} % | {100 * r['pgd']:.1f} % | {what} | "
                     f"{r['train_seconds']:.0f} s |")  # fmt: skip
    m = summary["machine"]
    lines += [
        "",
        f"Wall time {summary['wall_seconds'] / 60:.1f} min (evaluation {summary['eval_seconds']:.0f} s) on "
        f"{m['cpu_threads']} CPU thread(s){', GPU ' + m['gpu'] if m['gpu'] else ''}; torch {m['torch']}.",
    ]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m advsimplex",
        description="The AdvSimplex demo: contrastive pre-training of a small open_clip ViT on CIFAR-10, then "
        "AdvSimplex and TeCoA fine-tuning with the same budget, with clean and PGD accuracy before and after. "
        "Runs offline on a CPU (about 5–10 minutes on 2 cores).",
    )
    parser.add_argument("--out", default="runs/demo", help="output folder (default runs/demo)")
    parser.add_argument("--samples", type=int, default=2000, help="test images evaluated (default 2000)")
    parser.add_argument("--eps", default="1/255", help="ε of the evaluation PGD (default 1/255)")
    parser.add_argument("--pgd-steps", type=int, default=10, help="steps of the evaluation PGD (default 10)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the evaluated subset and attacks")
    parser.add_argument("--resume", action="store_true", help="continue an interrupted demo from its checkpoints")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.add_argument("--info", action="store_true", help="print the installation report and exit")
    args = parser.parse_args(argv)
    from .. import info
    from ..runtime import parse_number, setup_logging

    if args.info:
        info.report()
        return 0
    try:
        eps = parse_number(args.eps)
    except ValueError:
        parser.error(f"--eps: {args.eps!r} is not a number or fraction like 1/255")
    if not 0 < eps <= 1:
        parser.error(f"--eps must lie in (0, 1] (pixel scale), got {args.eps}")
    if args.samples < 1 or args.pgd_steps < 1:
        parser.error("--samples and --pgd-steps must be positive")
    setup_logging()
    info.report(short=True)
    try:
        summary = run_demo(args.out, samples=args.samples, eps=eps, pgd_steps=args.pgd_steps, seed=args.seed,
                           progress=not args.no_progress, resume=args.resume)  # fmt: skip
    except (ConfigError, FileNotFoundError) as exc:
        print(f"python -m advsimplex: error: {exc}")
        return 2
    table = format_table(summary)
    (Path(args.out) / "table.md").write_text(table + "\n", encoding="utf-8")
    print("\n" + table)
    print(f"\nOutputs: {args.out}/ (summary.json, table.md, eval/report.md, one folder per stage)")
    return 0
