"""Training configuration: one flat dataclass, YAML presets, command-line overrides and validation.

Precedence: the dataclass defaults < the YAML file (``--config``; a preset name or a path; a file may
start from another with ``base: <preset or path>``) < command-line flags. Every field is a flag of
``advsimplex-train`` (``lr`` → ``--lr``, ``attack_steps`` → ``--attack-steps``); pixel-scale values
accept fractions (``--eps 2/255``). :meth:`TrainConfig.validate` raises :class:`ConfigError` whose
message starts with the name of the key at fault.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import math
import types
import typing
from dataclasses import dataclass, field, fields
from importlib import resources
from pathlib import Path

METHODS = ("advsimplex", "tecoa", "pmg", "fare", "trades", "sampled", "clip")
"""Training objectives (see :mod:`advsimplex.train.methods`); ``clip`` is contrastive pre-training."""
ADVERSARIAL_METHODS = tuple(m for m in METHODS if m != "clip")
TUNINGS = ("full", "vpt")
OPTIMIZERS = ("adamw", "sgd")
SCHEDULES = ("cosine", "constant")
PRECISIONS = ("auto", "fp32", "bf16")
TRADES_DIVERGENCES = ("kl", "l2")
PAPER_TEMPLATE = "This is a photo of a {}"
CAPTION_TEMPLATES = (
    "a photo of a {}.",
    "a blurry photo of a {}.",
    "a low resolution photo of a {}.",
    "a photo of the {}.",
    "This is a photo of a {}",
    "a close-up photo of a {}.",
    "a bright photo of a {}.",
    "a pixelated photo of a {}.",
)


class ConfigError(ValueError):
    """A bad training configuration; the message names the key (or file) at fault."""


def _f(default, help: str, group: str, **extra):
    """A dataclass field with its help text and flag group in the metadata."""
    meta = {"help": help, "group": group, **extra}
    if isinstance(default, list | tuple):
        return field(default_factory=lambda: list(default), metadata=meta)
    return field(default=default, metadata=meta)


@dataclass
class TrainConfig:
    """Everything a training run depends on (recorded in its checkpoints and ``config.yaml``)."""

    # model
    model: str = _f("ViT-B-32", "open_clip model name, local-dir:<folder>, or an advsimplex .safetensors", "model")
    pretrained: str | None = _f(None, "pretrained tag or local weights file for an open_clip name", "model")
    tuning: str = _f("full", "full: the whole image tower; vpt: visual prompt tokens only", "model")
    vpt_prompts: int = _f(8, "number of VPT prompt tokens (tuning: vpt)", "model")
    templates: list[str] = _f([PAPER_TEMPLATE], "zero-shot prompt templates of the class embeddings", "model")  # noqa: RUF009
    logit_scale: float | None = _f(None, "logit scale s of the zero-shot head (default exp(logit_scale))", "model")
    # data
    dataset: str = _f("cifar10", "cifar10, npz:<file>, imagefolder:<dir> or torchvision:<Name>[:<root>]", "data")
    split: str = _f("train", "split of the training data (train or test)", "data")
    limit: int | None = _f(None, "use only the first N training images", "data")
    hflip: bool = _f(False, "random horizontal flips of training images", "data")
    workers: int = _f(0, "DataLoader worker processes", "data")
    # method
    method: str = _f("advsimplex", f"training objective: {', '.join(METHODS)}", "method")
    eps: float = _f(2 / 255, "ℓ∞ radius ε of the training attack, pixel scale (2/255)", "method")
    alpha: float = _f(1 / 255, "PGD step size α, pixel scale", "method")
    attack_steps: int = _f(10, "PGD steps m (vertices of the adversarial path)", "method")
    init_std: float = _f(1e-3, "std of the Gaussian PGD start (spec §2)", "method")
    lam: float = _f(0.6, "λ: weight of the simplex alignment (advsimplex, sampled)", "method")
    kappa: float = _f(1.0, "κ of the closed-form bound (advsimplex)", "method")
    variant: str = _f("paper", "closed form: paper, paper-cross or taylor2 (advsimplex)", "method")
    order: int = _f(3, "simplex order Q: 3 (triangles) or 4 (tetrahedra)", "method")
    weighting: str = _f("impact", "simplex weights ω: impact, uniform or linear", "method")
    backend: str = _f("auto", "fused head backend: auto, reference, cpp, cuda, triton", "method")
    chunk_size: int | None = _f(None, "generic jets: pair streams per vmapped call; sampled: images per call", "method")
    jets: str = _f("auto", "embedding jets: auto (fast Taylor-mode for open_clip ViTs), fast or generic", "method")
    jet_kernels: str = _f("auto", "fast jets' LayerNorm/GELU/softmax rules: auto, torch or triton", "method")
    jet_checkpoint: bool | None = _f(None, "per-block activation checkpointing of the fast jets (default: by size)",
                                     "method")  # fmt: skip
    jet_micro_batch: int | None = _f(None, "images per jet computation (memory); default the whole batch", "method")
    samples: int = _f(10, "Monte-Carlo points per simplex (sampled)", "method")
    trades_beta: float = _f(6.0, "β: weight of the point-wise alignment (trades)", "method")
    trades_divergence: str = _f("kl", "point-wise divergence: kl (KL(g(x)‖g(x+δ_i))) or l2 (trades)", "method")
    pmg_orig_weight: float = _f(1.0, "weight of KL(original(x_adv) ‖ model(x_adv)) (pmg)", "method")
    pmg_clean_weight: float = _f(1.0, "weight of KL(model(x) ‖ model(x_adv)) (pmg)", "method")
    fare_clean_weight: float = _f(0.0, "weight λ_c of the clean embedding distance (fare)", "method")
    caption_templates: list[str] = _f(CAPTION_TEMPLATES, "caption templates of the clip method", "method")  # noqa: RUF009
    # optimisation
    optimizer: str = _f("adamw", "adamw or sgd", "optim")
    lr: float = _f(1e-5, "peak learning rate", "optim")
    weight_decay: float = _f(1e-4, "weight decay", "optim")
    momentum: float = _f(0.9, "SGD momentum", "optim")
    betas: list[float] = _f([0.9, 0.999], "AdamW betas", "optim")  # noqa: RUF009
    schedule: str = _f("cosine", "learning-rate schedule after warmup: cosine or constant", "optim")
    warmup_steps: int = _f(0, "linear warmup steps", "optim")
    min_lr_ratio: float = _f(0.0, "final learning rate of the cosine schedule, as a fraction of lr", "optim")
    grad_clip: float = _f(0.0, "clip the gradient norm to this value (0: off)", "optim")
    # run
    steps: int | None = _f(None, "optimizer steps (default: epochs × steps per epoch)", "run")
    epochs: int = _f(1, "epochs, when steps is not given", "run")
    batch_size: int = _f(32, "images per process per micro-batch (global batch = this × processes × grad_accum)",
                         "run")  # fmt: skip
    grad_accum: int = _f(1, "micro-batches per optimizer step (gradient accumulation)", "run")
    seed: int = _f(0, "seed of the initialisation, the data order and every attack", "run")
    precision: str = _f("auto", "auto (bf16 autocast on CUDA, fp32 on CPU), fp32 or bf16", "run")
    device: str = _f("auto", "auto, cpu, cuda, cuda:N (under torchrun: the local GPU)", "run")
    out_dir: str = _f("runs/train", "output folder: checkpoints, metrics.csv, tensorboard, model.safetensors", "run")
    ckpt_every: int = _f(500, "write a checkpoint every N steps (0: only at the end)", "run")
    keep_checkpoints: int = _f(2, "number of recent checkpoints kept", "run")
    resume: str | None = _f(None, "auto (latest checkpoint in out_dir) or a checkpoint file", "run")
    stop_after_steps: int | None = _f(None, "stop this invocation after N more steps (a checkpoint is written)",
                                      "run")  # fmt: skip
    log_every: int = _f(10, "log metrics every N steps", "run")
    tensorboard: bool = _f(True, "write TensorBoard event files", "run")
    progress: bool = _f(True, "show a tqdm progress bar", "run")
    eval_samples: int = _f(500, "test images of the final clean/PGD evaluation (0: none)", "run")
    eval_every: int = _f(0, "also evaluate every N steps (0: only at the end)", "run")
    eval_eps: float | None = _f(None, "ε of the evaluation PGD (default: eps)", "run")
    eval_pgd_steps: int = _f(10, "steps of the evaluation PGD (step ε/4, uniform start)", "run")
    eval_batch_size: int = _f(256, "batch size of the evaluation", "run")

    # ------------------------------------------------------------------ construction

    @classmethod
    def from_dict(cls, values: dict, source: str = "config") -> TrainConfig:
        """A config from ``values`` (unknown keys raise :class:`ConfigError` with close matches)."""
        cfg = cls()
        cfg.update(values, source)
        return cfg

    def update(self, values: dict, source: str = "config") -> TrainConfig:
        """Set the keys of ``values`` (coerced to the field types); returns self."""
        known = {f.name: f for f in fields(self)}
        for key, value in values.items():
            name = key.replace("-", "_")
            if name not in known:
                close = difflib.get_close_matches(name, known, n=3)
                hint = f"; did you mean {', '.join(close)}?" if close else ""
                raise ConfigError(f"{key}: unknown config key in {source}{hint}")
            setattr(self, name, _coerce(known[name], value))
        return self

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    # ------------------------------------------------------------------ validation

    @property
    def adversarial(self) -> bool:
        return self.method in ADVERSARIAL_METHODS

    def validate(self) -> TrainConfig:
        """Raise :class:`ConfigError` (message starting with the key) for any value out of range."""

        def need(ok: bool, key: str, message: str) -> None:
            if not ok:
                raise ConfigError(f"{key}: {message}, got {getattr(self, key)!r}")

        def choice(key: str, options: tuple) -> None:
            need(getattr(self, key) in options, key, f"must be one of {', '.join(map(str, options))}")

        def positive_int(key: str, allow_none: bool = False, allow_zero: bool = False) -> None:
            v = getattr(self, key)
            if v is None and allow_none:
                return
            ok = isinstance(v, int) and not isinstance(v, bool) and (v >= 0 if allow_zero else v >= 1)
            need(ok, key, "must be an int >= 0" if allow_zero else "must be a positive int")

        def in_range(key: str, lo: float, hi: float, lo_open=False, hi_open=False, what="") -> None:
            v = getattr(self, key)
            ok = isinstance(v, int | float) and math.isfinite(v)
            ok = ok and (v > lo if lo_open else v >= lo) and (v < hi if hi_open else v <= hi)
            interval = f"{'(' if lo_open else '['}{lo:g}, {hi:g}{')' if hi_open else ']'}"
            need(ok, key, f"must lie in {interval}{what}")

        from ..jets.encoders import JET_MODES
        from ..jets.vit import KERNELS as JET_KERNELS
        from ..ops.simplex_head import BACKENDS
        from ..reference import CLOSED_FORM_VARIANTS, WEIGHTINGS

        need(isinstance(self.model, str) and bool(self.model), "model", "must name a model")
        choice("method", METHODS)
        choice("tuning", TUNINGS)
        if self.tuning == "vpt":
            positive_int("vpt_prompts")
            need(self.method != "clip", "tuning", "vpt cannot be combined with method clip (it trains both towers)")
        need(bool(self.templates) and all("{}" in t for t in self.templates), "templates",
             "must be a non-empty list of format strings containing '{}'")  # fmt: skip
        if self.logit_scale is not None:
            in_range("logit_scale", 0, math.inf, lo_open=True, hi_open=True)
        need(isinstance(self.dataset, str) and bool(self.dataset), "dataset", "must name a dataset source")
        choice("split", ("train", "test"))
        positive_int("limit", allow_none=True)
        positive_int("workers", allow_zero=True)
        if self.adversarial:
            in_range("eps", 0, 1, lo_open=True, what=" (pixel scale: 2/255 ≈ 0.0078 is the paper's)")
            in_range("alpha", 0, 1, lo_open=True, what=" (pixel scale)")
            positive_int("attack_steps")
            in_range("init_std", 0, 1)
        if self.method in ("advsimplex", "sampled"):
            choice("order", (3, 4))
            need(self.attack_steps >= self.order - 1, "attack_steps",
                 f"must be >= order - 1 = {self.order - 1} for the path to have a simplex")  # fmt: skip
            in_range("lam", 0, math.inf, hi_open=True)
            choice("weighting", WEIGHTINGS)
            choice("backend", BACKENDS)
            choice("jets", JET_MODES)
            choice("jet_kernels", JET_KERNELS)
            positive_int("jet_micro_batch", allow_none=True)
        if self.method == "advsimplex":
            choice("variant", CLOSED_FORM_VARIANTS)
            in_range("kappa", 0, math.inf, lo_open=True, hi_open=True)
        if self.method == "sampled":
            positive_int("samples")
        positive_int("chunk_size", allow_none=True)
        if self.method == "trades":
            choice("trades_divergence", TRADES_DIVERGENCES)
            in_range("trades_beta", 0, math.inf, hi_open=True)
        if self.method == "pmg":
            in_range("pmg_orig_weight", 0, math.inf, hi_open=True)
            in_range("pmg_clean_weight", 0, math.inf, hi_open=True)
        if self.method == "fare":
            in_range("fare_clean_weight", 0, 1)
        if self.method == "clip":
            need(bool(self.caption_templates) and all("{}" in t for t in self.caption_templates),
                 "caption_templates", "must be a non-empty list of format strings containing '{}'")  # fmt: skip
        choice("optimizer", OPTIMIZERS)
        in_range("lr", 0, math.inf, lo_open=True, hi_open=True)
        in_range("weight_decay", 0, math.inf, hi_open=True)
        in_range("momentum", 0, 1, hi_open=True)
        need(len(self.betas) == 2 and all(0 <= b < 1 for b in self.betas), "betas", "must be two numbers in [0, 1)")
        choice("schedule", SCHEDULES)
        positive_int("warmup_steps", allow_zero=True)
        in_range("min_lr_ratio", 0, 1)
        in_range("grad_clip", 0, math.inf, hi_open=True)
        positive_int("steps", allow_none=True)
        positive_int("epochs")
        positive_int("batch_size")
        positive_int("grad_accum")
        need(isinstance(self.seed, int) and self.seed >= 0, "seed", "must be an int >= 0")
        choice("precision", PRECISIONS)
        need(self.device == "auto" or self.device == "cpu" or self.device.startswith("cuda"), "device",
             "must be auto, cpu, cuda or cuda:N")  # fmt: skip
        need(bool(self.out_dir), "out_dir", "must be a folder")
        positive_int("ckpt_every", allow_zero=True)
        positive_int("keep_checkpoints")
        positive_int("stop_after_steps", allow_none=True)
        positive_int("log_every")
        positive_int("eval_samples", allow_zero=True)
        positive_int("eval_every", allow_zero=True)
        if self.eval_eps is not None:
            in_range("eval_eps", 0, 1, what=" (pixel scale)")
        positive_int("eval_pgd_steps")
        positive_int("eval_batch_size")
        return self


# ---------------------------------------------------------------------- types and values


def _field_type(f: dataclasses.Field) -> tuple[type, bool, bool]:
    """(base type, optional, is-list) of a field's annotation (the module uses postponed annotations)."""
    hint = typing.get_type_hints(TrainConfig)[f.name]
    optional = False
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        optional, hint = True, args[0]
    if typing.get_origin(hint) is list:
        return typing.get_args(hint)[0], optional, True
    return hint, optional, False


