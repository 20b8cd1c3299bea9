"""Full training steps side by side: AdvSimplex (closed form; fast and generic jets), TeCoA and the
Monte-Carlo ``sampled`` variant (κ = 10, 70 points per simplex), at equal batch and path length.

One step = PGD path + forward + backward + AdamW update on real CIFAR-10 images (bench/steps.py).
Shapes: CPU, the demo tower ``advsimplex-demo-vit`` (32×32) at batch 16, m = 10; CUDA, ViT-B/32 at
batch 128, m = 10 (the issue's target setting). Records carry ``images_per_s`` (bench/run.py) besides the times;
peak memory is measured like every other benchmark (common.measure).
"""

from __future__ import annotations

import pytest
import torch
from common import QUICK, bench_devices, measure, rounds
from steps import METHODS, build_step


def settings(device: str) -> list[dict]:
    if device == "cuda":
        return [{"model": "ViT-B-32", "B": 128, "m": 10}]
    if QUICK:
        return [{"model": "advsimplex-micro-vit", "B": 4, "m": 3}]
    return [{"model": "advsimplex-demo-vit", "B": 16, "m": 10}]


def providers(device: str) -> list[str]:
    slow = {"sampled-70"} if QUICK else set()
    if device == "cuda":
        slow |= {"advsimplex-generic"}  # nested forward AD over 19 pair streams of ViT-B/32: minutes per step
    return [p for p in METHODS if p not in slow]


def cases():
    for device in bench_devices():
        for s in settings(device):
            for provider in providers(device):
                yield pytest.param(device, s, provider, id=f"{device}-{provider}-{s['model']}-B{s['B']}-m{s['m']}")


@pytest.mark.parametrize(("device", "setting", "provider"), list(cases()))
def test_train_step(benchmark, device, setting, provider):
    # sampled: chunks of images per encoder call keep the Monte-Carlo forward within memory
    extra = {"sample_batch_size": 1024} if provider.startswith("sampled") else {}
    step = build_step(provider, model=setting["model"], batch=setting["B"], device=device,
                      attack_steps=setting["m"], **extra)  # fmt: skip
    step.run()  # warm-up (lazy initialisation, autotuning)
    label = f"model={setting['model']}xB={setting['B']}xm={setting['m']}"
    expensive = provider.startswith("sampled") or provider.endswith("generic")
    benchmark.extra_info["images"] = setting["B"]  # bench/run.py reports images_per_s = images / median_s
    measure(benchmark, step.run, op="train_step", provider=provider, mode="step", shape=label,
            dtype=torch.float32, device=device, rounds=rounds(3 if expensive else 8), warmup=0)  # fmt: skip
