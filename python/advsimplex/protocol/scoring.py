"""Zero-shot evaluation of one model with :func:`advsimplex.evaluation.evaluate`, cached per model and part.

Three parts (:data:`PARTS`), each written to ``<out>/evals/<run id>.<part>.json`` in the evaluation
package's results format, so that an interrupted protocol re-evaluates nothing it has finished:

- ``test``: the ``offline`` suite (the seven test splits), clean and PGD at every ε of the plan;
- ``val``: the ``offline-val`` suite (held-out parts of the training splits), the same attacks — the only
  numbers the choice of knob values looks at;
- ``autoattack``: the ``offline`` suite, AutoAttack at one ε on a smaller random subset (the clean
  records of that subset are dropped: the ``test`` part has the clean accuracy).
"""

from __future__ import annotations

from pathlib import Path

from ..evaluation import AttackSettings, EvalConfig, ModelSpec, evaluate, load_results, write_results
from .settings import EvalPlan

PARTS = ("test", "val", "autoattack")


def eval_config(plan: EvalPlan, part: str, model: str, label: str, data_root: str | None) -> EvalConfig:
    """The :class:`EvalConfig` of one part for the model file ``model`` shown as ``label``."""
    if part not in PARTS:
        raise ValueError(f"part must be one of {', '.join(PARTS)}, got {part!r}")
    settings = AttackSettings(pgd_steps=plan.pgd_steps, aa_iters=plan.autoattack_iters,
                              aa_targets=plan.autoattack_targets)  # fmt: skip
    if part == "autoattack":
        attacks, eps, samples, suite = ("autoattack",), (plan.autoattack_eps,), plan.autoattack_samples, "offline"
    else:
        attacks, eps = ("pgd",), tuple(plan.eps)
        samples, suite = (plan.test_samples, "offline") if part == "test" else (plan.val_samples, "offline-val")
    return EvalConfig(
        models=[ModelSpec(model, label=label)], datasets=[suite], eps=eps, attacks=attacks, settings=settings,
        samples=samples, batch_size=plan.batch_size, seed=plan.seed, templates=[plan.templates], data_root=data_root,
        device="cpu",
    )  # fmt: skip


def cached_part(path: Path) -> list[dict] | None:
    """The records of a finished part (None if it has not been evaluated)."""
    return load_results(path)["records"] if path.is_file() else None


def evaluate_part(plan: EvalPlan, part: str, model: str, label: str, path: Path, data_root: str | None) -> list[dict]:
    """Evaluate one part (or read it from ``path``), write it to ``path`` and return its records."""
    cached = cached_part(path)
    if cached is not None:
        return cached
    cfg = eval_config(plan, part, model, label, data_root)
    records = evaluate(cfg)
    if part == "autoattack":
        records = [r for r in records if r["attack"] != "clean"]
    for r in records:
        r["part"] = part
    write_results(path, records, cfg.to_dict())
    return records