def parse_number(text: str) -> float:
    """``2/255``, ``0.5/255``, ``1e-3`` → a finite float (``ValueError`` otherwise)."""
    num, slash, den = text.strip().partition("/")
    value = float(num) / float(den) if slash else float(num)
    if not math.isfinite(value):
        raise ValueError(f"{text!r} is not finite")
    return value


def _scalar(f: dataclasses.Field, kind: type, value):
    if kind is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "yes", "1", "on", "false", "no", "0", "off"):
            return value.lower() in ("true", "yes", "1", "on")
        raise ConfigError(f"{f.name}: expected true or false, got {value!r}")
    if kind is float:
        if isinstance(value, bool):
            raise ConfigError(f"{f.name}: expected a number, got {value!r}")
        if isinstance(value, int | float):
            return float(value)
        try:
            return parse_number(str(value))
        except (ValueError, ZeroDivisionError) as exc:
            raise ConfigError(f"{f.name}: expected a number (or a fraction like 2/255), got {value!r}") from exc
    if kind is int:
        if isinstance(value, bool):
            raise ConfigError(f"{f.name}: expected an int, got {value!r}")
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        try:
            return int(str(value))
        except ValueError as exc:
            raise ConfigError(f"{f.name}: expected an int, got {value!r}") from exc
    if not isinstance(value, str | int | float) or isinstance(value, bool):
        raise ConfigError(f"{f.name}: expected a string, got {value!r}")
    return str(value)


