"""Run the evaluation: models × datasets × attacks × ε → one record per combination.

Determinism: the evaluated subset depends only on (seed, dataset size); every attack call gets a
seed derived from (seed, dataset, attack, ε, batch index), independent of which models, attacks
or ε are evaluated alongside it. ``simplex`` and ``simplex-transfer`` share their seeds, so a
transfer from a model to itself reproduces the white-box simplex attack.
"""

from __future__ import annotations

import logging
import math
import platform
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Subset

from ..jets import JetOptions
from ..models import load_clip
from ..runtime import derive_seed, eps_label, resolve_device
from ..zeroshot import ZeroShotModel, class_text_features, image_size
from .attacks import ATTACKS, TRANSFER_ATTACKS, AttackSettings, check_attack, run_attack
from .prompts import TemplateSpec, parse_templates
from .suite import DatasetNotFoundError, DatasetRef, EvalDataset, resolve_data_root, resolve_datasets

log = logging.getLogger("advsimplex.evaluation")

DEFAULT_EPS = (1 / 255, 2 / 255, 4 / 255)


class EvaluationInputError(ValueError):
    """Bad input to an evaluation (option, model, dataset): the message names what is wrong."""


DEFAULT_ATTACKS = ("pgd", "cw", "autoattack")


@dataclass(frozen=True)
class ModelSpec:
    """A model to evaluate: an advsimplex ``.safetensors`` checkpoint, ``local-dir:<folder>``, or an
    open_clip name with an optional ``pretrained`` tag/file (see :func:`advsimplex.models.load_clip`)."""

    model: str
    pretrained: str | None = None
    label: str | None = None

    @property
    def display(self) -> str:
        if self.label:
            return self.label
        if self.model.endswith(".safetensors"):
            return Path(self.model).stem
        return self.model + (f" ({Path(self.pretrained).name})" if self.pretrained else "")


@dataclass
class EvalConfig:
    """Everything an evaluation run depends on (recorded with the results)."""

    models: list[ModelSpec]
    datasets: list[str] = field(default_factory=lambda: ["cifar10"])
    eps: tuple[float, ...] = DEFAULT_EPS
    attacks: tuple[str, ...] = DEFAULT_ATTACKS
    settings: AttackSettings = field(default_factory=AttackSettings)
    source: ModelSpec | None = None
    samples: int | None = None
    batch_size: int = 64
    seed: int = 0
    templates: Sequence[str] = ("paper",)
    logit_scale: float | None = None
    data_root: str | None = None
    skip_missing: bool = False
    device: str = "auto"
    workers: int = 0

    def validate(self) -> None:
        """Clear errors, naming the option, for anything out of range (before any model is loaded)."""
        if not self.models:
            raise ValueError("no model given (--model)")
        if not self.eps:
            raise ValueError("no ε given (--eps)")
        for e in self.eps:
            if not (isinstance(e, int | float) and 0 <= e <= 1 and math.isfinite(e)):
                raise ValueError(f"--eps values must lie in [0, 1] (pixel scale, e.g. 4/255), got {e!r}")
        if not self.attacks:
            raise ValueError("no attack given (--attacks)")
        for a in self.attacks:
            check_attack(a)
        if any(a in TRANSFER_ATTACKS for a in self.attacks) and self.source is None:
            raise ValueError("the simplex-transfer attack needs --source-model")
        self.settings.validate()
        if self.samples is not None and (isinstance(self.samples, bool) or self.samples < 1):
            raise ValueError(f"--samples must be a positive int, got {self.samples!r}")
        if self.batch_size < 1:
            raise ValueError(f"--batch-size must be a positive int, got {self.batch_size!r}")
        if self.logit_scale is not None and not self.logit_scale > 0:
            raise ValueError(f"--logit-scale must be positive, got {self.logit_scale!r}")
        if self.workers < 0:
            raise ValueError(f"--workers must be >= 0, got {self.workers!r}")
        labels = [m.display for m in self.models]
        if len(set(labels)) != len(labels):
            raise ValueError(f"model labels must be unique (use --label): {labels}")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["templates"] = list(self.templates)
        return d


