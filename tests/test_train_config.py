"""Training configuration: YAML presets, flag overrides, and clear errors for bad configs."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest
import torch
from test_train_support import single_thread, tiny_config, write_cifar_slice

from advsimplex.runtime import parse_number
from advsimplex.train import ConfigError, TrainConfig, list_presets, load_config, train
from advsimplex.train.cli import main
from advsimplex.train.data import EpochShardSampler
from advsimplex.train.optim import WarmupCosine
from advsimplex.train.presets import read_yaml


@pytest.fixture(autouse=True)
def _one_thread():
    with single_thread():
        yield


def test_defaults_are_the_paper_settings():
    cfg = TrainConfig().validate()
    assert (cfg.method, cfg.attack_steps, cfg.eps, cfg.alpha, cfg.lam, cfg.kappa) == (
        "advsimplex",
        10,
        2 / 255,
        1 / 255,
        0.6,
        1.0,
    )
    assert (cfg.variant, cfg.order, cfg.weighting, cfg.templates) == ("paper", 3, "impact", ["This is a photo of a {}"])


def test_numbers_accept_fractions():
    assert parse_number("2/255") == 2 / 255
    assert parse_number("0.5/255") == 0.5 / 255
    assert parse_number("1e-3") == 1e-3
    cfg = TrainConfig.from_dict({"eps": "4/255", "alpha": "1/255", "lr": "3e-4", "steps": "7", "hflip": "yes"})
    assert (cfg.eps, cfg.alpha, cfg.lr, cfg.steps, cfg.hflip) == (4 / 255, 1 / 255, 3e-4, 7, True)


def test_presets_load_and_chain(tmp_path):
    assert {"demo-pretrain", "demo-advsimplex", "demo-tecoa"} <= set(list_presets())
    for name in list_presets():
        load_config(name)  # every shipped preset is valid
    tecoa = read_yaml("demo-tecoa")
    assert tecoa["method"] == "tecoa"
    adv = load_config("demo-advsimplex")
    same_budget = ("steps", "batch_size", "attack_steps", "eps", "alpha", "lr", "optimizer", "seed")
    assert all(getattr(load_config("demo-tecoa"), k) == getattr(adv, k) for k in same_budget)
    base = tmp_path / "base.yaml"
    base.write_text("method: tecoa\nlr: 0.001\neps: 1/255\n")
    child = tmp_path / "child.yaml"
    child.write_text("base: base.yaml\nlr: 0.002\n")
    cfg = load_config(str(child), {"steps": 3})
    assert (cfg.method, cfg.lr, cfg.eps, cfg.steps) == ("tecoa", 0.002, 1 / 255, 3)
    loop = tmp_path / "loop.yaml"
    loop.write_text(f"base: {loop}\n")
    with pytest.raises(ConfigError, match="loops back"):
        read_yaml(str(loop))


@pytest.mark.parametrize(
    "values, message",
    [
        ({"method": "madry"}, r"^method: must be one of advsimplex, tecoa"),
        ({"eps": 2.0}, r"^eps: must lie in \(0, 1\]"),
        ({"eps": 0.0}, r"^eps: must lie in \(0, 1\]"),
        ({"eps": -1 / 255}, r"^eps: "),
        ({"alpha": 0}, r"^alpha: "),
        ({"batch_size": 0}, r"^batch_size: must be a positive int"),
        ({"grad_accum": 0}, r"^grad_accum: must be a positive int"),
        ({"attack_steps": 1, "order": 3}, r"^attack_steps: must be >= order - 1"),
        ({"order": 5}, r"^order: must be one of 3, 4"),
        ({"variant": "sampled"}, r"^variant: must be one of paper, paper-cross, taylor2"),
        ({"weighting": "max"}, r"^weighting: "),
        ({"optimizer": "lion"}, r"^optimizer: must be one of adamw, sgd"),
        ({"lr": 0}, r"^lr: "),
        ({"tuning": "lora"}, r"^tuning: must be one of full, vpt"),
        ({"tuning": "vpt", "vpt_prompts": 0}, r"^vpt_prompts: "),
        ({"tuning": "vpt", "method": "clip"}, r"^tuning: vpt cannot be combined with method clip"),
        ({"templates": ["no placeholder"]}, r"^templates: "),
        ({"precision": "fp8"}, r"^precision: "),
        ({"method": "trades", "trades_divergence": "js"}, r"^trades_divergence: "),
        ({"method": "fare", "fare_clean_weight": 2}, r"^fare_clean_weight: "),
        ({"eval_eps": 3}, r"^eval_eps: "),
    ],
)
def test_bad_values_name_the_key(values, message):
    with pytest.raises(ConfigError, match=message):
        TrainConfig.from_dict(values).validate()


def test_bad_keys_and_types():
    with pytest.raises(ConfigError, match=r"^weight_decy: unknown config key.*did you mean weight_decay"):
        TrainConfig.from_dict({"weight_decy": 1e-3})
    with pytest.raises(ConfigError, match=r"^eps: expected a number"):
        TrainConfig.from_dict({"eps": "two"})
    with pytest.raises(ConfigError, match=r"^steps: expected an int"):
        TrainConfig.from_dict({"steps": 1.5})
    with pytest.raises(ConfigError, match=r"config: 'nope' is neither a YAML file nor a preset"):
        load_config("nope")


@pytest.fixture(scope="module")
def npz(tmp_path_factory):
    return write_cifar_slice(tmp_path_factory.mktemp("data") / "c10.npz", "train", 16)


def test_unknown_model_and_missing_data(tmp_path, npz):
    with pytest.raises(ConfigError, match=r"^model: unknown open_clip model 'ViT-Q-99'"):
        train(tiny_config(npz, tmp_path, model="ViT-Q-99"))
    with pytest.raises(FileNotFoundError, match=r"^model: .*does not exist"):
        train(tiny_config(npz, tmp_path, model=str(tmp_path / "missing.safetensors")))
    with pytest.raises(FileNotFoundError, match=r"^dataset: dataset file .*nowhere.npz does not exist"):
        train(tiny_config(tmp_path / "nowhere.npz", tmp_path))
    with pytest.raises(ConfigError, match=r"^dataset: unknown dataset source"):
        train(tiny_config(npz, tmp_path, dataset="cifar11"))
    with pytest.raises(ConfigError, match=r"^batch_size: 32 × 1 process\(es\) is larger than the dataset"):
        train(tiny_config(npz, tmp_path, batch_size=32))
    with pytest.raises(FileNotFoundError, match=r"^resume: checkpoint"):
        train(tiny_config(npz, tmp_path, resume=str(tmp_path / "none.safetensors")))


def test_cli_reports_bad_configs(capsys, tmp_path, npz):
    with pytest.raises(SystemExit) as exc:
        main(["--method", "tecoa", "--eps", "300/255"])
    assert exc.value.code == 2
    assert "eps: must lie in (0, 1]" in capsys.readouterr().err
    code = main(["--model", "advsimplex-micro-vit", "--dataset", f"npz:{tmp_path}/absent.npz", "--steps", "1",
                 "--out-dir", str(tmp_path / "o"), "--no-progress", "--quiet"])  # fmt: skip
    assert code == 2
    assert "dataset: dataset file" in capsys.readouterr().err


def test_cli_help_and_print_config(capsys):
    out = subprocess.run([sys.executable, "-m", "advsimplex.train", "--help"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "--method" in out.stdout and "--attack-steps" in out.stdout and "demo-advsimplex" in out.stdout
    assert main(["--config", "demo-tecoa", "--lr", "5e-4", "--print-config"]) == 0
    text = capsys.readouterr().out
    assert "method: tecoa" in text and "lr: 0.0005" in text


def test_sampler_shards_are_the_single_process_batches():
    single = EpochShardSampler(40, 8, seed=3)
    ranks = [EpochShardSampler(40, 4, seed=3, rank=r, world_size=2) for r in range(2)]
    for epoch in range(2):
        single.set_position(epoch, 0)
        for s in ranks:
            s.set_position(epoch, 0)
        full, parts = list(single), [list(s) for s in ranks]
        for b in range(single.batches_per_epoch):
            union = sorted(parts[0][4 * b : 4 * b + 4] + parts[1][4 * b : 4 * b + 4])
            assert union == sorted(full[8 * b : 8 * b + 8])
    single.set_position(1, 2)
    assert list(single) == single.epoch_indices()[16:]


def test_warmup_cosine():
    rule = WarmupCosine(warmup=4, total=14, min_ratio=0.1)
    assert [rule(s) for s in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert rule(9) == pytest.approx(0.1 + 0.9 * 0.5)
    assert rule(14) == pytest.approx(0.1) and rule(100) == pytest.approx(0.1)
    assert WarmupCosine(0, 10, cosine=False)(7) == 1.0
    torch.testing.assert_close(torch.tensor(rule(0)), torch.tensor(0.25))


def test_help_states_each_default_once():
    from advsimplex.train.cli import build_parser

    text = build_parser().format_help()
    entries = re.split(r"\n  (?=--)", text)
    assert len(entries) > 60
    for entry in entries:
        assert entry.count("default") <= 1, entry
    flat = " ".join(text.split())
    shown = ("--lr FLOAT peak learning rate (default: 1e-05)", "optimizer steps (default: epochs × steps per epoch)",
             "number of recent checkpoints kept (default: 2)", "(default: 0.00784314)")  # fmt: skip
    assert all(s in flat for s in shown), [s for s in shown if s not in flat]


@pytest.mark.parametrize("module", ["advsimplex.evaluation.cli", "advsimplex.protocol.cli"])
def test_other_clis_state_each_default_once(module):
    import importlib

    text = importlib.import_module(module).build_parser().format_help()
    entries = re.split(r"\n  (?=-)", text)
    assert len(entries) > 10
    for entry in entries:
        assert entry.count("default") <= 1, entry
    flat = " ".join(text.split())
    assert "(default: None)" not in flat and "(default: False)" not in flat
    assert "(default: " in flat  # real defaults are still shown