def _coerce(f: dataclasses.Field, value):
    """``value`` (from YAML or a flag) as the type of field ``f``."""
    kind, optional, is_list = _field_type(f)
    if value is None or (optional and isinstance(value, str) and value.lower() in ("none", "null", "")):
        if not optional:
            raise ConfigError(f"{f.name}: may not be empty")
        return None
    if is_list:
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{f.name}: expected a list, got {value!r}")
        return [_scalar(f, kind, v) for v in value]
    return _scalar(f, kind, value)


# ---------------------------------------------------------------------- files


def presets_folder():
    return resources.files("advsimplex") / "configs" / "train"


def list_presets() -> list[str]:
    """Names of the YAML presets shipped in ``advsimplex/configs/train``."""
    return sorted(p.name[: -len(".yaml")] for p in presets_folder().iterdir() if p.name.endswith(".yaml"))


def resolve_config_path(name: str) -> Path:
    """A YAML path, or the name of a shipped preset (``demo-advsimplex``)."""
    path = Path(name)
    if path.is_file():
        return path
    if path.suffix not in (".yaml", ".yml") and "/" not in name:
        candidate = presets_folder() / f"{name}.yaml"
        if candidate.is_file():
            return Path(str(candidate))
    raise ConfigError(f"config: {name!r} is neither a YAML file nor a preset (presets: {', '.join(list_presets())})")


