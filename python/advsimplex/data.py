"""Image datasets in pixel space [0, 1] with CLIP resizing (normalisation happens in the model).

Sources (:func:`load_dataset`):

- ``cifar10``                 the CIFAR-10 arrays in ``<data root>/cifar10/{train,test}.npz``
- ``npz:/path/file.npz``      any npz with ``images`` uint8 (N, H, W, 3), ``labels`` (N,), ``classes`` (C,)
- ``imagefolder:/path``       a torchvision ``ImageFolder`` tree (``/path/<split>/`` if it exists)
- ``torchvision:NAME[:root]`` a torchvision dataset already on disk (never downloaded)
- ``<folder>``, ``<folder>:fit|val``, ``<a>+<b>`` npz arrays under the data root by folder name, the parts of
  their training split, unions in a joint label space (:mod:`advsimplex.evaluation.offline`)

The data root is ``$ADVSIMPLEX_DATA`` if set, else the first existing ``shared/data`` beside the
working directory or the repository (``../shared/data``). Data is read in place, never copied.
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


def load_dataset(
    source: str, split: str = "test", image_size: int | tuple[int, int] | None = None, limit: int | None = None
) -> Dataset:
    """A dataset of ``(pixels (3, H, W) in [0, 1], label)`` with a ``classes`` list (see the module docstring)."""
    if not isinstance(source, str) or not source:
        raise TypeError(f"source must be a dataset name such as 'cifar10' or 'npz:<file>', got {source!r}")
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    size, limit = check_image_size(image_size), check_limit(limit)
    if source == "cifar10":
        path = default_data_root() / "cifar10" / f"{split}.npz"
        if not path.is_file():
            raise FileNotFoundError(
                f"CIFAR-10 arrays not found at {path}: set ADVSIMPLEX_DATA to the folder holding cifar10/"
            )
        return NpzImageDataset(path, size, limit)
    kind, _, rest = source.partition(":")
    if kind == "npz" and rest:
        return NpzImageDataset(rest, size, limit)
    if kind == "imagefolder" and rest:
        from torchvision.datasets import ImageFolder

        root = Path(rest)
        if (root / split).is_dir():
            root = root / split
        if not root.is_dir():
            raise FileNotFoundError(f"ImageFolder root {root} does not exist")
        base = ImageFolder(str(root))
        return _limited(ResizedImages(base, list(base.classes), size, source), limit)
    if kind == "torchvision" and rest:
        import inspect

        import torchvision.datasets as tvd

        name, _, root = rest.partition(":")
        cls = getattr(tvd, name, None)
        if cls is None:
            raise ValueError(f"torchvision.datasets has no dataset {name!r}")
        root = root or str(default_data_root() / name.lower())
        params = inspect.signature(cls).parameters
        kwargs = {"download": False} if "download" in params else {}
        if "train" in params:
            kwargs["train"] = split == "train"
        elif "split" in params:
            kwargs["split"] = split
        try:
            base = cls(root, **kwargs)
        except (RuntimeError, FileNotFoundError) as exc:
            raise FileNotFoundError(
                f"torchvision dataset {name} not found under {root} (never downloaded): {exc}"
            ) from exc
        classes = list(getattr(base, "classes", []) or [])
        if not classes:
            raise ValueError(f"torchvision dataset {name} exposes no class names (.classes)")
        return _limited(ResizedImages(base, classes, size, source), limit)
    from .evaluation.offline import open_source

    if (offline := open_source(source, split, size, limit)) is not None:
        return offline
    raise ValueError(
        f"unknown dataset source {source!r}: use 'cifar10', 'npz:<file>', 'imagefolder:<dir>', "
        "'torchvision:<Name>[:<root>]' or a folder under the data root holding train.npz and test.npz"
    )


def _limited(dataset: Dataset, limit: int | None) -> Dataset:
    """The first ``limit`` items of ``dataset`` (all of them when it holds fewer), keeping its class names."""
    if limit is None or limit >= len(dataset):
        return dataset
    subset = torch.utils.data.Subset(dataset, range(limit))
    subset.classes = dataset.classes
    subset.source = dataset.source
    return subset
