"""``advsimplex-eval`` / ``python -m advsimplex.evaluation``: zero-shot robustness of CLIP models.

Examples::

    advsimplex-eval --model runs/demo/advsimplex.safetensors --dataset cifar10 --samples 1000
    advsimplex-eval --model ViT-B-32 --pretrained /weights/openai-vitb32.pt --dataset paper --skip-missing \\
        --attacks pgd,cw,autoattack --eps 1/255,2/255,4/255 --out eval-vitb32
    advsimplex-eval --model a.safetensors --model b.safetensors --attacks simplex,simplex-transfer \\
        --source-model a.safetensors

Writes ``results.json``, ``report.md`` and ``robustness.png`` to ``--out`` and prints the report.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from ..runtime import DefaultsHelpFormatter, parse_number, prepare_output_dir, setup_logging
from .attacks import ATTACKS, AttackSettings
from .runner import DEFAULT_ATTACKS, DEFAULT_EPS, EvalConfig, EvaluationInputError, ModelSpec, evaluate
from .suite import DatasetNotFoundError, resolve_data_root, suite_table


def _csv(option: str, values: Sequence[str]) -> list[str]:
    """Comma-separated, repeatable option values → the non-empty parts, first occurrence kept."""
    parts = [p.strip() for value in values for p in value.split(",") if p.strip()]
    if not parts:
        raise ValueError(f"{option}: no value given")
    return list(dict.fromkeys(parts))


def parse_eps(values: Sequence[str]) -> tuple[float, ...]:
    """``--eps`` values (comma-separated, repeatable) → radii in [0, 1], in the order given."""
    out: list[float] = []
    for part in _csv("--eps", values):
        try:
            eps = parse_number(part)
        except ValueError as exc:
            raise ValueError(f"--eps: {exc}") from exc
        if not 0 <= eps <= 1:
            raise ValueError(f"--eps: {part} = {eps:g} is outside [0, 1] (pixels are in [0, 1]; try 4/255)")
        if eps not in out:
            out.append(eps)
    return tuple(out)


def parse_attacks(values: Sequence[str]) -> tuple[str, ...]:
    """``--attacks`` values (comma-separated, repeatable) → attack names, in the order given."""
    out = [a.lower() for a in _csv("--attacks", values)]
    for name in out:
        if name not in ATTACKS:
            raise ValueError(f"--attacks: unknown attack {name!r}; choose from {', '.join(ATTACKS)}")
    return tuple(dict.fromkeys(out))


def _models(args: argparse.Namespace) -> list[ModelSpec]:
    models, pretrained, labels = args.model or [], args.pretrained or [], args.label or []
    if not models:
        raise ValueError("--model: give at least one checkpoint or open_clip model name")
    if len(pretrained) not in (0, 1, len(models)):
        raise ValueError(
            f"--pretrained: give it once (for every --model) or once per --model ({len(models)}), got {len(pretrained)}"
        )
    if labels and len(labels) != len(models):
        raise ValueError(f"--label: give one per --model ({len(models)}), got {len(labels)}")
    if len(pretrained) == 1:
        pretrained = pretrained * len(models)
    out = []
    for i, model in enumerate(models):
        p = pretrained[i] if pretrained else None
        p = None if p in (None, "", "-", "none") else p
        if p is not None and (model.endswith(".safetensors") or model.startswith("local-dir:")):
            p = None  # checkpoints carry their own weights
        out.append(ModelSpec(model, p, labels[i] if labels else None))
    return out


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="advsimplex-eval",
        description="Zero-shot clean and robust accuracy of CLIP models (PGD, CW, AutoAttack, simplex attacks).",
        formatter_class=DefaultsHelpFormatter,
    )
    g = p.add_argument_group("models")
    g.add_argument(
        "--model",
        action="append",
        metavar="M",
        help="advsimplex .safetensors checkpoint, local-dir:<folder>, or open_clip model name (repeatable)",
    )
    g.add_argument(
        "--pretrained",
        action="append",
        metavar="P",
        help="pretrained tag or weights file for name models: once for all, or once per --model ('-': none)",
    )
    g.add_argument("--label", action="append", metavar="L", help="display name per --model (default: file stem)")
    g.add_argument("--source-model", metavar="M", help="source model of the simplex-transfer attack")
    g.add_argument("--source-pretrained", metavar="P", help="pretrained tag or file of --source-model")
    g = p.add_argument_group("data")
    g.add_argument(
        "--dataset",
        action="append",
        metavar="D",
        help="suite name (cifar10, imagenet, ...), 'paper' (the 15 sets), npz:<file>, imagefolder:<dir>, "
        "torchvision:<Name>[:<root>] (repeatable; default cifar10)",
    )
    g.add_argument(
        "--data-root", metavar="DIR", help="folder holding the datasets (default $ADVSIMPLEX_DATA or ../shared/data)"
    )
    g.add_argument("--skip-missing", action="store_true", help="skip (with a warning) datasets whose files are missing")
    g.add_argument("--samples", type=int, metavar="N", help="evaluate a seeded random subset of N images per dataset")
    g.add_argument(
        "--templates",
        action="append",
        metavar="T",
        help="paper | openai | openai-imagenet | simple-imagenet | a .txt/.json file | literal templates "
        "with {} (repeatable; default paper: 'This is a photo of a {}')",
    )
    g.add_argument("--logit-scale", type=float, help="logit scale s (default: the model's exp(logit_scale))")
    g.add_argument("--list-datasets", action="store_true", help="print the suite with the expected locations and exit")
    g = p.add_argument_group("attacks")
    g.add_argument(
        "--attacks",
        action="append",
        metavar="A",
        help=f"comma-separated, from {', '.join(ATTACKS)} (default {','.join(DEFAULT_ATTACKS)})",
    )
    g.add_argument("--eps", action="append", metavar="E", help="ℓ∞ radii, comma-separated (default 1/255,2/255,4/255)")
    d = AttackSettings()
    g.add_argument("--pgd-steps", type=int, default=d.pgd_steps)
    g.add_argument("--pgd-alpha", metavar="A", help="PGD step size (default ε/4)")
    g.add_argument("--cw-steps", type=int, default=d.cw_steps)
    g.add_argument("--cw-alpha", metavar="A", help="CW step size (default ε/4)")
    g.add_argument("--aa-iters", type=int, default=d.aa_iters, help="APGD iterations")
    g.add_argument("--aa-restarts", type=int, default=d.aa_restarts, help="APGD restarts")
    g.add_argument("--aa-targets", type=int, default=d.aa_targets, help="APGD-T target classes (capped at C-1)")
    g.add_argument("--simplex-steps", type=int, default=d.simplex_steps, help="PGD path length m")
    g.add_argument("--simplex-alpha", metavar="A", help="path step size (default ε/2)")
    g.add_argument("--simplex-order", type=int, default=d.simplex_order, help="3: triangles, 4: tetrahedra")
    g.add_argument("--simplex-samples", type=int, default=d.simplex_samples, help="points per simplex (κ)")
    g = p.add_argument_group("run")
    g.add_argument("--batch-size", type=int, default=64)
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--device", default="auto", help="auto (CUDA when available), cpu, cuda, cuda:1, ...")
    g.add_argument("--workers", type=int, default=0, help="DataLoader worker processes")
    g.add_argument("--out", default="eval-results", metavar="DIR", help="output folder")
    g.add_argument("--quiet", action="store_true", help="no progress messages")
    return p


def config_from_args(args: argparse.Namespace) -> EvalConfig:
    """Validated :class:`EvalConfig` from parsed arguments (``ValueError`` names the bad option)."""

    def alpha(option: str, value: str | None) -> float | None:
        if value is None:
            return None
        try:
            return parse_number(value)
        except ValueError as exc:
            raise ValueError(f"{option}: {exc}") from exc

    settings = AttackSettings(
        pgd_steps=args.pgd_steps, pgd_alpha=alpha("--pgd-alpha", args.pgd_alpha), cw_steps=args.cw_steps,
        cw_alpha=alpha("--cw-alpha", args.cw_alpha), aa_iters=args.aa_iters, aa_restarts=args.aa_restarts,
        aa_targets=args.aa_targets, simplex_steps=args.simplex_steps,
        simplex_alpha=alpha("--simplex-alpha", args.simplex_alpha), simplex_order=args.simplex_order,
        simplex_samples=args.simplex_samples,
    )  # fmt: skip
    try:
        settings.validate()
    except ValueError as exc:  # the message starts with the field name: name the option instead
        raise ValueError(f"--{str(exc).split(' ', 1)[0].replace('_', '-')}: {exc}") from exc
    source = None
    if args.source_model:
        source = ModelSpec(args.source_model, args.source_pretrained, f"source:{Path(args.source_model).stem}")
    config = EvalConfig(
        models=_models(args), datasets=args.dataset or ["cifar10"],
        eps=parse_eps(args.eps) if args.eps else DEFAULT_EPS,
        attacks=parse_attacks(args.attacks) if args.attacks else DEFAULT_ATTACKS, settings=settings, source=source,
        samples=args.samples, batch_size=args.batch_size, seed=args.seed, templates=args.templates or ["paper"],
        logit_scale=args.logit_scale, data_root=args.data_root, skip_missing=args.skip_missing, device=args.device,
        workers=args.workers,
    )  # fmt: skip
    config.validate()
    return config


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit status (0 on success, 2 on bad input)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.list_datasets:
        try:
            root = resolve_data_root(args.data_root)
        except DatasetNotFoundError as exc:
            parser.error(str(exc))
        print(f"data root: {root}\n")
        print(suite_table(root))
        return 0
    setup_logging(quiet=args.quiet)
    try:
        config = config_from_args(args)
        out = prepare_output_dir(args.out, "--out")  # before the evaluation: a bad --out costs nothing
    except ValueError as exc:
        parser.error(str(exc))
    try:
        records = evaluate(config)
    except (EvaluationInputError, FileNotFoundError, ImportError) as exc:
        parser.error(str(exc))
    from .report import markdown_report, plot_robustness, write_results

    report = markdown_report(records)
    try:
        write_results(out / "results.json", records, config.to_dict())
        (out / "report.md").write_text(report)
        plot_robustness(records, out / "robustness.png")
    except OSError as exc:  # a full disk, a permission or I/O error
        print(f"advsimplex-eval: error: cannot write the results into {out}: {exc.strerror or exc}", file=sys.stderr)
        print(report)
        return 2
    print(report)
    print(f"wrote {out / 'results.json'}, {out / 'report.md'}, {out / 'robustness.png'}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
