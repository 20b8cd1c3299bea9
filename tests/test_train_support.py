"""Shared pieces of the training tests (small real-image npz files, tiny configs) and their own check."""

from __future__ import annotations

import contextlib
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file

from advsimplex.data import default_data_root
from advsimplex.train import TrainConfig


@contextlib.contextmanager
def single_thread():
    """One intra-op thread: the micro models gain nothing from more, and a busy machine loses much."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def write_cifar_slice(path: Path, split: str, count: int, offset: int = 0) -> Path:
    """An npz with ``count`` real CIFAR-10 images of ``split`` (a slice of the shared arrays)."""
    source = default_data_root() / "cifar10" / f"{split}.npz"
    with np.load(source, allow_pickle=False) as d:
        np.savez(
            path,
            images=d["images"][offset : offset + count],
            labels=d["labels"][offset : offset + count],
            classes=d["classes"],
        )
    return path


def tiny_config(data: Path, out: Path, **overrides) -> TrainConfig:
    """The micro ViT (8×8 pixels) on an npz slice: a few steps of a few images, no progress bar."""
    values = {
        "model": "advsimplex-micro-vit", "dataset": f"npz:{data}", "batch_size": 8, "steps": 2,
        "attack_steps": 3, "lr": 1e-3, "out_dir": str(out), "ckpt_every": 0, "log_every": 1,
        "progress": False, "tensorboard": False, "eval_samples": 0, "samples": 2,
    }  # fmt: skip
    values.update(overrides)
    return TrainConfig.from_dict(values).validate()


def model_weights(out: Path) -> dict:
    return load_file(str(out / "model.safetensors"))


def test_cifar_slice_holds_real_images(tmp_path):
    path = write_cifar_slice(tmp_path / "s.npz", "test", 5, offset=10)
    with np.load(path) as d:
        assert d["images"].shape == (5, 32, 32, 3) and d["images"].dtype == np.uint8 and d["images"].std() > 20
        assert list(d["classes"])[:2] == ["airplane", "automobile"]


def rewrite_checkpoint(path: Path, *, tensors=None, state=None, checksum: bool = True) -> None:
    """Rewrite a training checkpoint in place: ``tensors(dict) -> dict`` and ``state(dict) -> dict`` edit its
    contents; ``checksum`` False keeps the old checksum (so the edit shows as corruption)."""
    import json

    from safetensors import safe_open
    from safetensors.torch import save_file

    from advsimplex._io import tensors_checksum

    with safe_open(str(path), framework="pt") as f:
        meta = dict(f.metadata())
        values = {k: f.get_tensor(k) for k in f.keys()}
    if tensors is not None:
        values = tensors(values)
    if state is not None:
        meta["state"] = json.dumps(state(json.loads(meta["state"])))
    if checksum:
        meta["checksum"] = tensors_checksum(values)
    save_file(values, str(path), metadata=meta)


def flip_tensor_byte(path: Path) -> None:
    """Corrupt one byte of a safetensors file's tensor data, leaving the header intact."""
    data = bytearray(path.read_bytes())
    header = 8 + int.from_bytes(data[:8], "little")
    data[header + (len(data) - header) // 2] ^= 0x5A
    path.write_bytes(bytes(data))
