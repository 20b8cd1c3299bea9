"""The protocol's outputs, from the cached runs and evaluations in ``out``.

- ``results.json``: every evaluation record (``part``: test, val or autoattack; ``model``: the run id),
  in the evaluation package's format, with the plan as its config;
- ``report.md``: the settings, the proxy's clean zero-shot accuracy, the main tables in the layout of the
  paper's Tables 2/3 (rows: the pre-trained proxy and each method at its chosen knob value; columns: the
  seven test sets and their average; one table per setting: clean, PGD-20 per ε, AutoAttack) and a table
  of every point of the sweep (averages, held-out score, training time);
- ``tradeoff.png``: average clean against average robust accuracy, one point per (method, knob value);
- ``presets/<method>.yaml`` (written by :mod:`.presets`): each method's chosen run as a training preset;
- ``protocol.json``: the summary (plan, runs, choices, timings, skipped methods, errors).
"""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path

from ..evaluation import markdown_report, write_results
from ..evaluation.report import plot_tradeoff
from .layout import PROXY_ID, Paths
from .scoring import PARTS, cached_part
from .selection import averages
from .settings import MethodSpec, ProtocolPlan

PROXY_LABEL = "Pre-trained proxy"


def _pct(v: float | None) -> str:
    return "–" if v is None else f"{100 * v:.1f}"


def _eps(e: float) -> str:
    k = e * 255
    return f"{round(k)}/255" if abs(k - round(k)) < 1e-6 else f"{e:g}"


def _load_parts(paths, run_ids: list[str]) -> dict[str, dict[str, list[dict]]]:
    return {rid: {p: recs for p in PARTS if (recs := cached_part(paths.eval_file(rid, p))) is not None}
            for rid in run_ids}  # fmt: skip


def _run_record(paths, run_id: str) -> dict | None:
    path = paths.run_record(run_id)
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def _machine(workers: int, threads: int) -> str:
    import torch

    return (f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPU core(s), {workers} worker(s) × "
            f"{threads} thread(s), torch {torch.__version__}")  # fmt: skip


