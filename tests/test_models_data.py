"""Model loading/export (safetensors), the zero-shot wrapper and the dataset sources."""

import os

import numpy as np
import pytest
import torch

from advsimplex.data import NpzImageDataset, default_data_root, load_dataset
from advsimplex.models import load_clip, save_clip
from advsimplex.vpt import PromptedVisionTransformer, add_visual_prompts
from advsimplex.zeroshot import ZeroShotModel, class_text_features


def test_save_and_load_roundtrip(tmp_path):
    model, _tokenizer, name = load_clip("advsimplex-micro-vit")
    path = tmp_path / "ckpt.safetensors"
    save_clip(path, model, name, note="test")
    loaded, _, loaded_name = load_clip(str(path))
    assert loaded_name == name
    for (k, a), (_, b) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert torch.equal(a, b), k
    assert not list(tmp_path.glob("*.tmp"))  # atomic write leaves no temporary file
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask  # not mkstemp's owner-only 0600


def test_vpt_model_roundtrip(tmp_path):
    model, _tokenizer, name = load_clip("advsimplex-micro-vit")
    add_visual_prompts(model, 3, init_std=0.5)
    path = tmp_path / "vpt.safetensors"
    save_clip(path, model, name)
    loaded, _, _ = load_clip(str(path))
    assert isinstance(loaded.visual, PromptedVisionTransformer) and loaded.visual.num_prompts == 3
    torch.testing.assert_close(loaded.visual.prompts, model.visual.prompts, rtol=0, atol=0)
    x = torch.rand(2, 3, 8, 8)
    torch.testing.assert_close(loaded.encode_image(x), model.encode_image(x), rtol=0, atol=0)


def test_open_clip_pretrained_file(tmp_path):
    model, _, name = load_clip("advsimplex-micro-vit")
    path = tmp_path / "weights.pt"
    torch.save(model.state_dict(), path)
    loaded, _, _ = load_clip(name, str(path))
    assert torch.equal(loaded.visual.proj, model.visual.proj)


@pytest.mark.parametrize(
    ("args", "error", "match"),
    [
        (("ViT-B-33",), ValueError, "unknown open_clip model"),
        (("/nowhere/ckpt.safetensors",), FileNotFoundError, "does not exist"),
        (("advsimplex-micro-vit", "/nowhere/w.pt"), FileNotFoundError, "does not exist"),
        (("local-dir:/nowhere",), FileNotFoundError, "open_clip_config.json"),
    ],
)
def test_bad_model_sources(args, error, match):
    with pytest.raises(error, match=match):
        load_clip(*args)


def test_foreign_safetensors_rejected(tmp_path):
    from safetensors.torch import save_file

    path = tmp_path / "other.safetensors"
    save_file({"w": torch.zeros(2)}, str(path))
    with pytest.raises(ValueError, match="not an advsimplex CLIP checkpoint"):
        load_clip(str(path))


def test_zero_shot_classifier_normalises_pixels_inside():
    model, tokenizer, _ = load_clip("advsimplex-micro-vit")
    text = class_text_features(model, tokenizer, ["cat", "dog", "ship"])
    assert text.shape == (3, 8)
    torch.testing.assert_close(text.norm(dim=-1), torch.ones(3))
    zs = ZeroShotModel.from_clip(model, text)
    x = torch.rand(2, 3, 8, 8)
    mean = torch.tensor([0.48145466, 0.4578275, 0.40821073]).view(1, 3, 1, 1)
    std = torch.tensor([0.26862954, 0.26130258, 0.27577711]).view(1, 3, 1, 1)
    torch.testing.assert_close(zs.embed(x), model.encode_image((x - mean) / std))
    assert zs(x).shape == (2, 3)
    with pytest.raises(ValueError, match="templates"):
        class_text_features(model, tokenizer, ["cat"], templates=["no placeholder"])


def test_cifar10_from_shared_data():
    assert (default_data_root() / "cifar10" / "test.npz").is_file()
    ds = load_dataset("cifar10", "test", image_size=16, limit=7)
    x, y = ds[3]
    assert len(ds) == 7 and x.shape == (3, 16, 16) and x.dtype == torch.float32
    assert 0 <= x.min() and x.max() <= 1 and 0 <= y < 10
    assert ds.classes[0] == "airplane" and len(ds.classes) == 10


def test_npz_and_imagefolder_sources(tmp_path):
    from PIL import Image

    images = (np.arange(2 * 4 * 4 * 3) % 255).astype(np.uint8).reshape(2, 4, 4, 3)
    np.savez(tmp_path / "d.npz", images=images, labels=np.array([1, 0]), classes=np.array(["a", "b"]))
    ds = load_dataset(f"npz:{tmp_path / 'd.npz'}")
    assert torch.equal(ds[0][0], torch.from_numpy(images[0]).permute(2, 0, 1).float() / 255) and ds[0][1] == 1
    for cls in ("cat", "dog"):
        (tmp_path / "tree" / "test" / cls).mkdir(parents=True)
        Image.fromarray(images[0]).save(tmp_path / "tree" / "test" / cls / "0.png")
    tree = load_dataset(f"imagefolder:{tmp_path / 'tree'}", image_size=8)
    assert tree.classes == ["cat", "dog"] and tree[1][0].shape == (3, 8, 8) and tree[1][1] == 1


@pytest.mark.parametrize(
    ("source", "error", "match"),
    [
        ("mnist", ValueError, "unknown dataset source"),
        ("npz:/nowhere.npz", FileNotFoundError, "does not exist"),
        ("imagefolder:/nowhere", FileNotFoundError, "does not exist"),
        ("torchvision:NoSuchSet", ValueError, "no dataset"),
    ],
)
def test_bad_dataset_sources(source, error, match):
    with pytest.raises(error, match=match):
        load_dataset(source)


def test_npz_validation(tmp_path):
    np.savez(tmp_path / "bad.npz", images=np.zeros((2, 4, 4), np.uint8), labels=np.zeros(2), classes=np.array(["a"]))
    with pytest.raises(ValueError, match=r"uint8 \(N, H, W, 3\)"):
        NpzImageDataset(tmp_path / "bad.npz")
