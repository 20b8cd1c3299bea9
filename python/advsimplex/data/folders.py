"""The offline zero-shot sets: npz arrays read by name from the data root, their held-out parts, unions.

Every folder ``<data root>/<folder>/`` holding ``train.npz`` and ``test.npz`` (``images`` uint8
(N, H, W, 3), ``labels`` (N,), ``classes`` (C,): :class:`advsimplex.data.NpzImageDataset`) is a
dataset source of :func:`advsimplex.data.load_dataset`, with this grammar (:func:`open_source`):

==================================== =================================================================
source                               images
==================================== =================================================================
``<folder>``                         ``<data root>/<folder>/<split>.npz``
``<folder>:fit`` / ``<folder>:val``  the training split without / with only its held-out part
                                     (:func:`heldout_indices`); the test split is always whole
``<a>+<b>+…``                        the union of several of the above, in one joint label space
                                     (equal class names are one class; :class:`UnionImages`)
==================================== =================================================================

The seven sets of ``../shared/data`` (:data:`OFFLINE_SETS`) make the ``offline`` evaluation suite
(:mod:`advsimplex.evaluation.suite`), the ``offline-val`` suite of their held-out parts (for choosing hyper-parameters
without the test splits), and the training data of the proxy CLIP (``<all seven>:fit`` joined by ``+``).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from .arrays import NpzImageDataset, default_data_root

HELDOUT_FRACTION = 0.1
"""Share of every class of a training split held out as its ``val`` part (at least one image of a class
with two or more, none of a class with one)."""
PARTS = ("fit", "val")
_GENERIC = ("npz", "imagefolder", "torchvision")
_FOLDER = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


@dataclass(frozen=True)
class OfflineSet:
    """One of the seven shared 32×32 sets: its folder under the data root, suite names and prompt key.

    ``template_key`` names its OpenAI template ensemble (:mod:`advsimplex.evaluation.prompts`): a key of
    ``zeroshot_metadata.json``, or ``imagenet`` for open_clip's 80 OpenAI ImageNet templates
    (Tiny-ImageNet's classes are ImageNet classes).
    """

    folder: str
    title: str
    template_key: str

    @property
    def name(self) -> str:
        """The suite name of the test split, e.g. ``caltech101-32``."""
        return f"{self.folder}-32"

    @property
    def val_name(self) -> str:
        """The suite name of the held-out part of the training split, e.g. ``caltech101-32-val``."""
        return f"{self.folder}-32-val"


OFFLINE_SETS = (
    OfflineSet("tinyimagenet", "Tiny-ImageNet (32 px)", "imagenet"),
    OfflineSet("cifar10", "CIFAR-10 (32 px)", "cifar10"),
    OfflineSet("caltech101", "Caltech101 (32 px)", "caltech101"),
    OfflineSet("flowers102", "Flowers102 (32 px)", "flowers102"),
    OfflineSet("eurosat", "EuroSAT (32 px)", "eurosat"),
    OfflineSet("gtsrb", "GTSRB (32 px)", "gtsrb"),
    OfflineSet("dtd10", "DTD-10 (32 px)", "dtd"),
)
"""The offline suite, in table order: Tiny-ImageNet (the fine-tuning set) first."""


def union_source(folders: list[str] | tuple[str, ...] | None = None, part: str | None = "fit") -> str:
    """The :func:`open_source` string of the union of ``folders`` (default: the seven offline sets),
    each restricted to ``part`` (``fit``, ``val`` or None for whole splits)."""
    folders = [s.folder for s in OFFLINE_SETS] if folders is None else list(folders)
    return "+".join(f"{f}:{part}" if part else f for f in folders)


def heldout_indices(labels: Tensor | np.ndarray, key: str, fraction: float = HELDOUT_FRACTION) -> Tensor:
    """Sorted indices (int64) of the held-out part of a training split with ``labels`` (N,).

    Per class with ``n ≥ 2`` images, ``max(1, round(fraction · n))`` of them, drawn by a permutation seeded
    with ``key`` (the dataset's folder name): the partition depends on nothing but the labels and the name.
    """
    labels = torch.as_tensor(labels)
    if labels.dim() != 1:
        raise ValueError(f"labels must be 1-d (N,), got shape {tuple(labels.shape)}")
    if not 0 < fraction < 1:
        raise ValueError(f"fraction must lie in (0, 1), got {fraction!r}")
    seed = int.from_bytes(hashlib.sha256(f"heldout/{key}".encode()).digest()[:8], "little") & (2**63 - 1)
    g = torch.Generator().manual_seed(seed)
    chosen = []
    for c in torch.unique(labels).tolist():
        members = torch.nonzero(labels == c).squeeze(1)
        if len(members) < 2:
            continue
        k = max(1, round(fraction * len(members)))
        chosen.append(members[torch.randperm(len(members), generator=g)[:k]])
    if not chosen:
        return torch.zeros(0, dtype=torch.int64)
    return torch.sort(torch.cat(chosen)).values


class IndexedImages(Dataset):
    """The items ``indices`` (K,) of an :class:`NpzImageDataset`, keeping its ``classes``; ``labels`` (K,)."""

    def __init__(self, base: NpzImageDataset, indices: Tensor, source: str) -> None:
        self.base, self.indices, self.source = base, indices.to(torch.int64), source
        self.classes = list(base.classes)
        self.labels = base.labels[self.indices]

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> tuple[Tensor, int]:
        return self.base[int(self.indices[i])]


class UnionImages(Dataset):
    """Several labelled datasets as one, in a joint label space.

    ``classes`` lists every distinct class name in order of first appearance (equal names in two sets
    are one class); item ``i`` is ``(pixels, joint label)``; ``labels`` (N,) are the joint labels.
    """

    def __init__(self, parts: list[Dataset], source: str) -> None:
        if not parts:
            raise ValueError("UnionImages needs at least one dataset")
        self.parts, self.source = parts, source
        index: dict[str, int] = {}
        self.maps = []
        for part in parts:
            self.maps.append(torch.tensor([index.setdefault(str(c), len(index)) for c in part.classes]))
        self.classes = list(index)
        self.offsets = np.cumsum([0] + [len(p) for p in parts])
        self.labels = torch.cat([m[_labels(p)] for m, p in zip(self.maps, parts)])

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def __getitem__(self, i: int) -> tuple[Tensor, int]:
        if not -len(self) <= i < len(self):
            raise IndexError(f"index {i} out of range for {len(self)} images")
        i %= len(self)
        k = int(np.searchsorted(self.offsets, i, side="right")) - 1
        pixels, label = self.parts[k][i - int(self.offsets[k])]
        return pixels, int(self.maps[k][label])


def _labels(dataset: Dataset) -> Tensor:
    labels = getattr(dataset, "labels", None)
    if labels is None:
        labels = torch.tensor([int(dataset[i][1]) for i in range(len(dataset))])
    return torch.as_tensor(labels, dtype=torch.int64)


@lru_cache(maxsize=32)
def open_arrays(path: Path, size: tuple[int, int] | None, stamp: tuple[int, int]) -> NpzImageDataset:
    """One decoded npz file, shared by every caller in this process (the files are compressed: decoding
    Tiny-ImageNet's training split costs about a second, and a protocol opens it many times). ``stamp``
    (modification time, size) makes a changed file a new entry. The dataset is read-only."""
    return NpzImageDataset(path, size)


def _arrays(path: Path, size: tuple[int, int] | None) -> NpzImageDataset:
    stat = path.stat()
    return open_arrays(path, None if size is None else tuple(size), (stat.st_mtime_ns, stat.st_size))


def _open_one(
    token: str, split: str, size: tuple[int, int] | None, root: Path, whole: str
) -> NpzImageDataset | IndexedImages:
    folder, colon, part = token.partition(":")
    if not _FOLDER.match(folder):
        raise ValueError(f"dataset source {whole!r}: {folder!r} is not a folder name under the data root")
    if colon and part not in PARTS:
        raise ValueError(f"dataset source {whole!r}: unknown part {part!r} of {folder} (use {folder}:fit or "
                         f"{folder}:val)")  # fmt: skip
    path = root / folder / f"{split}.npz"
    if not path.is_file():
        raise FileNotFoundError(
            f"dataset source {whole!r}: {path} does not exist (a source name is a folder under the data root "
            f"{root} holding train.npz and test.npz; set $ADVSIMPLEX_DATA or pass the data root)"
        )
    base = _arrays(path, size)
    if not colon or split == "test":
        return base
    held = heldout_indices(base.labels, folder)
    if part == "val":
        keep = held
    else:
        mask = torch.ones(len(base), dtype=torch.bool)
        mask[held] = False
        keep = torch.nonzero(mask).squeeze(1)
    return IndexedImages(base, keep, f"{path}[{part}]")


def open_source(
    source: str, split: str, size: tuple[int, int] | None, limit: int | None = None, root: Path | None = None
) -> Dataset | None:
    """The dataset of an offline source (module docstring), or None if ``source`` is not one.

    A single word is a source only when ``<root>/<word>/<split>.npz`` exists (so that other names keep
    their own errors); ``:fit``/``:val`` qualifiers and ``+`` unions always are, and missing files raise
    ``FileNotFoundError`` naming the path. ``limit`` keeps the first N images.
    """
    root = default_data_root() if root is None else Path(root)
    if source.partition(":")[0] in _GENERIC:
        return None
    tokens = source.split("+")
    if len(tokens) == 1 and ":" not in source:
        if not _FOLDER.match(source) or not (root / source / f"{split}.npz").is_file():
            return None
    if any(t.partition(":")[0] in _GENERIC for t in tokens):
        raise ValueError(f"dataset source {source!r}: a '+' union joins folder names under the data root only")
    if any(not t for t in tokens):
        raise ValueError(f"dataset source {source!r}: empty name in the '+' union")
    parts = [_open_one(t, split, size, root, source) for t in tokens]
    dataset: Dataset = parts[0] if len(parts) == 1 else UnionImages(parts, source)
    if limit is not None and limit < len(dataset):
        dataset = _First(dataset, limit)
    return dataset


class _First(Dataset):
    """The first ``n`` items of a dataset (``limit``), keeping ``classes``, ``labels`` and ``source``."""

    def __init__(self, base: Dataset, n: int) -> None:
        self.base, self.n = base, n
        self.classes, self.source = list(base.classes), base.source
        self.labels = _labels(base)[:n]

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> tuple[Tensor, int]:
        if not 0 <= i < self.n:
            raise IndexError(f"index {i} out of range for {self.n} images")
        return self.base[i]
