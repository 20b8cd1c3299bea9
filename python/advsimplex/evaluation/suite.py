"""Evaluation datasets: the paper's 15-set suite, the offline 32×32 suite, and generic sources.

Every suite entry is read from the *data root* (``--data-root``; default
:func:`advsimplex.data.default_data_root`, i.e. ``$ADVSIMPLEX_DATA`` or ``../shared/data``) with
torchvision's own folder names below it, so that one root holds them all (torchvision's
``download=True`` into that root produces this layout; nothing is ever downloaded here):

============== ============================================================ =====================
name           expected under the data root                                 evaluated split
============== ============================================================ =====================
imagenet       ``imagenet/val/<wnid>/*.JPEG`` (1000 class folders)           val (50,000)
cifar10        ``cifar10/test.npz`` (this project's arrays)                  test (10,000)
cifar100       ``cifar-100-python/`` (torchvision ``CIFAR100``)              test (10,000)
stl10          ``stl10_binary/`` (torchvision ``STL10``)                     test (8,000)
caltech101     ``caltech101/101_ObjectCategories/`` (``Caltech101``)         all (no split)
caltech256     ``caltech256/256_ObjectCategories/`` (``Caltech256``)         all (no split)
pets           ``oxford-iiit-pet/{images,annotations}`` (``OxfordIIITPet``)  test (3,669)
flowers102     ``flowers-102/{jpg,imagelabels.mat,setid.mat}`` (scipy)       test (6,149)
food101        ``food-101/{images,meta}`` (``Food101``)                      test (25,250)
cars           ``stanford_cars/{devkit,cars_test,...withlabels.mat}`` (scipy) test (8,041)
sun397         ``SUN397/ClassName.txt`` + class folders (``SUN397``)         all (no split)
fgvc_aircraft  ``fgvc-aircraft-2013b/data/`` (``FGVCAircraft``, variants)    test (3,333)
eurosat        ``eurosat/2750/<class>/`` (``EuroSAT``)                       all (no split)
dtd            ``dtd/dtd/{images,labels}`` (``DTD``, partition 1)            test (1,880)
pcam           ``pcam/camelyonpatch_level_2_split_test_{x,y}.h5`` (h5py)     test (32,768)
============== ============================================================ =====================

Class names are the CLIP ones (``zeroshot_metadata.json``, from OpenAI CLIP's prompts via
clip-benchmark; ImageNet's from ``open_clip.zero_shot_metadata``) where torchvision's are folder
names, else torchvision's with ``_`` read as a space.

``--dataset offline`` is the seven compact sets of ``../shared/data`` (:mod:`.offline`: 32×32 uint8
arrays with CLIP class names, read in place). Their names end in ``-32`` so that they never stand for the
full-resolution paper entries of the same dataset; ``--templates openai`` gives each its OpenAI ensemble:

================== ====================================== ==================================================
name               expected under the data root           OpenAI templates (``--templates openai``)
================== ====================================== ==================================================
tinyimagenet-32    ``tinyimagenet/test.npz`` (200 classes) ImageNet's 80 (Tiny-ImageNet's classes are ImageNet's)
cifar10-32         ``cifar10/test.npz`` (10)               cifar10 (18); the same file as the ``cifar10`` entry
caltech101-32      ``caltech101/test.npz`` (101)           caltech101 (34)
flowers102-32      ``flowers102/test.npz`` (102)           flowers102 (1)
eurosat-32         ``eurosat/test.npz`` (10)               eurosat (3)
gtsrb-32           ``gtsrb/test.npz`` (43)                 gtsrb (3)
dtd10-32           ``dtd10/test.npz`` (10)                 dtd (8)
================== ====================================== ==================================================

``--dataset offline-val`` is their held-out validation parts (``<name>-32-val``: 10 % of every class of
``train.npz``, :func:`.offline.heldout_indices`), for choosing hyper-parameters without the test splits.
Besides suite names, a dataset can be any :func:`advsimplex.data.load_dataset` source: ``npz:<file>``,
``imagefolder:<dir>``, ``torchvision:<Name>[:<root>]`` (test split).
"""

from __future__ import annotations

import importlib.util
import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import Path

from torch.utils.data import Dataset