def write_report(
    plan: ProtocolPlan,
    out: Path,
    *,
    methods: list[MethodSpec],
    skipped: dict[str, str],
    proxy: dict,
    selection: dict[str, dict],
    timing: dict,
    errors: dict[str, str],
    data_root: str,
    presets: dict[str, str] | None = None,
) -> dict:
    """Write the four outputs (module docstring) and return the summary."""

    paths = Paths(out)
    runs = [(PROXY_ID, None, None)] + [(s.run_id(v), s, v) for s in methods for v in s.points()]
    parts = _load_parts(paths, [r for r, _, _ in runs])
    labels = {PROXY_ID: PROXY_LABEL} | {s.run_id(v): s.label(v) for s in methods for v in s.points()}
    records = [dict(r, label=labels[rid]) for rid, by_part in parts.items() for recs in by_part.values() for r in recs]
    if records:
        write_results(out / "results.json", records, plan.to_dict())
    rows = []
    for rid, spec, value in runs:
        test = averages(parts[rid].get("test", []))
        val = parts[rid].get("val")
        trained = _run_record(paths, rid) if spec is not None else None
        rows.append({
            "run_id": rid, "label": labels[rid], "method": spec.name if spec else "proxy",
            "title": spec.title if spec else PROXY_LABEL,
            "knob": spec.knob if spec and spec.keys else None, "value": value,
            "chosen": spec is None or selection.get(spec.name, {}).get("run_id") == rid,
            "val_score": selection.get(spec.name, {}).get("scores", {}).get(rid) if spec else None,
            "val": averages(val) if val else None, "test": test,
            "autoattack": averages(parts[rid].get("autoattack", [])),
            "train_seconds": trained["train_seconds"] if trained else None,
            "train_cpu_seconds": trained.get("cpu_seconds") if trained else None,
        })  # fmt: skip
    summary = {
        "plan": plan.to_dict(), "fingerprint": plan.fingerprint(), "data_root": data_root, "proxy": proxy,
        "selection": selection, "presets": presets or {}, "skipped_methods": skipped, "errors": errors,
        "timing": timing,
        "machine": _machine(timing.get("workers", 1), timing.get("threads", 1)),
        "runs": [{**r, "test": _keyed(r["test"]), "val": _keyed(r["val"]), "autoattack": _keyed(r["autoattack"])}
                 for r in rows],
    }  # fmt: skip
    (out / "protocol.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    test_records = [r for r in records if r["part"] == "test"]
    if test_records:
        groups = {PROXY_LABEL: [(PROXY_ID, "")]}
        for spec in methods:
            groups[spec.title] = [(spec.run_id(v), _knob(spec, v)) for v in spec.points()]
        plot_tradeoff(test_records, out / "tradeoff.png", groups,
                      title="Zero-shot accuracy averaged over the seven offline test sets")  # fmt: skip
    (out / "report.md").write_text(_markdown(plan, summary, rows, records, selection, labels), encoding="utf-8")
    return summary


def _knob(spec: MethodSpec, value: float | None) -> str:
    return f"{spec.knob}={value:g}" if value is not None else ""


def _keyed(avg: dict | None) -> dict | None:
    """``{(attack, ε): acc}`` as JSON: ``{"pgd@2/255": acc, "clean": acc}``."""
    if avg is None:
        return None
    return {(a if a == "clean" else f"{a}@{_eps(e)}"): v for (a, e), v in avg.items()}


def _markdown(plan: ProtocolPlan, summary: dict, rows: list[dict], records: list[dict], selection: dict,
              labels: dict) -> str:  # fmt: skip
    ft, ev, pre, proxy = plan.finetune, plan.evaluation, plan.pretrain, summary["proxy"]
    t = summary["timing"]
    lines = ["# Zero-shot robustness after adversarial fine-tuning on Tiny-ImageNet (offline protocol)", ""]
    budget = "steps" if "steps" in pre else "epochs"
    lines += [
        f"- **Proxy**: `{pre['model']}`, contrastive pre-training (`clip`) for {proxy.get('steps')} steps × "
        f"{pre['batch_size']} ({pre.get(budget)} {budget}) on the held-in parts of the seven training splits "
        f"({proxy.get('images')} images, {proxy.get('classes')} joint classes, "
        f"{proxy.get('captions_per_class')} caption templates), {proxy.get('train_seconds', 0) / 60:.1f} min wall "
        f"({proxy.get('cpu_seconds', 0) / 60:.1f} CPU-min).",
        f"- **Fine-tuning** (every method the same budget): `{ft['dataset']}`, {ft['steps']} steps × "
        f"{ft['batch_size']}, PGD path m = {ft['attack_steps']}, ε = {_eps(ft['eps'])}, α = {_eps(ft['alpha'])}, "
        f"{ft['optimizer']} lr {ft['lr']:g} (weight decay {ft['weight_decay']:g}), {ft['warmup_steps']} warmup steps "
        f"+ {ft['schedule']}, seed {ft['seed']}; the image tower is trained, the text tower frozen.",
        f"- **Evaluation**: {ev.test_samples} random test images per set (seed {ev.seed}; all of smaller sets), "
        f"`{ev.templates}` prompt templates; PGD-{ev.pgd_steps} (CE, step ε/4, uniform start, best iterate) at "
        f"ε = {', '.join(_eps(e) for e in ev.eps)}; AutoAttack (APGD-CE + APGD-T, {ev.autoattack_iters} iterations, "
        f"{ev.autoattack_targets} targets) at ε = {_eps(ev.autoattack_eps)} on {ev.autoattack_samples} images per "
        "set, for the proxy and each method's chosen run.",
        "- **Knob choice**: per method, the value of highest (clean + mean robust) / 2 on the held-out 10 % of the "
        f"seven training splits ({ev.val_samples} images per set); no number of the test splits chose anything.",
        f"- **Time**: {t['total_wall_seconds'] / 60:.1f} min wall in {len(t['invocations'])} invocation(s); the "
        f"last: {t['wall_seconds'] / 60:.1f} min (proxy {t['pretrain_seconds'] / 60:.1f} min, fine-tuning and "
        f"evaluation {t['sweep_seconds'] / 60:.1f} min, AutoAttack {t['autoattack_seconds'] / 60:.1f} min, "
        f"{t['jobs_run']} job(s) run, the rest cached) on {summary['machine']}.",
    ]  # fmt: skip
    if summary["skipped_methods"]:
        lines.append("- **Left out** (not offered by advsimplex.train): " + ", ".join(summary["skipped_methods"]))
    if summary["errors"]:
        lines.append("- **Failed** (see protocol.json and logs/): " + ", ".join(summary["errors"]))
    if proxy.get("clean"):
        acc = proxy["clean"]["accuracy"]
        names = list(acc)
        samples = plan.evaluation.proxy_clean_samples
        cells = [_pct(acc[n]) for n in names] + [_pct(sum(acc.values()) / len(names))]
        lines += [
            "",
            f"## The proxy's clean zero-shot accuracy (logit scale {proxy['clean']['logit_scale']:.1f})",
            "",
            "| images per set | " + " | ".join(names) + " | Average |",
            "|---|" + "---:|" * (len(names) + 1),
            f"| {'all' if samples is None else samples} | " + " | ".join(cells) + " |",
        ]
    chosen = {r["run_id"] for r in rows if r["chosen"]}
    main = [dict(r, model=labels[r["model"]]) for r in records if r["part"] in ("test", "autoattack")
            and r["model"] in chosen]  # fmt: skip
    if main:
        body = markdown_report(main, "Main tables: each method at its chosen knob value")
        lines += [""] + ["#" + ln if ln.startswith("#") else ln for ln in body.splitlines()]
    if summary["presets"]:
        lines += [
            "",
            "## Defaults from the sweep",
            "",
            "Each method's chosen run as an `advsimplex-train --config` preset (the proxy's defaults):",
            "",
        ]
        lines += [f"- {m}: `{p}`" for m, p in summary["presets"].items()]
    lines += ["", "## Every point of the sweep (averages over the seven sets, %)", ""]
    robust = [k for k in _ordered_keys(rows) if k[0] != "clean"]
    head = ["method", "knob", "held-out score"] + ["clean"] + [f"PGD-{ev.pgd_steps} {_eps(e)}" for _, e in robust]
    lines += ["| " + " | ".join(head) + " | AutoAttack | train time |", "|---|---|" + "---:|" * (len(head) + 0)]
    for r in rows:
        aa = r["autoattack"].get(("autoattack", ev.autoattack_eps))
        knob = f"{r['knob']}={r['value']:g}" if r["knob"] else "–"
        mark = " (chosen)" if r["chosen"] and r["method"] != "proxy" else ""
        train = f"{r['train_seconds'] / 60:.1f} min" if r["train_seconds"] else "–"
        cells = [_pct(r["val_score"]), _pct(r["test"].get(("clean", 0.0)))] + [_pct(r["test"].get(k)) for k in robust]
        lines.append(f"| {r['title']} | {knob}{mark} | "
                     + " | ".join(cells) + f" | {_pct(aa)} | {train} |")  # fmt: skip
    return "\n".join(lines) + "\n"


def _ordered_keys(rows: list[dict]) -> list[tuple[str, float]]:
    keys: dict[tuple[str, float], None] = {}
    for r in rows:
        keys.update(dict.fromkeys(sorted(r["test"], key=lambda k: (k[0] != "clean", k[1]))))
    return list(keys)
