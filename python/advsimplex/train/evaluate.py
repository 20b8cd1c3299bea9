"""Clean and PGD zero-shot accuracy during and after training (the evaluation package's attacks).

The evaluated images are ``samples`` test images drawn under ``seed``
(:func:`advsimplex.evaluation.subset_indices`) and every attack batch gets a seed derived from
``(seed, name, attack, ε, batch index)``, as in ``advsimplex-eval``: with the same dataset name, seed and
batch size the numbers are the same there and here.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset

from ..evaluation import AttackSettings, count_correct, run_attack, subset_indices
from ..runtime import derive_seed


def zero_shot_accuracy(
    classifier: nn.Module,
    dataset: Dataset,
    *,
    samples: int,
    eps: float,
    pgd_steps: int = 10,
    seed: int = 0,
    batch_size: int = 256,
    device: torch.device | str = "cpu",
    name: str = "eval",
) -> dict[str, float]:
    """``{"clean": acc, "pgd": acc}`` on ``samples`` images of ``dataset`` (PGD-``pgd_steps``, CE, step ε/4,
    uniform start, best iterate). ``classifier`` maps pixels (B, 3, H, W) in [0, 1] to logits (B, C)."""
    was_training = classifier.training
    classifier.eval()
    indices = subset_indices(len(dataset), samples, seed)
    loader = DataLoader(Subset(dataset, indices), batch_size=batch_size, shuffle=False)
    settings = AttackSettings(pgd_steps=pgd_steps)
    clean = robust = 0
    num_classes = len(dataset.classes)
    try:
        for batch, (x, y) in enumerate(loader):
            x, y = x.to(device), y.to(device)
            clean += count_correct(classifier, x, y)
            batch_seed = derive_seed(seed, name, "pgd", eps, batch)
            adv = run_attack("pgd", classifier, x, y, eps=eps, settings=settings, seed=batch_seed,
                             num_classes=num_classes)  # fmt: skip
            robust += count_correct(classifier, adv, y)
    finally:
        classifier.train(was_training)
    n = len(indices)
    return {"clean": clean / n, "pgd": robust / n}
