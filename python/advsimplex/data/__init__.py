"""Image datasets in pixel space [0, 1] with CLIP resizing (normalisation happens in the model).

Sources (:func:`load_dataset`):

- ``cifar10``                 the CIFAR-10 arrays in ``<data root>/cifar10/{train,test}.npz``
- ``npz:/path/file.npz``      any npz with ``images`` uint8 (N, H, W, 3), ``labels`` (N,), ``classes`` (C,)
- ``imagefolder:/path``       a torchvision ``ImageFolder`` tree (``/path/<split>/`` if it exists)
- ``torchvision:NAME[:root]`` a torchvision dataset already on disk (never downloaded)
- ``<folder>``, ``<folder>:fit|val``, ``<a>+<b>`` npz arrays under the data root by folder name, the parts of
  their training split, unions in a joint label space (:mod:`advsimplex.data.folders`)

The data root is ``$ADVSIMPLEX_DATA`` if set, else the first existing ``shared/data`` beside the
working directory or the repository (``../shared/data``). Data is read in place, never copied.
"""

from __future__ import annotations

from pathlib import Path

from torch.utils.data import Dataset

from .arrays import (
    NpzImageDataset,
    ResizedImages,
    check_image_size,
    check_limit,
    default_data_root,
    limited,
    resize_pixels,
)
from .folders import OFFLINE_SETS, OfflineSet, open_source, union_source

__all__ = [
    "OFFLINE_SETS",
    "NpzImageDataset",
    "OfflineSet",
    "ResizedImages",
    "default_data_root",
    "load_dataset",
    "resize_pixels",
    "union_source",
]


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
        return limited(ResizedImages(base, list(base.classes), size, source), limit)
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
        return limited(ResizedImages(base, classes, size, source), limit)
    if (offline := open_source(source, split, size, limit)) is not None:
        return offline
    raise ValueError(
        f"unknown dataset source {source!r}: use 'cifar10', 'npz:<file>', 'imagefolder:<dir>', "
        "'torchvision:<Name>[:<root>]' or a folder under the data root holding train.npz and test.npz"
    )
