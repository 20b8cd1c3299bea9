"""The choices of the training configuration's keys and :class:`ConfigError` (shared by the schema, the coercion
and the validation of :class:`~.config.TrainConfig`)."""

from __future__ import annotations

METHODS = ("advsimplex", "tecoa", "pmg", "fare", "trades", "agft", "sampled", "clip")
"""Training objectives (see :mod:`advsimplex.train.methods`); ``clip`` is contrastive pre-training."""
ADVERSARIAL_METHODS = tuple(m for m in METHODS if m != "clip")
TUNINGS = ("full", "vpt")
OPTIMIZERS = ("adamw", "sgd")
SCHEDULES = ("cosine", "constant")
PRECISIONS = ("auto", "fp32", "bf16")
TRADES_DIVERGENCES = ("kl", "l2")
NONFINITE_POLICIES = ("error", "skip")
RESUME_POLICIES = ("same", "free", "total")
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
