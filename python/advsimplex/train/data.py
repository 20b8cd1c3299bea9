"""Training data: the dataset (CLIP resizing inside), a resumable sharded sampler and the batch stream.

The order of the images depends only on ``(seed, epoch)``: each epoch is a permutation drawn from a
generator seeded with both, cut into ``world_size`` interleaved shards (``DistributedSampler``'s
layout, so the union of the processes' micro-batches is the single-process batch of the same global
size). Resuming at micro-batch ``k`` therefore needs nothing but ``k``.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Sampler

from ..data import load_dataset
from .config import ConfigError, TrainConfig


def open_training_data(cfg: TrainConfig, image_size: tuple[int, int]) -> Dataset:
    """The training dataset of ``cfg`` resized to ``image_size``; errors name the ``dataset`` key."""
    try:
        data = load_dataset(cfg.dataset, cfg.split, image_size=image_size, limit=cfg.limit)
    except FileNotFoundError as exc:
        raise FileNotFoundError(f"dataset: {exc}") from exc
    except ValueError as exc:
        raise ConfigError(f"dataset: {exc}") from exc
    if len(data) == 0:
        raise ConfigError(f"dataset: {cfg.dataset} ({cfg.split}) holds no image")
    return data


def open_eval_data(cfg: TrainConfig, image_size: tuple[int, int]) -> Dataset:
    """The held-out split (``test``) of the training source, for the clean/PGD evaluation; errors name the
    ``dataset`` key (and ``eval_samples``, which turns the evaluation off)."""
    try:
        data = load_dataset(cfg.dataset, "test", image_size=image_size)
    except FileNotFoundError as exc:
        raise FileNotFoundError(f"dataset: no test split for the evaluation (eval_samples: 0 skips it): {exc}") from exc
    except ValueError as exc:
        raise ConfigError(f"dataset: the test split for the evaluation is unusable: {exc}") from exc
    if len(data) == 0:
        raise ConfigError(f"dataset: the test split of {cfg.dataset} holds no image (eval_samples: 0 skips it)")
    return data


class EpochShardSampler(Sampler[int]):
    """Indices of one epoch for one process: ``perm(seed, epoch)[rank::world_size]``, starting at ``start``.

    The epoch's permutation is truncated to a multiple of ``world_size × batch_size`` (every process
    sees the same number of full batches).
    """

    def __init__(self, size: int, batch_size: int, seed: int, rank: int = 0, world_size: int = 1) -> None:
        self.size, self.batch_size, self.seed = size, batch_size, seed
        self.rank, self.world_size = rank, world_size
        self.epoch, self.start = 0, 0
        if self.batches_per_epoch == 0:
            raise ConfigError(
                f"batch_size: {batch_size} × {world_size} process(es) is larger than the dataset ({size} images)"
            )

    @property
    def batches_per_epoch(self) -> int:
        return self.size // (self.batch_size * self.world_size)

    def set_position(self, epoch: int, batch: int) -> None:
        """Start epoch ``epoch`` at its micro-batch ``batch``."""
        self.epoch, self.start = epoch, batch * self.batch_size

    def epoch_indices(self) -> list[int]:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        perm = torch.randperm(self.size, generator=g)[: self.batches_per_epoch * self.batch_size * self.world_size]
        return perm[self.rank :: self.world_size].tolist()

    def __iter__(self) -> Iterator[int]:
        return iter(self.epoch_indices()[self.start :])

    def __len__(self) -> int:
        return self.batches_per_epoch * self.batch_size - self.start


def batch_stream(
    dataset: Dataset, sampler: EpochShardSampler, micro_batch: int, workers: int
) -> Iterator[tuple[Tensor, Tensor]]:
    """Micro-batches ``(images (b, 3, H, W), labels (b,))`` from global micro-batch ``micro_batch`` on, forever."""
    per_epoch = sampler.batches_per_epoch
    epoch, batch = divmod(micro_batch, per_epoch)
    while True:
        sampler.set_position(epoch, batch)
        loader = DataLoader(
            dataset, batch_size=sampler.batch_size, sampler=sampler, num_workers=workers, drop_last=True,
            generator=torch.Generator(),  # keeps the loader off the global RNG (exact resume)
            persistent_workers=False,
        )  # fmt: skip
        yield from loader
        epoch, batch = epoch + 1, 0


def random_hflip(images: Tensor, generator: torch.Generator) -> Tensor:
    """Flip each image (B, 3, H, W) left-right with probability 1/2 (draws from ``generator``)."""
    flip = torch.rand(images.shape[0], generator=generator) < 0.5
    return torch.where(flip.to(images.device).view(-1, 1, 1, 1), images.flip(-1), images)
