"""Ranges and choices of a :class:`~.config.TrainConfig`: :func:`validate_config` raises
:class:`~.config.ConfigError` whose message starts with the key at fault, e.g.
``eps: must lie in (0, 1] (pixel scale: 2/255 ≈ 0.0078 is the paper's), got 2.0``.

One function per group of keys (model, data, method, optimisation, run); the method checks only
look at the keys the chosen method uses.
"""

from __future__ import annotations

import math

from .choices import (
    METHODS,
    NONFINITE_POLICIES,
    OPTIMIZERS,
    PRECISIONS,
    SCHEDULES,
    TRADES_DIVERGENCES,
    TUNINGS,
    ConfigError,
)

ConfigLike = object
"""A :class:`~.config.TrainConfig` (the schema imports this module, so it is not imported here)."""


class _Checks:
    """The rules every key is checked with; each raises ``ConfigError("<key>: <rule>, got <value>")``."""

    def __init__(self, cfg: ConfigLike) -> None:
        self.cfg = cfg

    def need(self, ok: bool, key: str, message: str) -> None:
        if not ok:
            raise ConfigError(f"{key}: {message}, got {getattr(self.cfg, key)!r}")

    def choice(self, key: str, options: tuple) -> None:
        self.need(getattr(self.cfg, key) in options, key, f"must be one of {', '.join(map(str, options))}")

    def count(self, key: str, allow_none: bool = False, allow_zero: bool = False) -> None:
        """A positive int (or >= 0 with ``allow_zero``; or None with ``allow_none``)."""
        v = getattr(self.cfg, key)
        if v is None and allow_none:
            return
        ok = isinstance(v, int) and not isinstance(v, bool) and (v >= 0 if allow_zero else v >= 1)
        self.need(ok, key, "must be an int >= 0" if allow_zero else "must be a positive int")

    def in_range(self, key: str, lo: float, hi: float, lo_open=False, hi_open=False, what="") -> None:
        v = getattr(self.cfg, key)
        ok = isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
        ok = ok and (v > lo if lo_open else v >= lo) and (v < hi if hi_open else v <= hi)
        interval = f"{'(' if lo_open else '['}{lo:g}, {hi:g}{')' if hi_open else ']'}"
        self.need(ok, key, f"must lie in {interval}{what}")

    def non_negative(self, key: str) -> None:
        self.in_range(key, 0, math.inf, hi_open=True)

    def templates(self, key: str) -> None:
        v = getattr(self.cfg, key)
        ok = isinstance(v, list) and bool(v) and all(isinstance(t, str) and "{}" in t for t in v)
        self.need(ok, key, "must be a non-empty list of format strings containing '{}'")


def validate_config(cfg: ConfigLike) -> None:
    """Raise :class:`ConfigError` for the first key of ``cfg`` that is out of range."""
    c = _Checks(cfg)
    _check_model(c, cfg)
    _check_data(c, cfg)
    _check_method(c, cfg)
    _check_optimisation(c, cfg)
    _check_run(c, cfg)


def _check_model(c: _Checks, cfg: ConfigLike) -> None:
    c.need(isinstance(cfg.model, str) and bool(cfg.model), "model", "must name a model")
    c.choice("method", METHODS)
    c.choice("tuning", TUNINGS)
    if cfg.tuning == "vpt":
        c.count("vpt_prompts")
        c.need(cfg.method != "clip", "tuning", "vpt cannot be combined with method clip (it trains both towers)")
    c.templates("templates")
    if cfg.logit_scale is not None:
        c.in_range("logit_scale", 0, math.inf, lo_open=True, hi_open=True)


def _check_data(c: _Checks, cfg: ConfigLike) -> None:
    c.need(isinstance(cfg.dataset, str) and bool(cfg.dataset), "dataset", "must name a dataset source")
    c.choice("split", ("train", "test"))
    c.count("limit", allow_none=True)
    c.count("workers", allow_zero=True)