def subset_indices(n: int, samples: int | None, seed: int) -> list[int]:
    """The evaluated indices: all of ``range(n)``, or ``samples`` of them drawn without replacement
    under ``seed`` (sorted). Depends on nothing else, so every model sees the same images."""
    if samples is None or samples >= n:
        return list(range(n))
    g = torch.Generator().manual_seed(derive_seed(seed, "subset", n))
    return sorted(torch.randperm(n, generator=g)[:samples].tolist())


def _environment(device: torch.device) -> dict:
    import open_clip

    import advsimplex

    env = {
        "advsimplex": advsimplex.__version__, "torch": torch.__version__, "open_clip": open_clip.__version__,
        "python": platform.python_version(), "device": str(device),
    }  # fmt: skip
    if device.type == "cuda":
        env["gpu"] = torch.cuda.get_device_name(device)
    return env


@dataclass
class _Loaded:
    spec: ModelSpec
    model: nn.Module
    tokenizer: object
    name: str

    @property
    def size(self) -> tuple[int, int]:
        return image_size(self.model)

    def classifier(self, classes: list[str], templates: Sequence[str], logit_scale: float | None) -> ZeroShotModel:
        """The zero-shot model for ``classes`` (evaluation needs logits only: no jets)."""
        text = class_text_features(self.model, self.tokenizer, classes, templates)
        return ZeroShotModel.from_clip(self.model, text, logit_scale, jets=JetOptions(mode="generic")).eval()


def _load(spec: ModelSpec, device: torch.device, option: str = "--model") -> _Loaded:
    try:
        model, tokenizer, name = load_clip(spec.model, spec.pretrained, device=device)
    except (ValueError, FileNotFoundError) as exc:
        raise EvaluationInputError(f"{option} {spec.model}: {exc}") from exc
    except RuntimeError as exc:  # open_clip could not create it (a download, offline)
        if not str(exc).startswith("could not create open_clip model"):
            raise
        raise EvaluationInputError(f"{option} {spec.model}: {exc}") from exc
    model.requires_grad_(False)
    return _Loaded(spec, model.float(), tokenizer, name)


def _check_datasets(refs: list[DatasetRef], root, skip_missing: bool) -> list[DatasetRef]:
    usable = []
    for ref in refs:
        try:
            ref.check(root)
        except DatasetNotFoundError as exc:
            if not skip_missing:
                raise
            log.warning("skipping %s: %s", ref.name, exc)
            continue
        usable.append(ref)
    if not usable:
        raise DatasetNotFoundError("none of the requested datasets is present (all skipped by --skip-missing)")
    return usable


def evaluate(config: EvalConfig) -> list[dict]:
    """Evaluate every model on every dataset; returns the records (see :mod:`.report`).

    Each record: model, dataset, attack (``clean`` once per model × dataset, at ε = 0), ε,
    accuracy, correct, samples, seed, attack settings, templates, logit scale, environment.
    """
    try:
        config.validate()
        templates: TemplateSpec = parse_templates(config.templates)
        root = resolve_data_root(config.data_root)
        refs = _check_datasets(resolve_datasets(config.datasets), root, config.skip_missing)
        device = resolve_device(config.device, name="--device")
    except DatasetNotFoundError:
        raise
    except ValueError as exc:
        raise EvaluationInputError(str(exc)) from exc
    env = _environment(device)
    source = _load(config.source, device, "--source-model") if config.source is not None else None
    records: list[dict] = []
    opened: dict[tuple[str, tuple[int, int]], EvalDataset] = {}
    for spec in config.models:
        target = _load(spec, device)
        if source is not None and any(a in TRANSFER_ATTACKS for a in config.attacks) and source.size != target.size:
            raise EvaluationInputError(
                f"--source-model {config.source.model} takes {source.size} images but {spec.display} takes "
                f"{target.size}: the transfer attack needs one pixel space"
            )
        for ref in refs:
            key = (ref.name, target.size)
            if key not in opened:
                try:
                    opened[key] = ref.open(root, target.size)
                except (ValueError, RuntimeError) as exc:  # torchvision: RuntimeError("Dataset not found ...")
                    raise EvaluationInputError(f"--dataset {ref.name}: {exc}") from exc
            records += _evaluate_one(config, target, source, opened[key], templates, device, env)
    return records


