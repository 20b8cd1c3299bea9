"""The training loop: one function, :func:`train`, from a validated :class:`TrainConfig` to a trained model.

Per optimizer step: ``grad_accum`` micro-batches, each ``objective(images, labels, generator)`` →
``(loss / grad_accum).backward()`` (DDP gradient sync on the last one only), optional gradient
clipping, ``optimizer.step()``, ``scheduler.step()``. The objective module (model + method) is what
DistributedDataParallel wraps, so one all-reduce covers the whole per-batch loss.

Randomness: the data order depends on ``(seed, epoch)`` (:class:`~.data.EpochShardSampler`) and every
micro-batch's attack/augmentation draws come from a generator seeded with ``(seed, step, micro-batch,
rank)``; checkpoints also carry every process's global RNG states. A resumed run therefore repeats
the uninterrupted run exactly (bit for bit on CPU).

Outputs in ``out_dir``: ``config.yaml``, ``checkpoints/step-*.safetensors``, ``metrics.csv``,
``eval.csv``, ``tensorboard/``, ``model.safetensors`` (the trained model, :func:`advsimplex.models.save_clip`)
and ``summary.json``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from ..evaluation.runner import derive_seed
from ..models import save_clip
from ..zeroshot import ZeroShotClassifier, class_text_features
from . import checkpoint as ckpt
from .config import ConfigError, TrainConfig, dump_yaml
from .data import EpochShardSampler, batch_stream, open_eval_data, open_training_data, random_hflip
from .distributed import (
    DistEnv,
    all_reduce_mean,
    barrier,
    env_from_environment,
    init_distributed,
    resolve_device,
    shutdown_distributed,
)
from .evaluate import zero_shot_accuracy
from .methods import Objective, build_objective
from .metrics import MetricsLogger
from .modeling import LoadedModel, load_model, prepare_model, trainable_parameters
from .optim import make_optimizer, make_scheduler

log = logging.getLogger("advsimplex.train")


@dataclass
class TrainResult:
    """What a run did: steps done of ``total_steps``, the last logged metrics, evaluations, paths, and the
    class names (from the dataset) behind the zero-shot prompts."""

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


def train(cfg: TrainConfig) -> TrainResult:
    """Run (or resume) the training described by ``cfg`` in this process (or every torchrun process)."""
    cfg.validate()
    env = env_from_environment()
    try:
        device = resolve_device(cfg.device, env)
    except ValueError as exc:
        raise ConfigError(str(exc)) from exc
    started = env.enabled and not torch.distributed.is_initialized()
    init_distributed(env, device)
    try:
        return _Run(cfg, env, device).run()
    finally:
        if started:
            shutdown_distributed()


class _Run:
    def __init__(self, cfg: TrainConfig, env: DistEnv, device: torch.device) -> None:
        self.cfg, self.env, self.device = cfg, env, device
        self.out = Path(cfg.out_dir)
        self.ckpt_dir = self.out / "checkpoints"
        self.bf16 = cfg.precision == "bf16" or (cfg.precision == "auto" and device.type == "cuda")

    # ------------------------------------------------------------------ setup

    def setup(self) -> None:
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
        steps_per_epoch = self.sampler.batches_per_epoch // cfg.grad_accum
        if cfg.steps is None and steps_per_epoch == 0:
            raise ConfigError(
                f"grad_accum: {cfg.grad_accum} micro-batches per step exceed the {self.sampler.batches_per_epoch} "
                "batches of an epoch; give steps explicitly or lower grad_accum"
            )
        self.total_steps = cfg.steps if cfg.steps is not None else cfg.epochs * steps_per_epoch
        self.optimizer = make_optimizer(cfg, self.params)
        self.scheduler = make_scheduler(cfg, self.optimizer, self.total_steps)
        self.ddp = None
        if env.enabled:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.ddp = DistributedDataParallel(self.objective, device_ids=ids)
        self.eval_data = None

    def resume(self) -> int:
        """Load the checkpoint named by ``resume`` (if any); returns the step to start from."""
        path = ckpt.resolve_resume(self.cfg.resume, self.ckpt_dir)
        if path is None:
            return 0
        state = ckpt.load_checkpoint(path)
        saved = state.config
        for key in ("batch_size", "grad_accum", "method", "seed", "dataset", "tuning"):
            if key in saved and saved[key] != getattr(self.cfg, key):
                raise ConfigError(
                    f"resume: {key} is {getattr(self.cfg, key)!r} but the checkpoint {path} was written with "
                    f"{saved[key]!r}; exact resumption needs the same value"
                )
        if state.world_size != self.env.world_size:
            raise ConfigError(
                f"resume: checkpoint {path} was written by {state.world_size} process(es), this run has "
                f"{self.env.world_size}; exact resumption needs the same number"
            )
        self.loaded.model.load_state_dict(state.model)
        self.optimizer.load_state_dict(state.optimizer)
        self.scheduler.load_state_dict(state.scheduler)
        rng = {k: v[self.env.rank] for k, v in state.rng.items()}
        ckpt.restore_rng(rng, self.device)
        if self.env.is_main:
            log.info("resumed from %s at step %d", path, state.step)
        return state.step

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

    def save(self, step: int) -> Path | None:
        rng = ckpt.gather_rng(self.device)  # a collective: every process takes part
        path = None
        if self.env.is_main:
            path = ckpt.save_checkpoint(
                ckpt.checkpoint_path(self.ckpt_dir, step), model=self.loaded.model, optimizer=self.optimizer,
                scheduler=self.scheduler, step=step, micro_batch=step * self.cfg.grad_accum,
                world_size=self.env.world_size, rng=rng, config=self.cfg.to_dict(),
            )  # fmt: skip
            ckpt.prune_checkpoints(self.ckpt_dir, self.cfg.keep_checkpoints)
        barrier()
        return path

    def eval_classifier(self) -> nn.Module:
        if self.zs is not None:
            return self.zs.classifier
        model = self.loaded.model  # clip: the text tower changed, embed the prompts again
        text = class_text_features(model, self.loaded.tokenizer, self.classes, self.cfg.templates)
        return ZeroShotClassifier(model, text, self.cfg.logit_scale)

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
        cfg, env = self.cfg, self.env
        t_start = time.perf_counter()
        self.setup()
        step = self.resume()
        if env.is_main:
            self.out.mkdir(parents=True, exist_ok=True)
            (self.out / "config.yaml").write_text(dump_yaml(cfg), encoding="utf-8")
            n_train = sum(p.numel() for p in self.params)
            log.info("%s on %s (%d images, %d classes): %d steps, global batch %d, %d trainable parameters, %s",
                     cfg.method, cfg.dataset, len(self.data), len(self.classes), self.total_steps,
                     cfg.batch_size * cfg.grad_accum * env.world_size, n_train, self.device)  # fmt: skip
        self.logger = MetricsLogger(self.out, enabled=env.is_main, tensorboard=cfg.tensorboard, start_step=step)
        result = TrainResult(self.out, step, self.total_steps, finished=False, classes=self.classes)
        stop = self.total_steps if cfg.stop_after_steps is None else min(self.total_steps, step + cfg.stop_after_steps)
        stream = batch_stream(self.data, self.sampler, step * cfg.grad_accum, cfg.workers)
        per_step = cfg.batch_size * cfg.grad_accum * env.world_size
        from tqdm.auto import tqdm

        bar = tqdm(total=self.total_steps, initial=step, disable=not (env.is_main and cfg.progress),
                   desc=cfg.method, unit="step", dynamic_ncols=True)  # fmt: skip
        self.objective.train()
        images_done, train_seconds, last_ckpt = 0, 0.0, None
        try:
            while step < stop:
                t0 = time.perf_counter()
                sums: dict[str, torch.Tensor] = {}
                for micro in range(cfg.grad_accum):
                    images, labels = next(stream)
                    images, labels = images.to(self.device, non_blocking=True), labels.to(self.device)
                    for k, v in self.micro_step(images, labels, step, micro).items():
                        sums[k] = sums.get(k, 0) + v / cfg.grad_accum
                if cfg.grad_clip > 0:
                    torch.nn.utils.clip_grad_norm_(self.params, cfg.grad_clip)
                lr = self.optimizer.param_groups[0]["lr"]
                self.optimizer.step()
                self.scheduler.step()
                self.optimizer.zero_grad(set_to_none=True)
                self.objective.after_step()
                step += 1
                dt = time.perf_counter() - t0
                images_done, train_seconds = images_done + per_step, train_seconds + dt
                bar.update(1)
                bar.set_postfix(loss=f"{float(sums['loss']):.4f}", img_s=f"{per_step / dt:.1f}")
                if step % cfg.log_every == 0 or step == stop:
                    names = sorted(sums)
                    values = all_reduce_mean(torch.stack([sums[k] for k in names])).tolist()
                    result.metrics = {"epoch": step * cfg.grad_accum / self.sampler.batches_per_epoch, "lr": lr,
                                      **dict(zip(names, values)), "images_per_s": per_step / dt}  # fmt: skip
                    self.logger.log(step, result.metrics)
                if (cfg.ckpt_every and step % cfg.ckpt_every == 0) or step == stop:
                    last_ckpt = self.save(step)
                if cfg.eval_samples and cfg.eval_every and step % cfg.eval_every == 0 and step < self.total_steps:
                    if (ev := self.evaluate(step)) is not None:
                        result.evaluations.append(ev)
        finally:
            bar.close()
        result.step, result.checkpoint = step, last_ckpt
        result.finished = step >= self.total_steps
        result.seconds = train_seconds
        result.images_per_second = images_done / train_seconds if train_seconds else 0.0
        if result.finished:
            if cfg.eval_samples and (ev := self.evaluate(step)) is not None:
                result.evaluations.append(ev)
            if env.is_main:
                result.model_path = self.out / "model.safetensors"
                save_clip(result.model_path, self.loaded.model, self.loaded.name, method=cfg.method,
                           steps=str(step), config=json.dumps(cfg.to_dict()))  # fmt: skip
        if env.is_main:
            summary = {
                "method": cfg.method, "step": step, "total_steps": self.total_steps, "finished": result.finished,
                "train_seconds": train_seconds, "wall_seconds": time.perf_counter() - t_start,
                "images_per_second": result.images_per_second, "metrics": result.metrics,
                "evaluations": result.evaluations, "model": str(result.model_path) if result.model_path else None,
                "world_size": env.world_size, "device": str(self.device),
            }  # fmt: skip
            (self.out / "summary.json").write_text(json.dumps(summary, indent=2), encoding="utf-8")
        self.logger.close()
        barrier()
        return result
