"""The training configuration's schema: one flat dataclass, :class:`TrainConfig`, with each key's type,
default, help text, flag group and resume policy.

Where the values come from and how they are checked lives beside it, one job per module:
:mod:`.coercion` (text/YAML values → the field types), :mod:`.validation` (ranges and choices;
:class:`ConfigError` messages start with the key at fault), :mod:`.presets` (YAML files, the shipped
presets, ``base:`` chains) and :mod:`.flags` (one ``advsimplex-train`` flag per key). Precedence: the
defaults < the YAML file (``--config``) < command-line flags.

Resume policy (``metadata["resume"]``) of each key, applied when a run is resumed (:mod:`.resume`):
``same`` — the value shapes the training trajectory and must equal the checkpoint's; ``free`` — it
does not (logging, evaluation, checkpointing, the device, implementation choices of the same
mathematics) and may change; ``total`` — ``steps``/``epochs``: the total may change only with the
``constant`` schedule (a cosine schedule depends on the total).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field, fields

from .choices import (  # noqa: F401 (re-exported: the schema's public names)
    ADVERSARIAL_METHODS,
    CAPTION_TEMPLATES,
    METHODS,
    NONFINITE_POLICIES,
    OPTIMIZERS,
    PAPER_TEMPLATE,
    PRECISIONS,
    RESUME_POLICIES,
    SCHEDULES,
    TRADES_DIVERGENCES,
    TUNINGS,
    ConfigError,
)
from .coercion import coerce_values
from .validation import validate_config


def _f(default, help: str, group: str, resume: str = "same"):
    """A dataclass field with its help text, flag group and resume policy in the metadata."""
    meta = {"help": help, "group": group, "resume": resume}
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
    workers: int = _f(0, "DataLoader worker processes", "data", resume="free")
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
    backend: str = _f("auto", "fused head backend: auto, reference, cpp, cuda, triton", "method", resume="free")
    jets: str = _f(
        "auto", "embedding jets: auto (fast Taylor-mode for open_clip ViTs), fast or generic", "method", resume="free"
    )
    jet_rules: str = _f(
        "auto", "fast jets' LayerNorm/GELU/softmax rule kernels: auto, reference, cpp or triton", "method",
        resume="free",
    )  # fmt: skip
    jet_checkpoint: bool | None = _f(None, "per-block activation checkpointing of the fast jets (default: by size)",
                                     "method", resume="free")  # fmt: skip
    jet_micro_batch: int | None = _f(
        None, "images per jet computation (memory); default the whole batch", "method", resume="free"
    )
    jet_chunk_size: int | None = _f(
        None, "generic torch.func jets: pair streams per vmapped call (memory)", "method", resume="free"
    )
    second_order: str = _f(
        "auto", "second-order jets of the closed form: auto (collapsed for paper), pairs or collapsed", "method",
        resume="free",
    )  # fmt: skip
    sample_batch_size: int | None = _f(
        None, "perturbed images per forward pass of the sampled method (memory)", "method", resume="free"
    )
    samples: int = _f(10, "Monte-Carlo points per simplex (sampled)", "method")
    trades_beta: float = _f(6.0, "β: weight of the point-wise alignment (trades)", "method")
    trades_divergence: str = _f("kl", "point-wise divergence: kl (KL(g(x)‖g(x+δ_i))) or l2 (trades)", "method")
    pmg_orig_weight: float = _f(1.0, "weight of KL(original(x_adv) ‖ model(x_adv)) (pmg)", "method")
    pmg_clean_weight: float = _f(1.0, "weight of KL(model(x) ‖ model(x_adv)) (pmg)", "method")
    fare_clean_weight: float = _f(0.0, "weight λ_c of the clean embedding distance (fare)", "method")
    agft_scale: float = _f(180.0, "training logit scale s_t of the soft cross-entropy (agft)", "method")
    agft_gamma: float = _f(0.4, "γ of the soft targets softmax(γ·s_t·cos(f_0(x), T)) (agft)", "method")
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
    steps: int | None = _f(None, "optimizer steps (default: epochs × steps per epoch)", "run", resume="total")
    epochs: int = _f(1, "epochs, when steps is not given", "run", resume="total")
    batch_size: int = _f(32, "images per process per micro-batch (global batch = this × processes × grad_accum)",
                         "run")  # fmt: skip
    grad_accum: int = _f(1, "micro-batches per optimizer step (gradient accumulation)", "run")
    seed: int = _f(0, "seed of the initialisation, the data order and every attack", "run")
    precision: str = _f("auto", "auto (bf16 autocast on CUDA, fp32 on CPU), fp32 or bf16", "run")
    device: str = _f("auto", "auto, cpu, cuda, cuda:N (under torchrun: the local GPU)", "run", resume="free")
    out_dir: str = _f(
        "runs/train", "output folder: checkpoints, metrics.csv, tensorboard, model.safetensors", "run", resume="free"
    )
    ckpt_every: int = _f(500, "write a checkpoint every N steps (0: only at the end)", "run", resume="free")
    keep_checkpoints: int = _f(2, "number of recent checkpoints kept", "run", resume="free")
    resume: str | None = _f(None, "auto (latest checkpoint in out_dir) or a checkpoint file", "run", resume="free")
    stop_after_steps: int | None = _f(None, "stop this invocation after N more steps (a checkpoint is written)",
                                      "run", resume="free")  # fmt: skip
    log_every: int = _f(10, "log metrics every N steps", "run", resume="free")
    tensorboard: bool = _f(True, "write TensorBoard event files", "run", resume="free")
    progress: bool = _f(True, "show a tqdm progress bar", "run", resume="free")
    eval_samples: int = _f(500, "test images of the final clean/PGD evaluation (0: none)", "run", resume="free")
    eval_every: int = _f(0, "also evaluate every N steps (0: only at the end)", "run", resume="free")
    eval_eps: float | None = _f(None, "ε of the evaluation PGD (default: eps)", "run", resume="free")
    eval_pgd_steps: int = _f(10, "steps of the evaluation PGD (step ε/4, uniform start)", "run", resume="free")
    eval_batch_size: int = _f(256, "batch size of the evaluation", "run", resume="free")
    overwrite: bool = _f(False, "delete the run already in out_dir and start afresh (without it, a non-empty "
                         "out_dir is refused unless resuming)", "run", resume="free")  # fmt: skip
    nonfinite: str = _f("error", "a non-finite loss or gradient: error (stop, naming the step) or skip (drop that "
                        "update)", "optim", resume="free")  # fmt: skip

    # ------------------------------------------------------------------ construction

    @classmethod
    def from_dict(cls, values: dict, source: str = "config") -> TrainConfig:
        """A config from ``values`` (unknown keys raise :class:`ConfigError` with close matches)."""
        cfg = cls()
        cfg.update(values, source)
        return cfg

    def update(self, values: dict, source: str = "config") -> TrainConfig:
        """Set the keys of ``values`` (coerced to the field types); returns self."""
        for name, value in coerce_values(type(self), values, source).items():
            setattr(self, name, value)
        return self

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @property
    def adversarial(self) -> bool:
        return self.method in ADVERSARIAL_METHODS

    def validate(self) -> TrainConfig:
        """Raise :class:`ConfigError` (message starting with the key) for any value out of range; returns self."""
        validate_config(self)
        return self


def config_fields() -> tuple[dataclasses.Field, ...]:
    """The fields of :class:`TrainConfig`, in declaration order."""
    return fields(TrainConfig)


def resume_policy(name: str) -> str:
    """The resume policy of key ``name``: ``same``, ``free`` or ``total`` (see the module docstring)."""
    return {f.name: f.metadata["resume"] for f in config_fields()}[name]