from ..data import (
    OFFLINE_SETS,
    NpzImageDataset,
    OfflineSet,
    ResizedImages,
    default_data_root,
    load_dataset,
    open_source,
)

PAPER_SUITE = (
    "imagenet", "cifar10", "cifar100", "stl10", "caltech101", "caltech256", "pets", "flowers102", "food101",
    "cars", "sun397", "fgvc_aircraft", "eurosat", "dtd", "pcam",
)  # fmt: skip
"""The paper's 15 zero-shot evaluation sets, in its order (``--dataset paper``)."""

OFFLINE_SUITE = tuple(s.name for s in OFFLINE_SETS)
"""The seven 32×32 sets of the shared data folder, test splits (``--dataset offline``)."""
OFFLINE_VAL_SUITE = tuple(s.val_name for s in OFFLINE_SETS)
"""Their held-out validation parts of the training splits (``--dataset offline-val``)."""

SUITES = {"paper": PAPER_SUITE, "offline": OFFLINE_SUITE, "offline-val": OFFLINE_VAL_SUITE}
GENERIC_PREFIXES = ("npz:", "imagefolder:", "torchvision:")


class DatasetNotFoundError(FileNotFoundError):
    """A known dataset whose files are not where they are expected."""


@dataclass
class EvalDataset:
    """An opened evaluation set.

    ``dataset[i]`` is ``(pixels float32 (3, H, W) in [0, 1], label int)`` at the model's input size;
    ``classes`` are the names put into the prompt templates (index = label).
    """

    name: str
    title: str
    dataset: Dataset
    classes: list[str]
    location: str
    split: str
    template_key: str | None

    def __len__(self) -> int:
        return len(self.dataset)


@dataclass(frozen=True)
class SuiteEntry:
    """One dataset of the suite: where its files are and how to read them.

    ``required`` are paths (relative to the data root) that must all exist; ``layout`` says in words
    what is expected; ``needs`` names Python packages the torchvision reader imports; ``template_key``
    names the prompt templates it uses (:mod:`.prompts`; default its own name).
    """

    name: str
    title: str
    required: tuple[str, ...]
    layout: str
    split: str
    build: Callable[[Path, tuple[int, int] | None], tuple[Dataset, list[str]]]
    needs: tuple[str, ...] = ()
    template_key: str | None = None

    def missing(self, root: Path) -> list[Path]:
        """The required paths that do not exist under ``root``."""
        return [root / rel for rel in self.required if not (root / rel).exists()]

    def check(self, root: Path) -> None:
        """Raise :class:`DatasetNotFoundError` / ``ImportError`` with the expected layout if unusable."""
        gone = self.missing(root)
        if gone:
            raise DatasetNotFoundError(
                f"dataset {self.name!r} ({self.title}) not found under the data root {root}: missing "
                f"{', '.join(str(p) for p in gone)}. Expected layout: {self.layout}. Point --data-root "
                "(or $ADVSIMPLEX_DATA) at the folder holding it, or pass --skip-missing to leave it out"
            )
        for package in self.needs:
            if importlib.util.find_spec(package) is None:
                raise ImportError(f"dataset {self.name!r} ({self.title}) is read with {package}: pip install {package}")

    def open(self, root: Path, image_size: tuple[int, int] | None) -> EvalDataset:
        self.check(root)
        dataset, classes = self.build(root, image_size)
        key = self.template_key or self.name
        return EvalDataset(self.name, self.title, dataset, classes, str(root / self.required[0]), self.split, key)


@cache
def zeroshot_metadata() -> dict:
    """Class names and OpenAI template ensembles bundled with advsimplex (see the file's ``_about``)."""
    text = (resources.files("advsimplex.evaluation") / "zeroshot_metadata.json").read_text(encoding="utf-8")
    return json.loads(text)


def clean_classname(name: str) -> str:
    """Folder-style class names as words: ``aquarium_fish`` → ``aquarium fish``."""
    return re.sub(r"\s+", " ", name.replace("_", " ")).strip()


def _torchvision(cls_name: str, classes: Callable[[object], list[str]] | None = None, **kwargs):
    """A builder for a torchvision dataset read from the data root (never downloaded)."""

    def build(root: Path, size: tuple[int, int] | None) -> tuple[Dataset, list[str]]:
        import torchvision.datasets as tvd

        base = getattr(tvd, cls_name)(str(root), download=False, **kwargs)
        names = classes(base) if classes is not None else [clean_classname(c) for c in base.classes]
        return ResizedImages(base, names, size, f"torchvision:{cls_name}:{root}"), names

    return build


