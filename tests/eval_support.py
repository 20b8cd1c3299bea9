"""Shared fixtures of the evaluation tests: a micro CLIP briefly fitted to real CIFAR-10 images.

The fit (60 Adam steps on 32 training images of 4 classes, at the micro model's 8×8 input) is done
once per test process and cached; every caller gets a fresh model built from the cached weights.
"""

from __future__ import annotations

from functools import cache

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from advsimplex.data import load_dataset
from advsimplex.models import load_clip
from advsimplex.zeroshot import ZeroShotModel, class_text_features

MODEL = "advsimplex-micro-vit"


@pytest.fixture(scope="module", autouse=True)
def single_thread():
    """Micro models gain nothing from intra-op threads, and on a busy 2-core machine two OpenMP threads
    made their forward/backward passes ~50× slower (measured): run these modules on one thread."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


CLASSES = 4
IMAGES = 32


@cache
def _fitted() -> tuple[dict, torch.Tensor, torch.Tensor, tuple[str, ...], torch.Tensor]:
    torch.manual_seed(0)
    model, tokenizer, _ = load_clip(MODEL)
    data = load_dataset("cifar10", "train", image_size=8)
    keep = torch.nonzero(data.labels < CLASSES).squeeze(1)
    pick = keep[torch.randperm(len(keep), generator=torch.Generator().manual_seed(0))[:IMAGES]]
    x = torch.stack([data[int(i)][0] for i in pick])
    y = data.labels[pick]
    classes = tuple(data.classes[:CLASSES])
    clf = ZeroShotModel.from_clip(model, class_text_features(model, tokenizer, classes))
    opt = torch.optim.Adam(model.visual.parameters(), lr=1e-2)
    model.train()
    for _ in range(60):
        loss = F.cross_entropy(clf(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    return {k: v.detach().clone() for k, v in model.state_dict().items()}, x, y, classes, pick


def fitted_model():
    """(model, tokenizer, name) of the fitted micro model (a fresh copy)."""
    state, *_ = _fitted()
    model, tokenizer, name = load_clip(MODEL)
    model.load_state_dict(state)
    return model.eval(), tokenizer, name


def fitted_data() -> tuple[torch.Tensor, torch.Tensor, tuple[str, ...]]:
    """The fitting images (32, 3, 8, 8) in [0, 1], their labels (32,) in [0, 4), and the class names."""
    _, x, y, classes, _ = _fitted()
    return x.clone(), y.clone(), classes


def write_fitted_npz(path) -> None:
    """The fitting images as an ``npz:`` dataset (uint8 32×32 originals; read at 8×8 they are ``fitted_data``)."""
    *_, pick = _fitted()
    data = load_dataset("cifar10", "train")
    np.savez(path, images=data.images[pick].numpy(), labels=data.labels[pick].numpy(),
             classes=np.array(data.classes[:CLASSES]))  # fmt: skip


def fitted_classifier() -> ZeroShotModel:
    """The fitted model as a zero-shot classifier over its 4 classes."""
    model, tokenizer, _ = fitted_model()
    _, _, classes = fitted_data()
    return ZeroShotModel.from_clip(model, class_text_features(model, tokenizer, classes)).eval()


def random_classifier(seed: int = 1) -> ZeroShotModel:
    """A randomly initialised micro model over the same 4 classes."""
    torch.manual_seed(seed)
    model, tokenizer, _ = load_clip(MODEL)
    _, _, classes = fitted_data()
    return ZeroShotModel.from_clip(model, class_text_features(model, tokenizer, classes)).eval()
