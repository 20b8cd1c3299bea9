"""Training runs on the micro ViT (8×8 pixels) and real CIFAR-10 images: every method, loss decrease,
exact resume, pickle-free checkpoints, the CLI end to end."""

from __future__ import annotations

import csv
import pickle

import pytest
import torch
from safetensors import safe_open
from test_train_support import model_weights, single_thread, tiny_config, write_cifar_slice

from advsimplex.models import load_clip
from advsimplex.train import checkpoint as ckpt
from advsimplex.train import train
from advsimplex.train.cli import main


@pytest.fixture(autouse=True)
def _one_thread():
    with single_thread():
        yield


@pytest.fixture(scope="module")
def npz(tmp_path_factory):
    return write_cifar_slice(tmp_path_factory.mktemp("data") / "c10.npz", "train", 40)


def _start_weights(cfg):
    model, _, _ = load_clip(cfg.model)
    return {k: v.clone() for k, v in model.state_dict().items()}


def _changed(before: dict, after: dict) -> set[str]:
    return {k for k, v in after.items() if k in before and not torch.equal(v, before[k])}


@pytest.mark.parametrize(
    "method, extra",
    [
        ("advsimplex", {}),
        ("advsimplex", {"variant": "taylor2", "weighting": "linear", "hflip": True}),
        ("advsimplex", {"variant": "paper-cross", "order": 4, "weighting": "uniform", "kappa": 2.0}),
        ("sampled", {}),
        ("tecoa", {"optimizer": "sgd", "grad_clip": 1.0}),
        ("trades", {}),
        ("trades", {"trades_divergence": "l2"}),
        ("pmg", {}),
        ("fare", {"fare_clean_weight": 0.3}),
        ("clip", {"hflip": True}),
        ("advsimplex", {"tuning": "vpt", "vpt_prompts": 3, "lr": 1e-2}),
        ("tecoa", {"tuning": "vpt", "vpt_prompts": 2, "lr": 1e-2}),
    ],
)
def test_every_method_runs_a_step(tmp_path, npz, method, extra):
    cfg = tiny_config(npz, tmp_path, method=method, steps=1, **extra)
    torch.manual_seed(cfg.seed)
    before = _start_weights(cfg)
    result = train(cfg)
    assert result.finished and result.step == 1
    assert torch.isfinite(torch.tensor(result.metrics["loss"]))
    after = model_weights(tmp_path)
    changed = _changed(before, after)
    if cfg.tuning == "vpt":
        assert "visual.prompts" in after and not changed  # only the prompts train
        model, _, _ = load_clip(str(tmp_path / "model.safetensors"))
        assert model.visual.num_prompts == cfg.vpt_prompts
        assert torch.equal(model.visual.prompts.detach(), after["visual.prompts"])
    elif method == "clip":
        assert any(k.startswith("visual.") for k in changed) and any(k.startswith("transformer.") for k in changed)
        assert "logit_scale" in changed
    else:
        assert changed and all(k.startswith("visual.") for k in changed)  # the text tower stays frozen
        assert load_clip(str(tmp_path / "model.safetensors"))[2] == "advsimplex-micro-vit"


def test_short_run_decreases_the_loss(tmp_path, npz):
    cfg = tiny_config(npz, tmp_path, method="advsimplex", steps=30, lr=3e-3, warmup_steps=3, batch_size=8,
                      limit=16, eval_samples=16)  # fmt: skip
    result = train(cfg)
    with open(tmp_path / "metrics.csv") as f:
        losses = [float(r["loss"]) for r in csv.DictReader(f)]
    assert len(losses) == 30
    first, last = sum(losses[:5]) / 5, sum(losses[-5:]) / 5
    assert last < 0.8 * first, losses
    assert result.evaluations[-1]["samples"] == 16 and 0 <= result.evaluations[-1]["pgd"] <= 1


