"""DistributedDataParallel under torchrun on CPU (gloo, 2 processes) against one process, same global batch."""

from __future__ import annotations

import csv
import os
import subprocess
import sys

import pytest
import torch
import yaml
from test_train_support import model_weights, single_thread, tiny_config, write_cifar_slice

from advsimplex.models import load_clip
from advsimplex.train import checkpoint as ckpt
from advsimplex.train import train


@pytest.fixture(autouse=True)
def _one_thread():
    with single_thread():
        yield


@pytest.mark.parametrize(
    "method, accum",
    [("advsimplex", 1), ("clip", 1), ("tecoa", 2)],  # tecoa's loss is per image: micro-batches change nothing
)
def test_two_processes_match_one(tmp_path, method, accum):
    npz = write_cifar_slice(tmp_path / "c10.npz", "train", 32)
    # init_std = 0: the PGD start is deterministic, so the split batch sees the attack of the whole one.
    # SGD, not AdamW: Adam turns float noise in analytically zero gradients (key biases) into lr-size steps.
    # One caption template: the template draws of 2 processes differ from those of 1 (per-rank generators).
    common = {"method": method, "steps": 3, "init_std": 0.0, "optimizer": "sgd", "lr": 0.5, "ckpt_every": 3,
              "caption_templates": ["a photo of a {}."]}  # fmt: skip
    single = tiny_config(npz, tmp_path / "one", batch_size=8, **common)
    train(single)
    two = tiny_config(npz, tmp_path / "two", batch_size=4 // accum, grad_accum=accum, **common)
    config = tmp_path / "two.yaml"
    config.write_text(yaml.safe_dump(two.to_dict()))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    run = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         "-m", "advsimplex.train", "--config", str(config), "--quiet"],
        capture_output=True, text=True, env=env, timeout=300,
    )  # fmt: skip
    assert run.returncode == 0, run.stdout + run.stderr
    a, b = model_weights(tmp_path / "one"), model_weights(tmp_path / "two")
    torch.manual_seed(single.seed)
    start = load_clip(single.model)[0].state_dict()
    assert any(not torch.allclose(a[k], start[k], atol=1e-4) for k in a)  # training moved the weights
    for k in a:
        torch.testing.assert_close(b[k], a[k], rtol=1e-4, atol=2e-6, msg=lambda m, k=k: f"{k}: {m}")
    with open(tmp_path / "one" / "metrics.csv") as f1, open(tmp_path / "two" / "metrics.csv") as f2:
        loss1, loss2 = ([float(r["loss"]) for r in csv.DictReader(f)] for f in (f1, f2))
    assert loss2 == pytest.approx(loss1, rel=1e-4)  # the logged loss is the mean over processes
    state = ckpt.load_checkpoint(ckpt.list_checkpoints(tmp_path / "two" / "checkpoints")[-1])
    assert state.world_size == 2 and state.rng["torch"].shape[0] == 2
