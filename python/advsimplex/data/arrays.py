"""Image arrays and image folders as datasets of pixels in [0, 1] with CLIP resizing, and the data root.

Normalisation happens in the model (:class:`advsimplex.ZeroShotModel`), so datasets yield raw pixels.
"""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import Dataset


def default_data_root() -> Path:
    """Where shared datasets live (see the module docstring)."""
    env = os.environ.get("ADVSIMPLEX_DATA")
    if env:
        return Path(env)
    repo = Path(__file__).resolve().parents[2]
    for base in (Path.cwd(), repo):
        candidate = (base / ".." / "shared" / "data").resolve()
        if candidate.is_dir():
            return candidate
    return (repo / ".." / "shared" / "data").resolve()


def resize_pixels(images: Tensor, size: tuple[int, int] | None) -> Tensor:
    """Bicubic, antialiased resize of (..., 3, H, W) float pixels to ``size``, clamped to [0, 1]."""
    if size is None or tuple(images.shape[-2:]) == tuple(size):
        return images
    squeeze = images.dim() == 3
    out = F.interpolate(images[None] if squeeze else images, size=size, mode="bicubic", antialias=True)
    out = out.clamp(0, 1)
    return out[0] if squeeze else out


def check_image_size(image_size) -> tuple[int, int] | None:
    """``image_size`` (None, an int or an (H, W) pair of positive ints) as None or (H, W); ``ValueError``/
    ``TypeError`` naming ``image_size`` otherwise."""
    if image_size is None:
        return None
    pair = (image_size, image_size) if isinstance(image_size, int | np.integer) else image_size
    ok = isinstance(pair, tuple | list) and len(pair) == 2
    ok = ok and all(isinstance(v, int | np.integer) and not isinstance(v, bool) for v in pair)
    if not ok:
        raise TypeError(f"image_size must be None, an int or an (H, W) pair of ints, got {image_size!r}")
    if min(pair) < 1:
        raise ValueError(f"image_size must be positive, got {image_size!r}")
    return int(pair[0]), int(pair[1])


def check_limit(limit) -> int | None:
    """``limit`` (None or a positive int); ``ValueError``/``TypeError`` naming ``limit`` otherwise."""
    if limit is None:
        return None
    if not isinstance(limit, int | np.integer) or isinstance(limit, bool):
        raise TypeError(f"limit must be None or a positive int, got {type(limit).__name__} {limit!r}")
    if limit < 1:
        raise ValueError(f"limit must be None or a positive int (the number of images kept), got {limit}")
    return int(limit)


class NpzImageDataset(Dataset):
    """Images from an npz file (``images`` uint8 (N, H, W, 3), ``labels`` integers (N,) in [0, C),
    ``classes`` (C,) names).

    Items are ``(pixels float32 (3, H', W') in [0, 1], label int)``; ``image_size`` resizes to (H', W').
    Every array is checked when the file is opened (shapes, dtypes, label range), so a bad file fails here
    with the file and the array named, not at the first batch.
    """

    def __init__(self, path: str | os.PathLike, image_size: tuple[int, int] | None = None, limit: int | None = None):
        path = Path(path)
        size, limit = check_image_size(image_size), check_limit(limit)
        if not path.is_file():
            raise FileNotFoundError(f"dataset file {path} does not exist")
        try:
            with np.load(path, allow_pickle=False) as d:
                missing = {"images", "labels", "classes"} - set(d.files)
                if missing:
                    raise ValueError(f"{path} lacks arrays {sorted(missing)} (needs images, labels, classes)")
                images, labels, classes = d["images"], d["labels"], d["classes"]
        except (OSError, zipfile.BadZipFile, EOFError) as exc:
            raise ValueError(f"{path} is not a readable npz file ({exc})") from exc
        _check_npz_arrays(path, images, labels, classes)
        if limit is not None:
            images, labels = images[:limit], labels[:limit]
        self.images = torch.from_numpy(np.ascontiguousarray(images))
        self.labels = torch.from_numpy(labels.astype(np.int64))
        self.classes = [str(c) for c in classes]
        self.image_size = size
        self.source = str(path)

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, i: int) -> tuple[Tensor, int]:
        pixels = self.images[i].permute(2, 0, 1).float().div_(255)
        return resize_pixels(pixels, self.image_size), int(self.labels[i])


def _check_npz_arrays(path: Path, images: np.ndarray, labels: np.ndarray, classes: np.ndarray) -> None:
    if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
        raise ValueError(f"{path}: images must be uint8 (N, H, W, 3), got {images.dtype} {images.shape}")
    if classes.ndim != 1 or classes.shape[0] == 0 or classes.dtype.kind not in "USO":
        raise ValueError(f"{path}: classes must be a non-empty 1-D array of names, got {classes.dtype} {classes.shape}")
    if labels.ndim != 1 or labels.shape[0] != images.shape[0]:
        raise ValueError(
            f"{path}: labels must have shape (N,) = ({images.shape[0]},) like the images, got {labels.shape}"
        )
    if labels.dtype.kind not in "iu":
        raise ValueError(f"{path}: labels must be integers, got {labels.dtype} (float labels are not truncated)")
    if labels.size and (labels.min() < 0 or labels.max() >= len(classes)):
        bad = labels[(labels < 0) | (labels >= len(classes))]
        raise ValueError(
            f"{path}: labels must lie in [0, {len(classes)}) (one per class name), got {bad.size} outside, "
            f"e.g. {bad[0]}"
        )


class ResizedImages(Dataset):
    """A PIL-image dataset (ImageFolder, torchvision) as resized [0, 1] tensors, with ``classes``.

    ``base[i]`` returns ``(PIL image, label)``; items here are ``(pixels float32 (3, H, W), label)``.
    """

    def __init__(self, base, classes: list[str], image_size: tuple[int, int] | None, source: str):
        self.base, self.classes, self.image_size, self.source = base, classes, image_size, source

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, i: int) -> tuple[Tensor, int]:
        image, label = self.base[i]
        pixels = torch.from_numpy(np.asarray(image.convert("RGB"), dtype=np.uint8).copy()).permute(2, 0, 1)
        return resize_pixels(pixels.float().div_(255), self.image_size), int(label)


def limited(dataset: Dataset, limit: int | None) -> Dataset:
    """The first ``limit`` items of ``dataset`` (all of them when it holds fewer), keeping its class names."""
    if limit is None or limit >= len(dataset):
        return dataset
    subset = torch.utils.data.Subset(dataset, range(limit))
    subset.classes = dataset.classes
    subset.source = dataset.source
    return subset