def _bundled(key: str, expected: int) -> Callable[[object], list[str]]:
    def names(base) -> list[str]:
        found = len(getattr(base, "categories", None) or getattr(base, "classes", None) or [])
        listed = zeroshot_metadata()["classnames"][key]
        if found and found != expected:
            raise ValueError(f"{key}: the files on disk have {found} classes, the CLIP class list {expected}")
        assert len(listed) == expected
        return list(listed)

    return names


def _caltech256_names(base) -> list[str]:
    # "001.ak47" -> "ak47", "253.faces-easy-101" -> "faces easy"
    return [clean_classname(re.sub(r"-101$", "", c.split(".", 1)[-1]).replace("-", " ")) for c in base.categories]


def _sun397(root: Path, size: tuple[int, int] | None) -> tuple[Dataset, list[str]]:
    import torchvision.datasets as tvd

    base = tvd.SUN397(str(root), download=False)
    # torchvision lists the files in file-system order; sort them so that subsets are reproducible.
    if hasattr(base, "_image_files") and hasattr(base, "_labels"):
        pairs = sorted(zip(base._image_files, base._labels))
        base._image_files, base._labels = [p for p, _ in pairs], [lab for _, lab in pairs]
    names = [clean_classname(c.replace("/", " ")) for c in base.classes]
    return ResizedImages(base, names, size, f"torchvision:SUN397:{root}"), names


def _imagenet(root: Path, size: tuple[int, int] | None) -> tuple[Dataset, list[str]]:
    from open_clip.zero_shot_metadata import IMAGENET_CLASSNAMES
    from torchvision.datasets import ImageFolder

    base = ImageFolder(str(root / "imagenet" / "val"))
    if len(base.classes) != len(IMAGENET_CLASSNAMES):
        raise ValueError(
            f"imagenet: {root / 'imagenet' / 'val'} has {len(base.classes)} class folders, expected "
            f"{len(IMAGENET_CLASSNAMES)} (one per WordNet id, e.g. n01440764/)"
        )
    names = list(IMAGENET_CLASSNAMES)
    return ResizedImages(base, names, size, f"imagefolder:{root / 'imagenet' / 'val'}"), names


def _cifar10(root: Path, size: tuple[int, int] | None) -> tuple[Dataset, list[str]]:
    dataset = NpzImageDataset(root / "cifar10" / "test.npz", size)
    return dataset, [clean_classname(c) for c in dataset.classes]


def _offline(spec: OfflineSet, held_out: bool) -> SuiteEntry:
    """The suite entry of an offline set: its test split, or the held-out part of its training split."""

    def build(root: Path, size: tuple[int, int] | None) -> tuple[Dataset, list[str]]:
        if held_out:
            dataset = open_source(f"{spec.folder}:val", "train", size, root=root)
        else:
            dataset = open_source(spec.folder, "test", size, root=root)
        return dataset, list(dataset.classes)

    key = spec.template_key
    if held_out:
        layout = f"{spec.folder}/train.npz (32×32 arrays; its held-out 10 % of every class)"
        return SuiteEntry(spec.val_name, f"{spec.title} val", (f"{spec.folder}/train.npz",), layout, "val", build,
                          template_key=key)  # fmt: skip
    layout = f"{spec.folder}/test.npz (32×32 arrays: images, labels, classes)"
    return SuiteEntry(spec.name, spec.title, (f"{spec.folder}/test.npz",), layout, "test", build, template_key=key)