def _no_unpickling(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("checkpoint loading must not unpickle")

    monkeypatch.setattr(torch, "load", refuse)
    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(pickle, "loads", refuse)
    monkeypatch.setattr(pickle, "Unpickler", refuse)


@pytest.mark.parametrize(
    "extra",
    [
        {"method": "advsimplex", "grad_accum": 2, "hflip": True, "warmup_steps": 2},
        {"method": "clip", "optimizer": "sgd", "hflip": True},
    ],
)
def test_resume_reproduces_the_uninterrupted_run(tmp_path, npz, monkeypatch, extra):
    # 40 images, batch 8: 5 micro-batches per epoch, so 7 steps cross epochs and the cut falls mid-epoch
    whole = tiny_config(npz, tmp_path / "whole", steps=7, ckpt_every=3, **extra)
    train(whole)
    cut = tiny_config(npz, tmp_path / "cut", steps=7, ckpt_every=3, stop_after_steps=4, **extra)
    first = train(cut)
    assert not first.finished and first.step == 4
    assert not (tmp_path / "cut" / "model.safetensors").exists()
    assert [p.name for p in ckpt.list_checkpoints(tmp_path / "cut" / "checkpoints")] == [
        "step-00000003.safetensors", "step-00000004.safetensors"
    ]  # fmt: skip
    _no_unpickling(monkeypatch)
    torch.manual_seed(1234)  # the global RNG is restored from the checkpoint, whatever it was
    resumed = train(tiny_config(npz, tmp_path / "cut", steps=7, ckpt_every=3, resume="auto", **extra))
    assert resumed.finished and resumed.step == 7
    a, b = model_weights(tmp_path / "whole"), model_weights(tmp_path / "cut")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    with open(tmp_path / "whole" / "metrics.csv") as f1, open(tmp_path / "cut" / "metrics.csv") as f2:
        rows1, rows2 = list(csv.DictReader(f1)), list(csv.DictReader(f2))
    assert [r["step"] for r in rows2] == [str(s) for s in range(1, 8)]
    assert [r["loss"] for r in rows1] == [r["loss"] for r in rows2]


def test_checkpoints_are_safetensors_written_atomically(tmp_path, npz, monkeypatch):
    train(tiny_config(npz, tmp_path, steps=2, ckpt_every=1, keep_checkpoints=1, method="tecoa"))
    files = ckpt.list_checkpoints(tmp_path / "checkpoints")
    assert [p.name for p in files] == ["step-00000002.safetensors"]  # pruned to keep_checkpoints
    with safe_open(str(files[0]), framework="pt") as f:
        assert f.metadata()["format"] == ckpt.CHECKPOINT_FORMAT
        keys = set(f.keys())
    assert {"rng.torch", "rng.python", "rng.numpy"} <= keys
    assert any(k.startswith("optim.") and k.endswith(".exp_avg") for k in keys)
    _no_unpickling(monkeypatch)
    state = ckpt.load_checkpoint(files[0])
    assert state.step == 2 and state.world_size == 1 and state.rng["torch"].shape[0] == 1
    assert state.optimizer["param_groups"][0]["lr"] >= 0 and state.scheduler["last_epoch"] == 2

    before = files[0].read_bytes()

    def crash(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr("safetensors.torch.save_file", crash)
    model = torch.nn.Linear(2, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(OSError, match="disk full"):
        ckpt.save_checkpoint(files[0], model=model, optimizer=opt, scheduler=torch.optim.lr_scheduler.LambdaLR(
            opt, lambda s: 1.0), step=9, micro_batch=9, world_size=1, rng={}, config={})  # fmt: skip
    assert files[0].read_bytes() == before  # the previous checkpoint is intact
    assert sorted(p.name for p in files[0].parent.iterdir()) == [files[0].name]  # no temporary left
    with pytest.raises(ValueError, match="not an advsimplex training checkpoint"):
        ckpt.load_checkpoint(tmp_path / "model.safetensors")


def test_cli_end_to_end_with_yaml_and_flags(tmp_path, npz, capsys):
    config = tmp_path / "run.yaml"
    config.write_text(
        f"model: advsimplex-micro-vit\ndataset: npz:{npz}\nmethod: advsimplex\nattack_steps: 3\neps: 4/255\n"
        "batch_size: 8\nsteps: 2\nlr: 1.0e-3\neval_samples: 8\nlog_every: 1\n"
    )
    out = tmp_path / "out"
    code = main(["--config", str(config), "--method", "tecoa", "--eps", "2/255", "--out-dir", str(out),
                 "--no-progress", "--quiet"])  # fmt: skip
    assert code == 0
    printed = capsys.readouterr().out
    assert "trained model:" in printed and "PGD-10" in printed
    saved = (out / "config.yaml").read_text()
    assert "method: tecoa" in saved and "attack_steps: 3" in saved
    assert f"eps: {2 / 255}" in saved and "batch_size: 8" in saved
    assert (out / "model.safetensors").is_file() and (out / "summary.json").is_file()
    assert list((out / "tensorboard").glob("events.out.tfevents.*"))
    with open(out / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["step"] for r in rows] == ["1", "2"] and {"loss", "lr", "ce_adv", "images_per_s"} <= set(rows[0])
    with open(out / "eval.csv") as f:
        assert [r["step"] for r in csv.DictReader(f)] == ["2"]


def test_imagefolder_tree_with_class_names_from_folders(tmp_path, npz):
    import numpy as np
    from PIL import Image

    with np.load(npz) as d:
        images, labels, classes = d["images"], d["labels"], list(d["classes"])
    for i, (image, label) in enumerate(zip(images[:16], labels[:16])):
        folder = tmp_path / "tree" / "train" / classes[label]
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(folder / f"{i}.png")
    result = train(tiny_config(tmp_path / "unused.npz", tmp_path / "out", dataset=f"imagefolder:{tmp_path / 'tree'}",
                               method="tecoa", steps=1))  # fmt: skip
    assert result.finished
    assert result.classes == sorted({classes[y] for y in labels[:16]})  # the prompts use the folder names
