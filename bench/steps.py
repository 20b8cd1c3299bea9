"""One training step of any method, built from the training package for benchmarks and profiling.

:func:`build_step` loads an open_clip model (random weights: nothing is downloaded), real CIFAR-10
images resized to the tower's input size (``../shared/data/cifar10``), the zero-shot head over the
CIFAR-10 class names, and the method's objective exactly as ``advsimplex-train`` builds them
(:func:`advsimplex.train.methods.build_objective`). The returned :class:`Step` runs forward, backward
and an AdamW update, the way the trainer does.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from advsimplex.data import load_dataset
from advsimplex.train.config import TrainConfig
from advsimplex.train.methods import build_objective
from advsimplex.train.modeling import load_model, prepare_model, trainable_parameters

# Providers of the full-step benchmark: a label → the training-config overrides that define it.
METHODS = {
    "advsimplex": {"method": "advsimplex"},
    "advsimplex-pairs": {"method": "advsimplex", "second_order": "pairs"},
    "advsimplex-generic": {"method": "advsimplex", "jets": "generic"},
    "tecoa": {"method": "tecoa"},
    "sampled-10": {"method": "sampled", "samples": 10},
    "sampled-70": {"method": "sampled", "samples": 70},
}


@dataclass
class Step:
    """A ready training step: ``run()`` is forward + backward + optimizer step on one fixed batch."""

    objective: torch.nn.Module
    optimizer: torch.optim.Optimizer
    images: torch.Tensor
    labels: torch.Tensor
    seed: int

    def run(self) -> float:
        generator = torch.Generator(self.images.device).manual_seed(self.seed)
        self.optimizer.zero_grad(set_to_none=True)
        loss, _ = self.objective(self.images, self.labels, generator)
        loss.backward()
        self.optimizer.step()
        return float(loss.detach())


def build_step(method: str, *, model: str, batch: int, device: str | torch.device, seed: int = 0, **overrides) -> Step:
    """A :class:`Step` for ``method`` (a key of :data:`METHODS`) on ``batch`` CIFAR-10 test images."""
    if method not in METHODS:
        raise ValueError(f"method must be one of {sorted(METHODS)}, got {method!r}")
    device = torch.device(device)
    cfg = TrainConfig.from_dict({"model": model, "seed": seed, "batch_size": batch, **METHODS[method], **overrides})
    cfg.validate()
    loaded = load_model(cfg, device)
    data = load_dataset("cifar10", "test", image_size=loaded.image_size, limit=batch)
    setup = prepare_model(cfg, loaded, data.classes)
    objective = build_objective(cfg, setup.classifier, setup.original).to(device)
    params = [p for _, p in trainable_parameters(setup.classifier)]
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    images, labels = next(iter(torch.utils.data.DataLoader(data, batch_size=batch)))
    return Step(objective, optimizer, images.to(device), labels.to(device), seed)