_ENTRIES = (
    SuiteEntry("imagenet", "ImageNet", ("imagenet/val",),
               "imagenet/val/<wnid>/*.JPEG: the 50,000 validation images in 1000 WordNet-id folders", "val", _imagenet),
    SuiteEntry("cifar10", "CIFAR-10", ("cifar10/test.npz",),
               "cifar10/test.npz with arrays images uint8 (N, H, W, 3), labels (N,), classes (10,)", "test", _cifar10),
    SuiteEntry("cifar100", "CIFAR-100", ("cifar-100-python/test", "cifar-100-python/meta"),
               "cifar-100-python/{train,test,meta} (torchvision CIFAR100)", "test",
               _torchvision("CIFAR100", train=False)),
    SuiteEntry("stl10", "STL-10", ("stl10_binary/test_X.bin", "stl10_binary/test_y.bin"),
               "stl10_binary/{test_X.bin,test_y.bin,class_names.txt,...} (torchvision STL10)", "test",
               _torchvision("STL10", split="test")),
    SuiteEntry("caltech101", "Caltech101", ("caltech101/101_ObjectCategories",),
               "caltech101/101_ObjectCategories/<category>/*.jpg (torchvision Caltech101)", "all",
               _torchvision("Caltech101", _bundled("caltech101", 101), target_type="category")),
    SuiteEntry("caltech256", "Caltech256", ("caltech256/256_ObjectCategories",),
               "caltech256/256_ObjectCategories/<NNN.category>/*.jpg (torchvision Caltech256)", "all",
               _torchvision("Caltech256", _caltech256_names)),
    SuiteEntry("pets", "Oxford Pets", ("oxford-iiit-pet/images", "oxford-iiit-pet/annotations/test.txt"),
               "oxford-iiit-pet/{images,annotations} (torchvision OxfordIIITPet)", "test",
               _torchvision("OxfordIIITPet", split="test")),
    SuiteEntry("flowers102", "Flowers102",
               ("flowers-102/jpg", "flowers-102/imagelabels.mat", "flowers-102/setid.mat"),
               "flowers-102/{jpg/,imagelabels.mat,setid.mat} (torchvision Flowers102)", "test",
               _torchvision("Flowers102", split="test"), needs=("scipy",)),
    SuiteEntry("food101", "Food101", ("food-101/images", "food-101/meta/test.json"),
               "food-101/{images,meta} (torchvision Food101)", "test", _torchvision("Food101", split="test")),
    SuiteEntry("cars", "Stanford Cars",
               ("stanford_cars/devkit", "stanford_cars/cars_test", "stanford_cars/cars_test_annos_withlabels.mat"),
               "stanford_cars/{devkit/,cars_test/,cars_test_annos_withlabels.mat} (torchvision StanfordCars)",
               "test", _torchvision("StanfordCars", split="test"), needs=("scipy",)),
    SuiteEntry("sun397", "SUN397", ("SUN397/ClassName.txt",),
               "SUN397/ClassName.txt and SUN397/<letter>/<class>/sun_*.jpg (torchvision SUN397)", "all", _sun397),
    SuiteEntry("fgvc_aircraft", "FGVC Aircraft", ("fgvc-aircraft-2013b/data/images_variant_test.txt",),
               "fgvc-aircraft-2013b/data/{images/,variants.txt,images_variant_test.txt} (torchvision FGVCAircraft)",
               "test", _torchvision("FGVCAircraft", split="test", annotation_level="variant")),
    SuiteEntry("eurosat", "EuroSAT", ("eurosat/2750",),
               "eurosat/2750/<class>/*.jpg, the 10 RGB class folders (torchvision EuroSAT)", "all",
               _torchvision("EuroSAT", _bundled("eurosat", 10))),
    SuiteEntry("dtd", "DTD", ("dtd/dtd/images", "dtd/dtd/labels/test1.txt"),
               "dtd/dtd/{images,labels} (torchvision DTD, partition 1)", "test", _torchvision("DTD", split="test")),
    SuiteEntry("pcam", "PCAM",
               ("pcam/camelyonpatch_level_2_split_test_x.h5", "pcam/camelyonpatch_level_2_split_test_y.h5"),
               "pcam/camelyonpatch_level_2_split_test_{x,y}.h5 (torchvision PCAM)", "test",
               _torchvision("PCAM", _bundled("pcam", 2), split="test"), needs=("h5py",)),
)  # fmt: skip

_ENTRIES += tuple(_offline(spec, held_out) for held_out in (False, True) for spec in OFFLINE_SETS)
SUITE: dict[str, SuiteEntry] = {e.name: e for e in _ENTRIES}
ALIASES = {
    "oxford_pets": "pets", "oxford_iiit_pet": "pets", "flowers": "flowers102", "oxford_flowers": "flowers102",
    "stanford_cars": "cars", "fgvc": "fgvc_aircraft", "aircraft": "fgvc_aircraft", "imagenet1k": "imagenet",
}  # fmt: skip