def read_yaml(name: str, _seen: tuple[str, ...] = ()) -> dict:
    """The key/values of a YAML config (a preset name or path), with ``base:`` chains merged."""
    import yaml

    path = resolve_config_path(name)
    key = str(path.resolve())
    if key in _seen:
        raise ConfigError(f"config: 'base' chain loops back to {path}")
    try:
        values = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"config: {path} is not valid YAML: {exc}") from exc
    if not isinstance(values, dict):
        raise ConfigError(f"config: {path} must hold a mapping of keys to values")
    base = values.pop("base", None)
    if base is None:
        return values
    if not isinstance(base, str):
        raise ConfigError(f"base: expected a preset name or path in {path}, got {base!r}")
    if not Path(base).is_absolute() and (path.parent / base).is_file():
        base = str(path.parent / base)
    return {**read_yaml(base, (*_seen, key)), **values}


def load_config(name: str | None = None, overrides: dict | None = None) -> TrainConfig:
    """Defaults < YAML ``name`` (preset or path, optional) < ``overrides``; validated."""
    cfg = TrainConfig()
    if name is not None:
        cfg.update(read_yaml(name), source=str(name))
    if overrides:
        cfg.update(overrides, source="overrides")
    return cfg.validate()


def dump_yaml(cfg: TrainConfig) -> str:
    import yaml

    return yaml.safe_dump(cfg.to_dict(), sort_keys=False, allow_unicode=True)


