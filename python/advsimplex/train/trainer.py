"""The training loop: one function, :func:`train`, from a validated :class:`TrainConfig` to a trained model.

Per optimizer step: ``grad_accum`` micro-batches, each ``objective(images, labels, generator)`` →
``(loss / grad_accum).backward()`` (DDP gradient sync on the last one only), the non-finite guard,
optional gradient clipping, ``optimizer.step()``, ``scheduler.step()``. The objective module (model +
method) is what DistributedDataParallel wraps, so one all-reduce covers the whole per-batch loss.

Randomness: the data order depends on ``(seed, epoch)`` (:class:`~.data.EpochShardSampler`) and every
micro-batch's attack/augmentation draws come from a generator seeded with ``(seed, step, micro-batch,
rank)``; checkpoints also carry every process's global RNG states. A resumed run therefore repeats
the uninterrupted run exactly (bit for bit on CPU).

Safety: the run directory policy of :mod:`.rundir` (a non-empty ``out_dir`` needs ``resume`` or
``overwrite``), the resume rules of :mod:`.resume` (the settings must allow an exact continuation; a
bad newest checkpoint is skipped by ``resume: auto``), and non-finite values: a non-finite loss or
gradient stops the run with :class:`NonFiniteError` naming the step before the update (``nonfinite:
error``) or drops that update (``nonfinite: skip``); weights are checked again before every checkpoint
and the final model, so a non-finite model is never written.

Outputs in ``out_dir``: ``config.yaml``, ``checkpoints/step-*.safetensors``, ``metrics.csv``,
``eval.csv``, ``tensorboard/``, ``model.safetensors`` (the trained model, :func:`advsimplex.models.save_clip`)
and ``summary.json``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from .._io import atomic_write_text
from ..jets import JetOptions
from ..models import save_clip
from ..runtime import derive_seed, nonfinite_entries, resolve_device
from ..zeroshot import ZeroShotModel, class_text_features
from . import checkpoint as ckpt
from .config import ConfigError, TrainConfig
from .data import EpochShardSampler, batch_stream, open_eval_data, open_training_data, random_hflip
from .distributed import DistEnv, all_reduce_mean, barrier, env_from_environment, init_distributed, shutdown_distributed
from .evaluate import zero_shot_accuracy
from .methods import build_objective
from .metrics import MetricsLogger
from .modeling import LoadedModel, load_model, prepare_model, trainable_parameters
from .objective import Objective
from .optim import WarmupCosine, make_optimizer, make_scheduler
from .presets import dump_yaml, parse_yaml_config
from .resume import changed_free_settings, check_resumable, select_checkpoint
from .rundir import check_run_dir, prepare_run_dir

log = logging.getLogger("advsimplex.train")


class NonFiniteError(FloatingPointError):
    """Training met a non-finite loss, gradient or weight; the message names the step."""


@dataclass
class TrainResult:
    """What a run did: steps done of ``total_steps``, the last logged metrics, evaluations, paths, the
    class names (from the dataset) behind the zero-shot prompts, and the steps whose update was skipped
    for non-finite values (``nonfinite: skip``)."""

    out_dir: Path
    step: int
    total_steps: int
    finished: bool
    classes: list[str] = field(default_factory=list)
    metrics: dict[str, float] = field(default_factory=dict)
    evaluations: list[dict] = field(default_factory=list)
    model_path: Path | None = None
    checkpoint: Path | None = None
    seconds: float = 0.0
    images_per_second: float = 0.0
    skipped_steps: list[int] = field(default_factory=list)


def train(cfg: TrainConfig) -> TrainResult:
    """Run (or resume) the training described by ``cfg`` in this process (or every torchrun process)."""
    cfg.validate()
    check_run_dir(cfg)  # before anything is loaded: a refused out_dir costs nothing
    env = env_from_environment()
    device = training_device(cfg, env)
    check_backend(cfg, device)
    started = env.enabled and not torch.distributed.is_initialized()
    init_distributed(env, device)
    try:
        return _Run(cfg, env, device).run()
    finally:
        if started:
            shutdown_distributed()


def training_device(cfg: TrainConfig, env: DistEnv) -> torch.device:
    """``cfg.device`` resolved (under torchrun a bare ``cuda`` is this process's GPU), made current."""
    try:
        device = resolve_device(cfg.device, local_rank=env.local_rank if env.enabled else None, name="device")
    except ValueError as exc:
        raise ConfigError(str(exc)) from exc
    if device.type == "cuda":
        torch.cuda.set_device(device)
    return device


def check_backend(cfg: TrainConfig, device: torch.device) -> None:
    """A fused-head ``backend`` other than ``auto`` must be usable here and run on ``device``."""
    if cfg.method not in ("advsimplex", "sampled") or cfg.backend in ("auto", "reference"):
        return
    from .. import backends

    usable, why = backends()[cfg.backend]
    if not usable:
        raise ConfigError(f"backend: {cfg.backend} is not usable here: {why}")
    needs = {"cuda": "cuda", "cpp": "cpu"}.get(cfg.backend)
    if needs is not None and device.type != needs:
        raise ConfigError(f"backend: {cfg.backend} runs on {needs.upper()} tensors, but the device is {device}")


class _Run:
    def __init__(self, cfg: TrainConfig, env: DistEnv, device: torch.device) -> None:
        self.cfg, self.env, self.device = cfg, env, device
        self.out = Path(cfg.out_dir)
        self.ckpt_dir = self.out / "checkpoints"
        self.bf16 = cfg.precision == "bf16" or (cfg.precision == "auto" and device.type == "cuda")
        self.skipped: list[int] = []

    # ------------------------------------------------------------------ setup

    def setup(self) -> None:
        """Model, data, objective, optimizer and schedule; then the run directory (an old run is deleted
        for ``overwrite`` only once everything loaded)."""
        self.build()
        if self.env.is_main:
            prepare_run_dir(self.cfg)
        barrier()

    def build(self) -> None:
        cfg, env = self.cfg, self.env
        self.loaded: LoadedModel = load_model(cfg, self.device)
        self.data = open_training_data(cfg, self.loaded.image_size)
        self.classes = list(self.data.classes)
        self.zs = prepare_model(cfg, self.loaded, self.classes)
        self.objective: Objective = build_objective(
            cfg, self.zs.classifier if self.zs else None, self.zs.original if self.zs else None,
            model=self.loaded.model, tokenizer=self.loaded.tokenizer, classes=self.classes,
        ).to(self.device)  # fmt: skip
        self.named_params = trainable_parameters(self.objective)
        self.params = [p for _, p in self.named_params]
        self.sampler = EpochShardSampler(len(self.data), cfg.batch_size, cfg.seed, env.rank, env.world_size)
        self.steps_per_epoch = self.sampler.batches_per_epoch // cfg.grad_accum
        if cfg.steps is None and self.steps_per_epoch == 0:
            raise ConfigError(
                f"grad_accum: {cfg.grad_accum} micro-batches per step exceed the {self.sampler.batches_per_epoch} "
                "batches of an epoch; give steps explicitly or lower grad_accum"
            )
        self.total_steps = self.total_of(cfg.steps, cfg.epochs)
        self.optimizer = make_optimizer(cfg, self.params)
        self.scheduler = make_scheduler(cfg, self.optimizer, self.total_steps)
        self.ddp = None
        if env.enabled:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.ddp = DistributedDataParallel(self.objective, device_ids=ids)
        self.eval_data = None
        if cfg.eval_samples and env.is_main:  # a missing or bad test split fails now, not after training
            self.eval_data = open_eval_data(cfg, self.loaded.image_size)

    def total_of(self, steps: int | None, epochs: int) -> int:
        """The run's total optimizer steps for the ``steps``/``epochs`` settings."""
        return steps if steps is not None else epochs * self.steps_per_epoch

    # ------------------------------------------------------------------ resume

    def resume(self) -> int:
        """Load the checkpoint named by ``resume`` (if any, see :mod:`.resume`); returns the step to start from."""
        state = select_checkpoint(self.cfg.resume, self.ckpt_dir, self.restore, is_main=self.env.is_main)
        step = state.step if state is not None else 0
        saved_yaml = self.out / "config.yaml"
        if self.cfg.resume is not None and saved_yaml.is_file():
            values = parse_yaml_config(saved_yaml.read_text(encoding="utf-8"), str(saved_yaml))
            check_resumable(values, self.cfg, saved_total=self.saved_total(values), total=self.total_steps,
                            step=step, source=str(saved_yaml))  # fmt: skip
        if state is None:
            return 0
        if self.env.is_main:
            if changed := changed_free_settings(state.config, self.cfg):
                log.info("resume: changed settings that do not alter the training: %s", "; ".join(changed))
            log.info("resumed from %s at step %d", state.path, state.step)
        return step

    def saved_total(self, values: dict) -> int | None:
        """The total steps of a saved config (None if it cannot be told)."""
        try:
            steps = values.get("steps")
            return self.total_of(None if steps is None else int(steps), int(values.get("epochs", 1)))
        except (TypeError, ValueError):
            return None

    def restore(self, state: ckpt.Checkpoint) -> None:
        """Check ``state`` against this run and load it; :class:`ConfigError` for different settings,
        :class:`~.checkpoint.CheckpointError` for a checkpoint that does not fit."""
        cfg, path = self.cfg, state.path
        if state.world_size != self.env.world_size:
            raise ConfigError(
                f"resume: checkpoint {path} was written by {state.world_size} process(es), this run has "
                f"{self.env.world_size}; exact resumption needs the same number"
            )
        saved_total = state.total_steps if state.total_steps is not None else self.saved_total(state.config)
        check_resumable(state.config, cfg, saved_total=saved_total, total=self.total_steps, step=state.step,
                        source=f"checkpoint {path}")  # fmt: skip
        if state.step > self.total_steps or state.micro_batch != state.step * cfg.grad_accum:
            raise ckpt.CheckpointError(
                f"resume: {path} records an impossible position (step {state.step}, micro-batch {state.micro_batch}) "
                f"for this run of {self.total_steps} steps × {cfg.grad_accum} micro-batches"
            )
        try:
            self.loaded.model.load_state_dict(state.model)
        except RuntimeError as exc:
            raise ckpt.CheckpointError(f"resume: {path} does not fit the model {cfg.model}: {exc}") from exc
        try:
            self.optimizer.load_state_dict(state.optimizer)
            self.scheduler.load_state_dict(state.scheduler)
            rng = {k: v[self.env.rank] for k, v in state.rng.items()}
        except (ValueError, KeyError, TypeError, IndexError, RuntimeError) as exc:
            raise ckpt.CheckpointError(
                f"resume: the optimizer/scheduler/RNG state in {path} does not fit this run ({cfg.optimizer}): "
                f"{type(exc).__name__}: {exc}"
            ) from exc
        for rule in self.scheduler.lr_lambdas:  # the constant schedule may have a new total (resume.py)
            if isinstance(rule, WarmupCosine):
                rule.total = self.total_steps
        ckpt.restore_rng(rng, self.device)
        self.skipped = list(state.skipped_steps)

    # ------------------------------------------------------------------ steps

    def micro_step(self, images, labels, step: int, micro: int) -> dict[str, torch.Tensor]:
        cfg = self.cfg
        generator = torch.Generator().manual_seed(derive_seed(cfg.seed, "train", step, micro, self.env.rank))
        if cfg.hflip:
            images = random_hflip(images, generator)
        last = micro == cfg.grad_accum - 1
        sync = self.ddp.no_sync() if (self.ddp is not None and not last) else contextlib.nullcontext()
        module = self.ddp if self.ddp is not None else self.objective
        with sync:
            with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16):
                loss, metrics = module(images, labels, generator)
            (loss / cfg.grad_accum).backward()
        return {"loss": loss.detach().float(), **{k: v.detach().float() for k, v in metrics.items()}}

    def accumulate(self, stream, step: int) -> dict[str, torch.Tensor]:
        """Forward/backward of the step's ``grad_accum`` micro-batches; the mean of their metrics."""
        sums: dict[str, torch.Tensor] = {}
        for micro in range(self.cfg.grad_accum):
            images, labels = next(stream)
            images, labels = images.to(self.device, non_blocking=True), labels.to(self.device)
            for k, v in self.micro_step(images, labels, step, micro).items():
                sums[k] = sums.get(k, 0) + v / self.cfg.grad_accum
        return sums

    def nonfinite_reason(self, loss: torch.Tensor) -> tuple[str | None, torch.Tensor | None]:
        """(why the step may not be applied, or None; the gradient norm). Agreed by every process."""
        grads = [p.grad for p in self.params if p.grad is not None]
        norm = torch.nn.utils.get_total_norm(grads) if grads else None
        flags = torch.stack([~torch.isfinite(loss), ~torch.isfinite(norm) if norm is not None else loss.new_zeros(())])
        bad_loss, bad_grad = (all_reduce_mean(flags.float().to(self.device)) > 0).tolist()
        if not (bad_loss or bad_grad):
            return None, norm
        parts = [f"the loss is {float(loss)}"] if bad_loss else []
        parts += [f"the gradient norm is {float(norm)}"] if bad_grad and norm is not None else []
        return " and ".join(parts) or "a process saw a non-finite value", norm

    def update(self, step: int, loss: torch.Tensor) -> bool:
        """Apply the accumulated gradients as optimizer step ``step + 1`` (1-based, as logged); False when the
        update was skipped for non-finite values (``nonfinite: skip``)."""
        cfg = self.cfg
        reason, norm = self.nonfinite_reason(loss)
        if reason is not None:
            if cfg.nonfinite == "error":
                raise NonFiniteError(
                    f"nonfinite: at step {step + 1} {reason}; training stopped before the update, no non-finite "
                    f"weights were written (last checkpoint: {self.last_checkpoint()}). Lower lr, set grad_clip, "
                    "check the data, or set nonfinite: skip to drop such updates"
                )
            self.optimizer.zero_grad(set_to_none=True)
            with warnings.catch_warnings():  # "scheduler.step() before optimizer.step()": intended here
                warnings.simplefilter("ignore", UserWarning)
                self.scheduler.step()
            self.skipped.append(step + 1)
            log.warning("nonfinite: at step %d %s; update skipped (nonfinite: skip)", step + 1, reason)
            return False
        if cfg.grad_clip > 0 and norm is not None:
            torch.nn.utils.clip_grads_with_norm_(self.params, cfg.grad_clip, norm)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.objective.after_step()
        return True

    def check_weights(self, step: int) -> None:
        """Raise :class:`NonFiniteError` if the model holds a non-finite value (nothing is written then)."""
        if bad := nonfinite_entries(self.loaded.model.state_dict().items()):
            raise NonFiniteError(
                f"nonfinite: after step {step} the weights are not finite ({', '.join(bad)}); nothing was written "
                f"(last checkpoint: {self.last_checkpoint()}). Lower lr or set grad_clip"
            )

    def last_checkpoint(self) -> str:
        found = ckpt.list_checkpoints(self.ckpt_dir)
        return str(found[-1]) if found else "none"

    def save(self, step: int) -> Path | None:
        self.check_weights(step)
        rng = ckpt.gather_rng(self.device)  # a collective: every process takes part
        path = None
        if self.env.is_main:
            path = ckpt.save_checkpoint(
                ckpt.checkpoint_path(self.ckpt_dir, step), model=self.loaded.model, optimizer=self.optimizer,
                scheduler=self.scheduler, step=step, micro_batch=step * self.cfg.grad_accum,
                world_size=self.env.world_size, rng=rng, config=self.cfg.to_dict(), total_steps=self.total_steps,
                skipped_steps=self.skipped,
            )  # fmt: skip
            ckpt.prune_checkpoints(self.ckpt_dir, self.cfg.keep_checkpoints)
        barrier()
        return path

    # ------------------------------------------------------------------ evaluation

    def eval_classifier(self) -> nn.Module:
        """The zero-shot classifier evaluated (the one place that builds it for evaluation)."""
        if self.zs is not None:
            return self.zs.classifier
        model = self.loaded.model  # clip: the text tower changed, embed the prompts again
        text = class_text_features(model, self.loaded.tokenizer, self.classes, self.cfg.templates)
        return ZeroShotModel.from_clip(model, text, self.cfg.logit_scale, jets=JetOptions(mode="generic"))

    def evaluate(self, step: int) -> dict | None:
        cfg, result = self.cfg, None
        if self.env.is_main:
            if self.eval_data is None:
                self.eval_data = open_eval_data(cfg, self.loaded.image_size)
            eps = cfg.eval_eps if cfg.eval_eps is not None else cfg.eps
            t0 = time.perf_counter()
            acc = zero_shot_accuracy(
                self.eval_classifier(), self.eval_data, samples=cfg.eval_samples, eps=eps,
                pgd_steps=cfg.eval_pgd_steps, seed=cfg.seed, batch_size=cfg.eval_batch_size, device=self.device,
                name=cfg.dataset,
            )  # fmt: skip
            samples = min(cfg.eval_samples, len(self.eval_data))
            result = {"step": step, "clean": acc["clean"], "pgd": acc["pgd"], "eps": eps,
                      "pgd_steps": cfg.eval_pgd_steps, "samples": samples}  # fmt: skip
            self.logger.log(step, {"clean_acc": acc["clean"], "pgd_acc": acc["pgd"]}, file="eval.csv", prefix="eval")
            log.info("step %d: clean %.1f %%, PGD-%d (ε = %.4g) %.1f %% [%.1f s]", step, 100 * acc["clean"],
                     cfg.eval_pgd_steps, eps, 100 * acc["pgd"], time.perf_counter() - t0)  # fmt: skip
        barrier()
        return result

    # ------------------------------------------------------------------ loop

    def run(self) -> TrainResult:
        t_start = time.perf_counter()
        self.setup()
        step = self.resume()
        self.start_outputs(step)
        result = TrainResult(self.out, step, self.total_steps, finished=False, classes=self.classes)
        stop = self.total_steps
        if self.cfg.stop_after_steps is not None:
            stop = min(stop, step + self.cfg.stop_after_steps)
        try:
            self.train_until(stop, step, result)
            self.finish(result, t_start)
        finally:
            self.logger.close()
        barrier()
        return result

    def start_outputs(self, step: int) -> None:
        """``config.yaml``, the metric sinks (truncated after ``step`` on resume) and the start message."""
        cfg, env = self.cfg, self.env
        if env.is_main:
            atomic_write_text(self.out / "config.yaml", dump_yaml(cfg))
            n_train = sum(p.numel() for p in self.params)
            log.info("%s on %s (%d images, %d classes): %d steps, global batch %d, %d trainable parameters, %s",
                     cfg.method, cfg.dataset, len(self.data), len(self.classes), self.total_steps,
                     cfg.batch_size * cfg.grad_accum * env.world_size, n_train, self.device)  # fmt: skip
        self.logger = MetricsLogger(self.out, enabled=env.is_main, tensorboard=cfg.tensorboard, start_step=step)

    def train_until(self, stop: int, step: int, result: TrainResult) -> None:
        """Optimizer steps from ``step`` to ``stop`` with logging, checkpoints and periodic evaluation."""
        cfg, env = self.cfg, self.env
        stream = batch_stream(self.data, self.sampler, step * cfg.grad_accum, cfg.workers)
        per_step = cfg.batch_size * cfg.grad_accum * env.world_size
        from tqdm.auto import tqdm

        bar = tqdm(total=self.total_steps, initial=step, disable=not (env.is_main and cfg.progress),
                   desc=cfg.method, unit="step", dynamic_ncols=True)  # fmt: skip
        self.objective.train()
        images_done, train_seconds = 0, 0.0
        try:
            while step < stop:
                t0 = time.perf_counter()
                sums = self.accumulate(stream, step)
                lr = self.optimizer.param_groups[0]["lr"]
                self.update(step, sums["loss"])
                step += 1
                dt = time.perf_counter() - t0
                images_done, train_seconds = images_done + per_step, train_seconds + dt
                bar.update(1)
                bar.set_postfix(loss=f"{float(sums['loss']):.4f}", img_s=f"{per_step / dt:.1f}")
                if step % cfg.log_every == 0 or step == stop:
                    result.metrics = self.log_metrics(step, sums, lr, per_step / dt)
                if (cfg.ckpt_every and step % cfg.ckpt_every == 0) or step == stop:
                    result.checkpoint = self.save(step)
                if cfg.eval_samples and cfg.eval_every and step % cfg.eval_every == 0 and step < self.total_steps:
                    if (ev := self.evaluate(step)) is not None:
                        result.evaluations.append(ev)
        finally:
            bar.close()
            result.step, result.seconds = step, train_seconds
            result.images_per_second = images_done / train_seconds if train_seconds else 0.0

    def log_metrics(self, step: int, sums: dict[str, torch.Tensor], lr: float, images_per_s: float) -> dict:
        """The step's metrics averaged over processes, written to ``metrics.csv``/TensorBoard; returned."""
        names = sorted(sums)
        values = all_reduce_mean(torch.stack([sums[k] for k in names])).tolist()
        metrics = {"epoch": step * self.cfg.grad_accum / self.sampler.batches_per_epoch, "lr": lr,
                   **dict(zip(names, values)), "images_per_s": images_per_s}  # fmt: skip
        self.logger.log(step, metrics)
        return metrics

    def finish(self, result: TrainResult, t_start: float) -> None:
        """Final evaluation and model (when finished) and ``summary.json``."""
        cfg, env = self.cfg, self.env
        result.finished = result.step >= self.total_steps
        result.skipped_steps = list(self.skipped)
        if result.finished:
            self.check_weights(result.step)
            if cfg.eval_samples and (ev := self.evaluate(result.step)) is not None:
                result.evaluations.append(ev)
            if env.is_main:
                result.model_path = self.out / "model.safetensors"
                save_clip(result.model_path, self.loaded.model, self.loaded.name, method=cfg.method,
                          steps=str(result.step), config=json.dumps(cfg.to_dict()))  # fmt: skip
        if env.is_main:
            summary = {
                "method": cfg.method, "step": result.step, "total_steps": self.total_steps,
                "finished": result.finished, "train_seconds": result.seconds,
                "wall_seconds": time.perf_counter() - t_start, "images_per_second": result.images_per_second,
                "metrics": result.metrics, "evaluations": result.evaluations,
                "model": str(result.model_path) if result.model_path else None, "world_size": env.world_size,
                "device": str(self.device), "skipped_steps": result.skipped_steps,
            }  # fmt: skip
            atomic_write_text(self.out / "summary.json", json.dumps(summary, indent=2))