def _evaluate_one(
    config: EvalConfig,
    target: _Loaded,
    source: _Loaded | None,
    data: EvalDataset,
    templates: TemplateSpec,
    device: torch.device,
    env: dict,
) -> list[dict]:
    t0 = time.perf_counter()
    prompts = templates.for_dataset(data.template_key)
    num_classes = len(data.classes)
    clf = target.classifier(data.classes, prompts, config.logit_scale)
    src = source.classifier(data.classes, prompts, config.logit_scale) if source is not None else None
    indices = subset_indices(len(data), config.samples, config.seed)
    if not indices:
        raise EvaluationInputError(f"dataset {data.name} ({data.location}) holds no image")
    loader = DataLoader(
        Subset(data.dataset, indices), batch_size=config.batch_size, shuffle=False, num_workers=config.workers
    )
    log.info("%s on %s: %d of %d images, %d classes", target.spec.display, data.title, len(indices), len(data),
             num_classes)  # fmt: skip
    combos = [(a, e) for a in config.attacks for e in config.eps]
    correct = dict.fromkeys([("clean", 0.0), *combos], 0)
    seconds = dict.fromkeys(correct, 0.0)
    for batch, (x, y) in enumerate(loader):
        x, y = x.to(device), y.to(device)
        if int(y.max()) >= num_classes or int(y.min()) < 0:
            raise EvaluationInputError(
                f"{data.name}: labels outside [0, {num_classes}) (class list and files disagree)"
            )
        t = time.perf_counter()
        correct[("clean", 0.0)] += count_correct(clf, x, y)
        seconds[("clean", 0.0)] += time.perf_counter() - t
        for attack, eps in combos:
            t = time.perf_counter()
            seed = derive_seed(config.seed, data.name, attack.removesuffix("-transfer"), eps, batch)
            adv = run_attack(
                attack, clf, x, y, eps=eps, settings=config.settings, seed=seed, num_classes=num_classes, source=src
            )
            correct[(attack, eps)] += count_correct(clf, adv, y)
            seconds[(attack, eps)] += time.perf_counter() - t
        log.info("  batch %d/%d done (%.1f s)", batch + 1, len(loader), time.perf_counter() - t0)
    n = len(indices)
    base = {
        "model": target.spec.display, "model_source": target.spec.model, "pretrained": target.spec.pretrained,
        "model_name": target.name, "dataset": data.name, "dataset_title": data.title, "dataset_location": data.location,
        "split": data.split, "num_classes": num_classes, "samples": n, "dataset_size": len(data),
        "subset": "all" if n == len(data) else "random", "seed": config.seed, "templates": list(prompts),
        "logit_scale": clf.logit_scale, "batch_size": config.batch_size, "environment": env,
    }  # fmt: skip
    out = []
    for attack, eps in correct:
        record = dict(base, attack=attack, eps=eps, eps_label=eps_label(eps) if attack != "clean" else "0")
        record.update(accuracy=correct[(attack, eps)] / n, correct=correct[(attack, eps)])
        record["settings"] = {} if attack == "clean" else config.settings.describe(attack, eps, num_classes)
        if attack in TRANSFER_ATTACKS and source is not None:
            record["settings"]["source"] = {"model": source.spec.display, "model_source": source.spec.model,
                                            "pretrained": source.spec.pretrained}  # fmt: skip
        record["seconds"] = round(seconds[(attack, eps)], 3)
        out.append(record)
    return out


@torch.no_grad()
def count_correct(clf: nn.Module, x: Tensor, y: Tensor) -> int:
    """How many of the images x (B, 3, H, W) ``clf`` classifies as their labels y (B,)."""
    return int((clf(x).argmax(dim=1) == y).sum())


__all__ = [
    "ATTACKS", "DEFAULT_ATTACKS", "DEFAULT_EPS", "EvalConfig", "EvaluationInputError", "ModelSpec", "evaluate",
    "subset_indices",
]  # fmt: skip