def _normalise(name: str) -> str:
    """Case, ``-``, ``_`` and spaces do not matter in dataset names: ``CIFAR-10`` is ``cifar10``."""
    return re.sub(r"[-_\s]", "", name.strip().lower())


_LOOKUP = {_normalise(n): n for n in SUITE} | {_normalise(a): n for a, n in ALIASES.items()}
_SUITE_LOOKUP = {_normalise(n): n for n in SUITES}


@dataclass(frozen=True)
class DatasetRef:
    """A resolved dataset argument: a suite entry or a generic :func:`load_dataset` source."""

    name: str
    entry: SuiteEntry | None = None

    @property
    def title(self) -> str:
        return self.entry.title if self.entry else self.name

    def check(self, root: Path) -> None:
        """Raise a clear error if the files are missing (cheap: no image is read)."""
        if self.entry is not None:
            self.entry.check(root)
            return
        kind, _, rest = self.name.partition(":")
        if kind in ("npz", "imagefolder") and not Path(rest).exists():
            raise DatasetNotFoundError(f"dataset {self.name!r}: {rest} does not exist")

    def open(self, root: Path, image_size: tuple[int, int] | None) -> EvalDataset:
        """Read the dataset at ``image_size`` (test split)."""
        if self.entry is not None:
            return self.entry.open(root, image_size)
        dataset = load_dataset(self.name, "test", image_size)
        classes = [clean_classname(c) for c in dataset.classes]
        return EvalDataset(self.name, self.name, dataset, classes, getattr(dataset, "source", self.name), "test", None)


def resolve_datasets(names: Sequence[str]) -> list[DatasetRef]:
    """Dataset arguments → references: suite names (case, ``-``, ``_`` ignored), suite groups (``paper``,
    ``offline``, ``offline-val``), or generic sources. Unknown names raise ``ValueError`` listing the choices."""
    if not names:
        raise ValueError("no dataset given: pass --dataset cifar10 (or paper, or npz:/imagefolder:/torchvision:)")
    refs: list[DatasetRef] = []
    for raw in names:
        if raw.startswith(GENERIC_PREFIXES):
            if not raw.partition(":")[2]:
                raise ValueError(f"dataset {raw!r} names no file, folder or torchvision class after the prefix")
            refs.append(DatasetRef(raw))
            continue
        key = _normalise(raw)
        if key in _SUITE_LOOKUP:
            refs.extend(DatasetRef(n, SUITE[n]) for n in SUITES[_SUITE_LOOKUP[key]])
            continue
        key = _LOOKUP.get(key, key)
        if key not in SUITE:
            raise ValueError(
                f"unknown dataset {raw!r}: use a suite name ({', '.join(SUITE)}), a suite ({', '.join(SUITES)}), "
                "or a source npz:<file>, imagefolder:<dir>, torchvision:<Name>[:<root>]"
            )
        refs.append(DatasetRef(key, SUITE[key]))
    unique: dict[str, DatasetRef] = {}
    for ref in refs:  # a dataset named twice (or by a suite and by name) is evaluated once
        unique.setdefault(ref.name, ref)
    return list(unique.values())


def resolve_data_root(root: str | Path | None) -> Path:
    """``root`` if given (it must be a folder), else :func:`default_data_root`."""
    if root is None:
        return default_data_root()
    path = Path(root).expanduser()
    if not path.is_dir():
        raise DatasetNotFoundError(f"data root {path} is not a folder (--data-root)")
    return path


def suite_table(root: Path) -> str:
    """A markdown table of the datasets: name, title, split, expected layout, whether it is present, and
    the suites (``--dataset paper``, ``offline``, ``offline-val``) that list it."""
    lines = ["| name | dataset | split | expected under the data root | present | suite |", "|---|---|---|---|---|---|"]
    for e in _ENTRIES:
        present = "yes" if not e.missing(root) else "no"
        suites = ", ".join(s for s, names in SUITES.items() if e.name in names) or "–"
        lines.append(f"| {e.name} | {e.title} | {e.split} | {e.layout} | {present} | {suites} |")
    return "\n".join(lines)
