"""``advsimplex-train`` / ``python -m advsimplex.train``: adversarial fine-tuning of open_clip models.

Examples::

    advsimplex-train --config demo-advsimplex                        # a shipped preset (YAML)
    advsimplex-train --config my.yaml --method tecoa --eps 1/255 --lr 1e-5 --out-dir runs/tecoa
    advsimplex-train --model ViT-B-32 --pretrained /weights/openai.pt --dataset imagefolder:/data/imagenet \\
        --method advsimplex --tuning vpt --vpt-prompts 100 --optimizer sgd --lr 40 --steps 5000
    torchrun --nproc_per_node 4 -m advsimplex.train --config my.yaml     # DistributedDataParallel
    advsimplex-train --config my.yaml --resume auto                     # continue from the last checkpoint

Settings: defaults < ``--config`` file < flags. ``--print-config`` shows the result and exits.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from .config import ConfigError, add_config_flags, dump_yaml, list_presets, load_config, overrides_from_args


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="advsimplex-train",
        description="Adversarially fine-tune an open_clip model (AdvSimplex and baselines), or pre-train one "
        "contrastively (method clip).",
        epilog="Presets: " + ", ".join(list_presets()) + ". See python -m advsimplex.train --print-config.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--config", metavar="YAML", help="a YAML file or the name of a shipped preset")
    parser.add_argument("--print-config", action="store_true", help="print the resolved config (YAML) and exit")
    parser.add_argument("--list-presets", action="store_true", help="list the shipped presets and exit")
    parser.add_argument("--quiet", action="store_true", help="log warnings only")
    add_config_flags(parser)
    return parser


def setup_logging(quiet: bool = False) -> None:
    """Progress messages of advsimplex on stderr (INFO, or WARNING with ``quiet``); other libraries stay quiet."""
    logger = logging.getLogger("advsimplex")
    if not any(getattr(h, "_advsimplex", False) for h in logger.handlers):
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(message)s"))
        handler._advsimplex = True
        logger.addHandler(handler)
        logger.propagate = False
    logger.setLevel(logging.WARNING if quiet else logging.INFO)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.list_presets:
        print("\n".join(list_presets()))
        return 0
    try:
        cfg = load_config(args.config, overrides_from_args(args))
    except ConfigError as exc:
        parser.error(str(exc))
    if args.print_config:
        print(dump_yaml(cfg), end="")
        return 0
    setup_logging(quiet=args.quiet)
    from .trainer import train

    try:
        result = train(cfg)
    except (ConfigError, FileNotFoundError) as exc:
        print(f"advsimplex-train: error: {exc}", file=sys.stderr)
        return 2
    if result.finished and result.model_path is not None:
        print(f"trained model: {result.model_path}")
    elif not result.finished:
        print(f"stopped at step {result.step} of {result.total_steps}; continue with --resume auto")
    for ev in result.evaluations[-1:]:
        print(
            f"zero-shot accuracy ({ev['samples']} test images): clean {100 * ev['clean']:.1f} %, "
            f"PGD-{ev['pgd_steps']} at eps {ev['eps']:.4g}: {100 * ev['pgd']:.1f} %"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