# ---------------------------------------------------------------------- flags


GROUP_TITLES = {
    "model": "model", "data": "data", "method": "method (math spec §2, §5, §6; baselines)",
    "optim": "optimisation", "run": "run, checkpoints, logging, evaluation",
}  # fmt: skip


def add_config_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per config field (default ``SUPPRESS``: only flags given override the YAML)."""
    groups = {g: parser.add_argument_group(title) for g, title in GROUP_TITLES.items()}
    defaults = TrainConfig()
    for f in fields(TrainConfig):
        kind, _, is_list = _field_type(f)
        flag = "--" + f.name.replace("_", "-")
        default = getattr(defaults, f.name)
        shown = f"{default:.6g}" if isinstance(default, float) else default
        kwargs = {"dest": f.name, "default": argparse.SUPPRESS, "help": f"{f.metadata['help']} (default {shown})"}
        group = groups[f.metadata["group"]]
        if kind is bool:
            group.add_argument(flag, action=argparse.BooleanOptionalAction, **kwargs)
        elif is_list:
            group.add_argument(flag, nargs="+", metavar="VALUE", **kwargs)
        else:
            group.add_argument(flag, metavar=kind.__name__.upper(), **kwargs)


def overrides_from_args(args: argparse.Namespace) -> dict:
    names = {f.name for f in fields(TrainConfig)}
    return {k: v for k, v in vars(args).items() if k in names}
