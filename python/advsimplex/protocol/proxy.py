"""The proxy CLIP: ``advsimplex-proxy-vit`` pre-trained contrastively on the seven offline sets, cached.

Pre-training is the ``clip`` method of :mod:`advsimplex.train` (open_clip's ``ClipLoss``, both towers
and the logit scale trained) on the union of the seven training splits without their held-out parts
(``tinyimagenet:fit+cifar10:fit+…``: one joint label space, equal class names merged). Captions put the
class name into a template drawn per image from the union of the seven sets' OpenAI template ensembles
and the paper's "This is a photo of a {}", so that every dataset's zero-shot prompts are ones the text
tower has seen with every class name.

The model is cached in ``<cache>/<model>-<settings hash>/model.safetensors`` with ``proxy.json``
(settings, time, clean zero-shot accuracy per dataset); an interrupted pre-training resumes from its
checkpoints, changed settings get a new folder.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

from ..data import OFFLINE_SETS, load_dataset
from ..evaluation.prompts import parse_templates
from ..zeroshot import DEFAULT_TEMPLATES
from .settings import EvalPlan, ProtocolPlan
from .training import run_training

log = logging.getLogger("advsimplex.protocol")


def caption_templates(which: str = "all") -> list[str]:
    """Caption templates of the pre-training: the union of the offline sets' OpenAI ensembles and the paper's
    template (``all``: 102), or the first template of each set plus the paper's (``first``: quick runs)."""
    spec = parse_templates("openai")
    lists = [spec.for_dataset(s.template_key) for s in OFFLINE_SETS]
    chosen = [t for lst in lists for t in (lst if which == "all" else lst[:1])]
    return list(dict.fromkeys([*chosen, *DEFAULT_TEMPLATES]))


def pretrain_config(plan: ProtocolPlan, out_dir: Path) -> dict:
    """The TrainConfig overrides of the proxy's pre-training into ``out_dir``."""
    settings = dict(plan.pretrain)
    which = settings.pop("caption_set")
    return {**settings, "caption_templates": caption_templates(which), "out_dir": str(out_dir), "eval_samples": 0,
            "ckpt_every": 200, "log_every": 20}  # fmt: skip


def proxy_dir(plan: ProtocolPlan, cache: str | Path) -> Path:
    """The cache folder of the proxy that ``plan`` pre-trains."""
    return Path(cache) / f"{plan.pretrain['model']}-{plan.pretrain_fingerprint()}"


def clean_accuracy(model: Path, evaluation: EvalPlan, data_root: str | None) -> dict:
    """The clean zero-shot accuracy of ``model`` on the offline test splits: ``{"accuracy": {dataset title:
    accuracy}, "logit_scale", "templates", "samples"}`` (``evaluation.proxy_clean_samples`` per set; None: all)."""
    from ..evaluation import AttackSettings, EvalConfig, ModelSpec, evaluate

    cfg = EvalConfig(models=[ModelSpec(str(model), label="proxy")], datasets=["offline"], eps=(0.0,),
                     attacks=("pgd",), settings=AttackSettings(pgd_steps=1), samples=evaluation.proxy_clean_samples,
                     batch_size=evaluation.batch_size, seed=evaluation.seed, templates=[evaluation.templates],
                     data_root=data_root, device="cpu")  # fmt: skip
    records = [r for r in evaluate(cfg) if r["attack"] == "clean"]
    return {
        "accuracy": {r["dataset_title"]: r["accuracy"] for r in records},
        "logit_scale": records[0]["logit_scale"],
        "templates": evaluation.templates,
        "samples": {r["dataset_title"]: r["samples"] for r in records},
    }


def ensure_proxy(
    plan: ProtocolPlan, cache: str | Path, data_root: str | None = None, progress: bool = False
) -> tuple[Path, dict]:
    """The pre-trained proxy's weights (training it unless cached) and its ``proxy.json`` record, with its
    clean zero-shot accuracy under the plan's templates (:func:`clean_accuracy`)."""
    folder = proxy_dir(plan, cache)
    model, record_path = folder / "model.safetensors", folder / "proxy.json"
    if model.is_file() and record_path.is_file():
        record = json.loads(record_path.read_text(encoding="utf-8"))
        if record.get("clean", {}).get("templates") != plan.evaluation.templates:
            record["clean"] = clean_accuracy(model, plan.evaluation, data_root)
            record_path.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
        return model, record
    log.info("pre-training the proxy %s into %s", plan.pretrain["model"], folder)
    t0 = time.perf_counter()
    result = run_training(pretrain_config(plan, folder), progress=progress)
    record = {
        "model": str(model), "model_name": plan.pretrain["model"], "settings": plan.pretrain,
        "fingerprint": plan.pretrain_fingerprint(), "steps": result["steps"], "train_seconds": result["train_seconds"],
        "wall_seconds": time.perf_counter() - t0, "cpu_seconds": result["cpu_seconds"],
        "images": len(load_dataset(plan.pretrain["dataset"], "train")), "classes": result["classes"],
        "captions_per_class": len(caption_templates(plan.pretrain["caption_set"])),
    }  # fmt: skip
    if not model.is_file():
        raise RuntimeError(f"pre-training finished without writing {model}")
    record["clean"] = clean_accuracy(model, plan.evaluation, data_root)
    record_path.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    return model, record
