"""Runs are never lost or silently altered: the run-directory policy, resume checks against the saved
settings, bad checkpoints (truncated, garbage, corrupted bytes, missing optimizer state, impossible step,
non-finite values), temporaries of interrupted writes, and non-finite losses/gradients/weights."""

from __future__ import annotations

import logging
import os
import re
import resource
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from test_train_support import (
    flip_tensor_byte,
    model_weights,
    rewrite_checkpoint,
    single_thread,
    tiny_config,
    write_cifar_slice,
)

from advsimplex.models import load_clip, save_clip
from advsimplex.train import CheckpointError, ConfigError, NonFiniteError, train
from advsimplex.train import checkpoint as ckpt
from advsimplex.train.methods import TeCoAObjective


@pytest.fixture(autouse=True)
def _one_thread():
    with single_thread():
        yield


@pytest.fixture(scope="module")
def npz(tmp_path_factory):
    return write_cifar_slice(tmp_path_factory.mktemp("data") / "c10.npz", "train", 24)


def _cfg(npz, out, **overrides):
    values = {"method": "tecoa", "steps": 4, "ckpt_every": 2, "keep_checkpoints": 3} | overrides
    return tiny_config(npz, out, **values)


def _same_weights(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


@pytest.fixture(scope="module")
def reference(npz, tmp_path_factory):
    """An uninterrupted 4-step run (the weights every resumed run must reproduce)."""
    out = tmp_path_factory.mktemp("reference")
    with single_thread():  # module fixtures run before the function-scoped one: same threads as the tests
        train(_cfg(npz, out))
    return model_weights(out)


def _interrupted(npz, out, stop=2, **overrides):
    """A run of 4 steps stopped after ``stop`` (a checkpoint is written there)."""
    result = train(_cfg(npz, out, stop_after_steps=stop, **overrides))
    assert not result.finished
    return ckpt.list_checkpoints(out / "checkpoints")


# ---------------------------------------------------------------------- the run directory


def test_non_empty_out_dir_is_refused_and_left_untouched(npz, tmp_path):
    _interrupted(npz, tmp_path, stop=2)
    before = {p.relative_to(tmp_path): p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    with pytest.raises(ConfigError, match=r"^out_dir: .* is not empty .*--resume auto.*--overwrite"):
        train(_cfg(npz, tmp_path, lr=5e-3))
    after = {p.relative_to(tmp_path): p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    assert after == before


def test_overwrite_deletes_only_a_run_and_only_once_the_new_one_loads(npz, tmp_path, reference):
    _interrupted(npz, tmp_path, stop=2)
    with pytest.raises(ConfigError, match=r"^model: unknown open_clip model"):  # a typo deletes nothing
        train(_cfg(npz, tmp_path, overwrite=True, model="advsimplex-micro-vitt"))
    assert len(ckpt.list_checkpoints(tmp_path / "checkpoints")) == 1
    result = train(_cfg(npz, tmp_path, overwrite=True))
    assert result.finished
    _same_weights(model_weights(tmp_path), reference)
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match=r"^out_dir: --overwrite deletes only a training run.*notes\.txt"):
        train(_cfg(npz, tmp_path, overwrite=True))
    assert (tmp_path / "notes.txt").is_file() and (tmp_path / "model.safetensors").is_file()
    with pytest.raises(ConfigError, match=r"^overwrite: cannot be combined with resume"):
        train(_cfg(npz, tmp_path, overwrite=True, resume="auto"))


def test_out_dir_that_is_a_file_or_unwritable(npz, tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(ConfigError, match=r"^out_dir: .*file is a file, not a folder"):
        train(_cfg(npz, tmp_path / "file"))
    with pytest.raises(ConfigError, match=r"^out_dir: cannot create .*a parent is a file"):
        train(_cfg(npz, tmp_path / "file" / "run"))
    if os.geteuid() == 0:  # root writes into read-only folders; /sys refuses everyone
        target, why = Path("/sys/advsimplex-test-run"), "Operation not permitted"
    else:
        (tmp_path / "locked").mkdir(mode=0o555)
        target, why = tmp_path / "locked" / "run", "Permission denied"
    with pytest.raises(ConfigError, match=rf"^out_dir: cannot write into {re.escape(str(target))}: {why}"):
        train(_cfg(npz, target))


def test_resume_auto_needs_a_run(npz, tmp_path):
    (tmp_path / "holiday.jpg").write_bytes(b"\xff\xd8")
    with pytest.raises(ConfigError, match=r"^out_dir: .* holds no training run to resume \(holiday.jpg\)"):
        train(_cfg(npz, tmp_path, resume="auto"))


def test_full_disk_during_a_checkpoint_is_one_line_and_keeps_the_last_checkpoint(npz, tmp_path):
    """A real write failure (RLIMIT_FSIZE: the OS refuses files beyond 60 kB) in the CLI: one line, exit 2,
    the previous checkpoint intact, no temporary left."""
    _interrupted(npz, tmp_path, stop=2)
    size = ckpt.list_checkpoints(tmp_path / "checkpoints")[-1].stat().st_size
    assert size > 60_000

    def limit():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (60_000, 60_000))

    argv = [sys.executable, "-m", "advsimplex.train", "--model", "advsimplex-micro-vit", "--dataset", f"npz:{npz}",
            "--method", "tecoa", "--batch-size", "8", "--steps", "4", "--attack-steps", "3", "--lr", "1e-3",
            "--ckpt-every", "2", "--keep-checkpoints", "3", "--log-every", "1", "--samples", "2",
            "--eval-samples", "0", "--no-progress", "--no-tensorboard", "--out-dir", str(tmp_path),
            "--resume", "auto", "--quiet"]  # fmt: skip
    run = subprocess.run(argv, capture_output=True, text=True, preexec_fn=limit, timeout=300,
                         env={**os.environ, "OMP_NUM_THREADS": "1"})  # fmt: skip
    assert run.returncode == 2, run.stderr
    assert run.stderr.count("\n") == 1 and "Traceback" not in run.stderr
    assert run.stderr.startswith("advsimplex-train: error: File too large") and str(tmp_path) in run.stderr
    files = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert files == ["step-00000002.safetensors"]  # intact, and no temporary of the failed write left
    ckpt.load_checkpoint(tmp_path / "checkpoints" / files[0])


# ---------------------------------------------------------------------- resume settings


@pytest.mark.parametrize(
    "change, shown",
    [
        ({"lr": 2e-3}, "lr 0.001 → 0.002"),
        ({"weight_decay": 0.1}, "weight_decay 0.0001 → 0.1"),
        ({"eps": 4 / 255}, "eps"),
        ({"attack_steps": 5}, "attack_steps 3 → 5"),
        ({"limit": 16}, "limit None → 16"),
        (
            {"model": "advsimplex-micro-vit-quickgelu"},
            "model 'advsimplex-micro-vit' → 'advsimplex-micro-vit-quickgelu'",
        ),
        ({"optimizer": "sgd"}, "optimizer 'adamw' → 'sgd'"),
        ({"seed": 1}, "seed 0 → 1"),
        ({"steps": 6}, "steps 4 → 6 (the cosine schedule"),
        ({"method": "trades"}, "method 'tecoa' → 'trades'"),
    ],
)
def test_resume_with_changed_settings_is_refused(npz, tmp_path, change, shown):
    _interrupted(npz, tmp_path, stop=2)
    with pytest.raises(ConfigError, match=r"^resume: this run's settings differ from those of checkpoint") as info:
        train(_cfg(npz, tmp_path, resume="auto", **change))
    assert shown in str(info.value)
    assert not (tmp_path / "model.safetensors").exists()
    assert "lr: 0.001" in (tmp_path / "config.yaml").read_text()  # config.yaml still records the run


def test_every_difference_is_listed(npz, tmp_path):
    _interrupted(npz, tmp_path, stop=2)
    with pytest.raises(ConfigError) as info:
        train(_cfg(npz, tmp_path, resume="auto", lr=2e-3, optimizer="sgd", attack_steps=4))
    assert all(k in str(info.value) for k in ("lr 0.001 → 0.002", "optimizer 'adamw' → 'sgd'", "attack_steps 3 → 4"))


def test_free_settings_may_change_and_the_result_is_exact(npz, tmp_path, reference, caplog):
    _interrupted(npz, tmp_path, stop=2)
    with caplog.at_level(logging.INFO, logger="advsimplex"):
        result = train(_cfg(npz, tmp_path, resume="auto", log_every=2, keep_checkpoints=1, device="cpu",
                            backend="reference", eval_samples=0))  # fmt: skip
    assert result.finished
    assert "changed settings that do not alter the training: backend 'auto' → 'reference'" in caplog.text
    assert "device 'auto' → 'cpu'" in caplog.text
    _same_weights(model_weights(tmp_path), reference)


def test_constant_schedule_may_extend_the_run_exactly(npz, tmp_path):
    whole = tmp_path / "whole"
    train(_cfg(npz, whole, steps=5, schedule="constant", warmup_steps=1))
    cut = tmp_path / "cut"
    train(_cfg(npz, cut, steps=3, schedule="constant", warmup_steps=1))
    result = train(_cfg(npz, cut, steps=5, schedule="constant", warmup_steps=1, resume="auto"))
    assert result.finished and result.step == 5
    _same_weights(model_weights(whole), model_weights(cut))
    with pytest.raises(ConfigError, match=r"steps 5 → 2 \(the checkpoint is at step 5, past the new total\)"):
        train(_cfg(npz, cut, steps=2, schedule="constant", warmup_steps=1, resume="auto"))


def test_config_yaml_guards_a_run_without_checkpoints(npz, tmp_path):
    train(_cfg(npz, tmp_path, steps=2, ckpt_every=0, stop_after_steps=1))
    for p in ckpt.list_checkpoints(tmp_path / "checkpoints"):
        p.unlink()  # as if killed before its first checkpoint
    with pytest.raises(ConfigError, match=r"settings differ from those of .*config\.yaml: lr 0\.001 → 0\.003"):
        train(_cfg(npz, tmp_path, steps=2, resume="auto", lr=3e-3))
    assert train(_cfg(npz, tmp_path, steps=2, resume="auto")).finished


def test_world_size_and_other_runs_checkpoints(npz, tmp_path):
    files = _interrupted(npz, tmp_path / "a", stop=2)
    rewrite_checkpoint(files[-1], state=lambda s: {**s, "world_size": 2})
    with pytest.raises(ConfigError, match="written by 2 process"):
        train(_cfg(npz, tmp_path / "b", resume=str(files[-1])))


# ---------------------------------------------------------------------- bad checkpoints


@pytest.mark.parametrize("damage", ["truncate", "garbage", "flip", "nan", "no-optimizer", "huge-step", "empty"])
def test_resume_auto_skips_a_bad_newest_checkpoint(npz, tmp_path, reference, caplog, damage):
    files = _interrupted(npz, tmp_path, stop=3, ckpt_every=1)
    newest = files[-1]
    if damage == "truncate":
        newest.write_bytes(newest.read_bytes()[: newest.stat().st_size // 2])
    elif damage == "garbage":
        newest.write_bytes(os.urandom(4096))
    elif damage == "empty":
        newest.write_bytes(b"")
    elif damage == "flip":
        flip_tensor_byte(newest)
    elif damage == "nan":
        rewrite_checkpoint(newest, tensors=lambda t: {**t, "model.visual.proj": t["model.visual.proj"] * float("nan")})
    elif damage == "no-optimizer":
        rewrite_checkpoint(newest, tensors=lambda t: {k: v for k, v in t.items() if not k.startswith("optim.")})
    else:
        rewrite_checkpoint(newest, state=lambda s: {**s, "step": 10**6})
    with caplog.at_level(logging.WARNING, logger="advsimplex"):
        result = train(_cfg(npz, tmp_path, resume="auto", ckpt_every=1))
    assert result.finished
    assert newest.name in caplog.text and "skipped it (renamed to" in caplog.text
    assert (newest.parent / (newest.name + ".corrupt")).is_file()  # kept for inspection, out of the way
    _same_weights(model_weights(tmp_path), reference)


@pytest.mark.parametrize(
    "damage, message",
    [
        ("flip", "is corrupted: its tensors do not match the stored checksum"),
        ("no-optimizer", "lacks optimizer tensors optim.0.exp_avg"),
        ("no-optimizer-listed", "holds no optimizer state"),
        ("huge-step", "records step 1000000 beyond its run's 4 steps"),
        ("nan", "holds non-finite values in model.visual.proj (128 of 128 values)"),
        ("inf-optimizer", "non-finite values in optim.0.exp_avg_sq"),
        ("no-rng", "lacks the RNG states torch"),
        ("scheduler", "step 2 but the scheduler is at step 7"),
        ("micro-batch", "impossible position (step 2, micro-batch 5)"),
        ("garbage", "is truncated, corrupted or not a safetensors file"),
        ("truncate", "is truncated, corrupted or not a safetensors file"),
    ],
)
def test_a_named_bad_checkpoint_is_refused(npz, tmp_path, damage, message):
    path = _interrupted(npz, tmp_path / "a", stop=2)[-1]
    edits = {
        "no-optimizer": {"tensors": lambda t: {k: v for k, v in t.items() if not k.startswith("optim.")}},
        "no-optimizer-listed": {
            "tensors": lambda t: {k: v for k, v in t.items() if not k.startswith("optim.")},
            "state": lambda s: {**s, "optimizer_tensors": [], "optimizer": {**s["optimizer"], "state": {}}},
        },
        "huge-step": {"state": lambda s: {**s, "step": 10**6, "micro_batch": 10**6}},
        "nan": {"tensors": lambda t: {**t, "model.visual.proj": torch.full_like(t["model.visual.proj"], float("nan"))}},
        "inf-optimizer": {"tensors": lambda t: {**t, "optim.0.exp_avg_sq": t["optim.0.exp_avg_sq"] + float("inf")}},
        "no-rng": {"tensors": lambda t: {k: v for k, v in t.items() if k != "rng.torch"}},
        "scheduler": {"state": lambda s: {**s, "scheduler": {**s["scheduler"], "last_epoch": 7}}},
        "micro-batch": {"state": lambda s: {**s, "micro_batch": 5}},
    }
    if damage == "flip":
        flip_tensor_byte(path)
    elif damage == "garbage":
        path.write_bytes(b"not a checkpoint at all" * 10)
    elif damage == "truncate":
        path.write_bytes(path.read_bytes()[:-1000])
    else:
        rewrite_checkpoint(path, **edits[damage])
    with pytest.raises(CheckpointError) as info:
        train(_cfg(npz, tmp_path / "b", resume=str(path)))
    assert str(info.value).startswith("resume: ") and message in str(info.value) and str(path) in str(info.value)
    assert not (tmp_path / "b" / "model.safetensors").exists()


def test_no_loadable_checkpoint_stops(npz, tmp_path):
    for p in _interrupted(npz, tmp_path, stop=2):
        p.write_bytes(b"")
    with pytest.raises(CheckpointError, match=r"^resume: no loadable checkpoint in .*step-00000002"):
        train(_cfg(npz, tmp_path, resume="auto"))


def test_temporaries_of_interrupted_writes_are_removed(npz, tmp_path, reference):
    files = _interrupted(npz, tmp_path, stop=2)
    stale = [files[0].parent / ".step-00000004.safetensors.abcd1234.tmp", tmp_path / ".model.safetensors.x1y2z3_q.tmp"]
    for p in stale:
        p.write_bytes(b"half a checkpoint")
    result = train(_cfg(npz, tmp_path, resume="auto"))
    assert result.finished and not any(p.exists() for p in stale)
    assert not [p for p in tmp_path.rglob("*.tmp")]
    _same_weights(model_weights(tmp_path), reference)


# ---------------------------------------------------------------------- non-finite values


def _poison(monkeypatch, at_step: int, what: str = "loss"):
    """Make TeCoA's loss (or its gradient) NaN at optimizer step ``at_step`` (1-based)."""
    forward = TeCoAObjective.forward
    calls = {"n": 0}

    def poisoned(self, images, labels, generator):
        calls["n"] += 1
        loss, metrics = forward(self, images, labels, generator)
        if calls["n"] == at_step:
            if what == "loss":
                loss = loss * float("nan")
            else:  # a finite loss with a NaN gradient: d√z/dz = ∞ at z = 0, times dz/dp = 0
                p = next(q for q in self.parameters() if q.requires_grad)
                loss = loss + torch.sqrt(p.sum() * 0)
        return loss, metrics

    monkeypatch.setattr(TeCoAObjective, "forward", poisoned)


@pytest.mark.parametrize("what, shown", [("loss", "the loss is nan"), ("gradient", "the gradient norm is nan")])
def test_nonfinite_step_stops_with_the_step_named(npz, tmp_path, monkeypatch, what, shown):
    _poison(monkeypatch, at_step=3, what=what)
    with pytest.raises(NonFiniteError, match=rf"^nonfinite: at step 3 {shown}.*; training stopped before the update"):
        train(_cfg(npz, tmp_path, ckpt_every=1))
    files = ckpt.list_checkpoints(tmp_path / "checkpoints")
    assert [p.name for p in files] == ["step-00000001.safetensors", "step-00000002.safetensors"]
    for p in files:
        assert all(torch.isfinite(v).all() for k, v in load_file(str(p)).items() if not k.startswith("rng."))
    assert not (tmp_path / "model.safetensors").exists()


def test_nonfinite_skip_drops_the_update(npz, tmp_path, monkeypatch, caplog):
    _poison(monkeypatch, at_step=2)
    with caplog.at_level(logging.WARNING, logger="advsimplex"):
        result = train(_cfg(npz, tmp_path, nonfinite="skip"))
    assert result.finished and result.skipped_steps == [2]
    assert "nonfinite: at step 2 the loss is nan" in caplog.text and "update skipped (nonfinite: skip)" in caplog.text
    weights = model_weights(tmp_path)
    assert all(torch.isfinite(v).all() for v in weights.values())
    state = ckpt.load_checkpoint(ckpt.list_checkpoints(tmp_path / "checkpoints")[-1])
    assert state.skipped_steps == [2] and state.step == 4


def test_weights_that_overflow_are_never_written(npz, tmp_path):
    with pytest.raises(NonFiniteError, match=r"nonfinite: (after step 1 the weights are not finite|at step 2)"):
        train(_cfg(npz, tmp_path, optimizer="sgd", lr=1e38, momentum=0.0, ckpt_every=1))
    assert not (tmp_path / "model.safetensors").exists()
    for p in ckpt.list_checkpoints(tmp_path / "checkpoints"):
        assert all(torch.isfinite(v).all() for k, v in load_file(str(p)).items() if not k.startswith("rng."))


def test_nonfinite_models_are_refused_when_loaded_and_never_saved(tmp_path):
    model, _, name = load_clip("advsimplex-micro-vit")
    with torch.no_grad():
        model.visual.proj[0, 0] = float("inf")
    with pytest.raises(ValueError, match=r"refusing to save a model with non-finite weights .*visual\.proj \(1 of"):
        save_clip(tmp_path / "m.safetensors", model, name)
    assert not list(tmp_path.iterdir())
    torch.save(model.state_dict(), tmp_path / "w.pt")
    with pytest.raises(ValueError, match=r"holds non-finite weights: visual\.proj \(1 of 128 values\)"):
        load_clip(name, str(tmp_path / "w.pt"))
