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
import sys
from collections.abc import Sequence

from ..runtime import setup_logging
from .config import ConfigError
from .flags import add_config_flags, overrides_from_args
from .presets import dump_yaml, list_presets, load_config


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="advsimplex-train",
        description="Adversarially fine-tune an open_clip model (AdvSimplex and baselines), or pre-train one "
        "contrastively (method clip).",
        epilog="Presets: " + ", ".join(list_presets()) + ". See python -m advsimplex.train --print-config. "
        "Exit status: 0 done (or stopped by --stop-after-steps), 1 stopped by a non-finite value, 2 bad input "
        "(config, files, out-dir, checkpoint), 130 interrupted.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--config", metavar="YAML", help="a YAML file or the name of a shipped preset")
    parser.add_argument("--print-config", action="store_true", help="print the resolved config (YAML) and exit")
    parser.add_argument("--list-presets", action="store_true", help="list the shipped presets and exit")
    parser.add_argument("--quiet", action="store_true", help="log warnings only")
    add_config_flags(parser)
    return parser


def _error(message: object, code: int = 2) -> int:
    print(f"advsimplex-train: error: {message}", file=sys.stderr)
    return code


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
    from .checkpoint import CheckpointError
    from .trainer import NonFiniteError, train

    try:
        result = train(cfg)
    except (ConfigError, CheckpointError, FileNotFoundError) as exc:
        return _error(exc)
    except NonFiniteError as exc:
        return _error(exc, 1)
    except OSError as exc:  # a full disk, a permission or I/O error while writing
        return _error(f"{exc.strerror or exc}{f': {exc.filename}' if exc.filename else ''} (out_dir {cfg.out_dir})")
    except KeyboardInterrupt:
        return _error("interrupted; continue with --resume auto from the last checkpoint", 130)
    if result.finished and result.model_path is not None:
        print(f"trained model: {result.model_path}")
    elif not result.finished:
        print(f"stopped at step {result.step} of {result.total_steps}; continue with --resume auto")
    if result.skipped_steps:
        print(f"updates skipped for non-finite values (nonfinite: skip) at steps {result.skipped_steps}")
    for ev in result.evaluations[-1:]:
        print(
            f"zero-shot accuracy ({ev['samples']} test images): clean {100 * ev['clean']:.1f} %, "
            f"PGD-{ev['pgd_steps']} at eps {ev['eps']:.4g}: {100 * ev['pgd']:.1f} %"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
