"""``advsimplex-train``'s flags: one per :class:`~.config.TrainConfig` key (``attack_steps`` →
``--attack-steps``), grouped as in the config, with the key's help text and its default shown once."""

from __future__ import annotations

import argparse

from .coercion import field_type
from .config import TrainConfig, config_fields

GROUP_TITLES = {
    "model": "model", "data": "data", "method": "method (math spec §2, §5, §6; baselines)",
    "optim": "optimisation", "run": "run, checkpoints, logging, evaluation",
}  # fmt: skip


def flag_help(help_text: str, default) -> str:
    """The help text, followed by ``(default: …)`` unless the text already says what the default is."""
    if "default" in help_text:
        return help_text.replace("%", "%%")
    if default is None:
        shown = "none"
    elif isinstance(default, float):
        shown = f"{default:.6g}"
    elif isinstance(default, list):
        shown = " ".join(map(str, default))
    else:
        shown = default
    return f"{help_text} (default: {shown})".replace("%", "%%")


def add_config_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per config field (default ``SUPPRESS``: only flags given override the YAML)."""
    groups = {g: parser.add_argument_group(title) for g, title in GROUP_TITLES.items()}
    defaults = TrainConfig()
    for f in config_fields():
        kind, _, is_list = field_type(TrainConfig, f.name)
        flag = "--" + f.name.replace("_", "-")
        help_text = flag_help(f.metadata["help"], getattr(defaults, f.name))
        kwargs = {"dest": f.name, "default": argparse.SUPPRESS, "help": help_text}
        group = groups[f.metadata["group"]]
        if kind is bool:
            group.add_argument(flag, action=argparse.BooleanOptionalAction, **kwargs)
        elif is_list:
            group.add_argument(flag, nargs="+", metavar="VALUE", **kwargs)
        else:
            group.add_argument(flag, metavar=kind.__name__.upper(), **kwargs)


def overrides_from_args(args: argparse.Namespace) -> dict:
    """The config keys given as flags (``{name: raw value}``)."""
    names = {f.name for f in config_fields()}
    return {k: v for k, v in vars(args).items() if k in names}
