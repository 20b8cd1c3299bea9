"""How the AdvSimplex weight λ must scale with the logit scale s (measured, not assumed).

The alignment term measures changes of the probabilities ``g = softmax(s · cos)``; its first-order part
``E(J p)²`` has ``u_k = g ⊙ (z_k − ⟨g, z_k⟩)`` with ``z_k = s T n_k``, so at fixed probabilities it and its
parameter gradient grow like s² (plus terms through the probabilities, one power of s more, which vanish near
uniform probabilities), while the cross-entropy's gradient grows like s: the weight of the alignment's gradient
against the CE's moves like s to s². What a value of λ means therefore depends on the model's logit scale.

This tool fixes a model and a batch, evaluates the loss at several logit scales ``s`` (everything else
unchanged: the same tower, images and PGD budget) and reports, per s, the mean impact-weighted alignment
``Σ_i ω_i Ω_i``, the gradient norms of the clean CE and of that alignment term with respect to the tower's
parameters, and their ratio ``r(s)``. The λ at which the alignment's gradient weighs against the CE's gradient
as λ₀ does at ``s₀`` is ``λ(s) = λ₀ · r(s₀) / r(s)``; fitted exponents give the power law. With a fixed tower,
a larger s also sharpens the probabilities, so these exponents describe one model's logit scale, not a law
for carrying λ from one model to another.

    python -m advsimplex.protocol.scaling --model runs/proxy/<proxy>/model.safetensors
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Sequence

import torch

from ..alignment import AlignmentSettings, simplex_terms
from ..attack import pgd_trajectory
from ..data import load_dataset
from ..models import load_clip
from ..reference import simplex_weights
from ..zeroshot import ZeroShotModel, class_text_features

SCALES = (5.0, 10.0, 20.0, 50.0, 100.0)


def _grad_norm(value: torch.Tensor, params: list[torch.nn.Parameter]) -> float:
    grads = torch.autograd.grad(value, params, retain_graph=True, allow_unused=True)
    return math.sqrt(sum(float(g.square().sum()) for g in grads if g is not None))


def measure(
    model_path: str, *, dataset: str = "tinyimagenet:fit", images: int = 64, scales: Sequence[float] = SCALES,
    eps: float = 2 / 255, alpha: float = 1 / 255, steps: int = 10, seed: int = 0,
) -> dict:  # fmt: skip
    """Per logit scale: mean ``Σ ω Ω``, ‖∇CE‖, ‖∇ Σ ω Ω‖ and their ratio on ``images`` images of ``dataset``."""
    clip, tokenizer, _ = load_clip(model_path)
    clip.requires_grad_(False).visual.requires_grad_(True)
    data = load_dataset(dataset, "train", image_size=clip.visual.image_size)
    picks = torch.randperm(len(data), generator=torch.Generator().manual_seed(seed))[:images]
    x = torch.stack([data[int(i)][0] for i in picks])
    y = torch.tensor([data[int(i)][1] for i in picks])
    text = class_text_features(clip, tokenizer, data.classes)
    params = [p for p in clip.visual.parameters() if p.requires_grad]
    rows = []
    for s in scales:
        model = ZeroShotModel.from_clip(clip, text, s)
        traj = pgd_trajectory(model, x, y, eps=eps, alpha=alpha, steps=steps,
                              generator=torch.Generator().manual_seed(seed))  # fmt: skip
        terms = simplex_terms(
            model, x, traj.deltas, y, AlignmentSettings(), lam=0.0,
            weights=lambda clean, probs=traj.probs: simplex_weights(clean, probs),
        )  # fmt: skip
        ce = torch.nn.functional.cross_entropy(model(x), y)
        align = (terms.weights * terms.omega).sum(dim=-1).mean()
        g_ce, g_align = _grad_norm(ce, params), _grad_norm(align, params)
        rows.append({"logit_scale": s, "ce": float(ce.detach()), "alignment": float(align.detach()), "grad_ce": g_ce,
                     "grad_alignment": g_align, "ratio": g_align / g_ce})  # fmt: skip
    logs = [(math.log(r["logit_scale"]), r) for r in rows]

    def slope(key: str) -> float:
        xs = [a for a, _ in logs]
        ys = [math.log(r[key]) for _, r in logs]
        mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
        return sum((a - mx) * (b - my) for a, b in zip(xs, ys)) / sum((a - mx) ** 2 for a in xs)

    exponents = {key: slope(key) for key in ("alignment", "grad_ce", "grad_alignment", "ratio")}
    return {"model": model_path, "dataset": dataset, "images": images, "eps": eps, "alpha": alpha, "steps": steps,
            "rows": rows, "exponents": exponents}  # fmt: skip


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m advsimplex.protocol.scaling", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True, help="a save_clip .safetensors (e.g. the cached proxy)")
    p.add_argument("--dataset", default="tinyimagenet:fit")
    p.add_argument("--images", type=int, default=64)
    p.add_argument("--scales", default=",".join(f"{s:g}" for s in SCALES), help="comma-separated logit scales")
    p.add_argument("--out", help="JSON file for the measurements")
    args = p.parse_args(argv)
    result = measure(args.model, dataset=args.dataset, images=args.images,
                     scales=[float(v) for v in args.scales.split(",")])  # fmt: skip
    print("| s | CE | Σ ω Ω | ‖∇CE‖ | ‖∇ Σ ω Ω‖ | ratio |\n|---:|---:|---:|---:|---:|---:|")
    for r in result["rows"]:
        print(f"| {r['logit_scale']:g} | {r['ce']:.3f} | {r['alignment']:.3g} | {r['grad_ce']:.3g} | "
              f"{r['grad_alignment']:.3g} | {r['ratio']:.3g} |")  # fmt: skip
    print("log-log slopes:", json.dumps({k: round(v, 2) for k, v in result["exponents"].items()}))
    if args.out:
        with open(args.out, "w", encoding="utf-8") as f:
            json.dump(result, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