def _check_method(c: _Checks, cfg: ConfigLike) -> None:
    from ..alignment import SECOND_ORDER
    from ..ops.simplex_head import BACKENDS
    from ..reference import CLOSED_FORM_VARIANTS, WEIGHTINGS

    if cfg.adversarial:
        c.in_range("eps", 0, 1, lo_open=True, what=" (pixel scale: 2/255 ≈ 0.0078 is the paper's)")
        c.in_range("alpha", 0, 1, lo_open=True, what=" (pixel scale)")
        c.count("attack_steps")
        c.in_range("init_std", 0, 1)
    if cfg.method in ("advsimplex", "sampled"):
        c.choice("order", (3, 4))
        c.need(cfg.attack_steps >= cfg.order - 1, "attack_steps",
               f"must be >= order - 1 = {cfg.order - 1} for the path to have a simplex")  # fmt: skip
        c.non_negative("lam")
        c.choice("weighting", WEIGHTINGS)
        c.choice("backend", BACKENDS)
        _check_jet_options(cfg)
    if cfg.method == "advsimplex":
        c.choice("variant", CLOSED_FORM_VARIANTS)
        c.choice("second_order", SECOND_ORDER)
        c.need(cfg.second_order != "collapsed" or cfg.variant == "paper", "second_order",
               "collapsed serves variant paper only (the other closed forms need the pair streams)")  # fmt: skip
        c.in_range("kappa", 0, math.inf, lo_open=True, hi_open=True)
    if cfg.method == "sampled":
        c.count("samples")
        c.count("sample_batch_size", allow_none=True)
    if cfg.method == "trades":
        c.choice("trades_divergence", TRADES_DIVERGENCES)
        c.non_negative("trades_beta")
    if cfg.method == "pmg":
        c.non_negative("pmg_orig_weight")
        c.non_negative("pmg_clean_weight")
    if cfg.method == "fare":
        c.in_range("fare_clean_weight", 0, 1)
    if cfg.method == "agft":
        c.in_range("agft_scale", 0, math.inf, lo_open=True, hi_open=True)
        c.in_range("agft_gamma", 0, math.inf, lo_open=True, hi_open=True)
    if cfg.method == "clip":
        c.templates("caption_templates")


JET_KEYS = {"jets": "mode", "jet_rules": "rules", "jet_checkpoint": "checkpoint", "jet_micro_batch": "micro_batch",
            "jet_chunk_size": "chunk_size"}  # fmt: skip
"""Config key → field of :class:`advsimplex.jets.JetOptions`, which validates them (once, there)."""


def _check_jet_options(cfg: ConfigLike) -> None:
    from ..jets import JetOptions

    for key, field in JET_KEYS.items():
        try:
            JetOptions(**{field: getattr(cfg, key)})
        except ValueError as exc:
            raise ConfigError(f"{key}: {exc}") from exc


def _check_optimisation(c: _Checks, cfg: ConfigLike) -> None:
    c.choice("optimizer", OPTIMIZERS)
    c.in_range("lr", 0, math.inf, lo_open=True, hi_open=True)
    c.non_negative("weight_decay")
    c.in_range("momentum", 0, 1, hi_open=True)
    ok = isinstance(cfg.betas, list) and len(cfg.betas) == 2 and all(0 <= b < 1 for b in cfg.betas)
    c.need(ok, "betas", "must be two numbers in [0, 1)")
    c.choice("schedule", SCHEDULES)
    c.count("warmup_steps", allow_zero=True)
    c.in_range("min_lr_ratio", 0, 1)
    c.non_negative("grad_clip")
    c.choice("nonfinite", NONFINITE_POLICIES)


def _check_run(c: _Checks, cfg: ConfigLike) -> None:
    c.count("steps", allow_none=True)
    c.count("epochs")
    c.count("batch_size")
    c.count("grad_accum")
    c.need(isinstance(cfg.seed, int) and not isinstance(cfg.seed, bool) and cfg.seed >= 0, "seed",
           "must be an int >= 0")  # fmt: skip
    c.choice("precision", PRECISIONS)
    c.need(isinstance(cfg.device, str) and (cfg.device in ("auto", "cpu") or cfg.device.startswith("cuda")), "device",
           "must be auto, cpu, cuda or cuda:N")  # fmt: skip
    c.need(isinstance(cfg.out_dir, str) and bool(cfg.out_dir), "out_dir", "must be a folder")
    c.count("ckpt_every", allow_zero=True)
    c.count("keep_checkpoints")
    c.need(cfg.resume is None or (isinstance(cfg.resume, str) and bool(cfg.resume)), "resume",
           "must be auto or a checkpoint file")  # fmt: skip
    c.need(not (cfg.overwrite and cfg.resume is not None), "overwrite",
           "cannot be combined with resume (overwrite deletes the run that resume would continue)")  # fmt: skip
    c.count("stop_after_steps", allow_none=True)
    c.count("log_every")
    c.count("eval_samples", allow_zero=True)
    c.count("eval_every", allow_zero=True)
    if cfg.eval_eps is not None:
        c.in_range("eval_eps", 0, 1, what=" (pixel scale)")
    c.count("eval_pgd_steps")
    c.count("eval_batch_size")
