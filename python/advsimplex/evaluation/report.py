"""Outputs of an evaluation run: the JSON records, markdown tables and the accuracy-vs-ε plot.

- ``results.json``: ``{"format", "config", "records": [...]}``, one record per
  (model, dataset, attack, ε) (attack ``clean`` at ε = 0), as :func:`advsimplex.evaluation.runner.evaluate` makes them.
- ``report.md``: a summary (average over datasets per model × attack × ε) and, per setting, a table
  models × datasets with the average, like the paper's Tables 2/3 (accuracy in %).
- ``robustness.png``: accuracy against ε (ε = 0 is clean accuracy), one panel per attack, averaged over datasets.
- :func:`plot_tradeoff`: average clean against average robust accuracy, one point per model, a line per method
  through its knob values (trade-off fronts).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

RESULTS_FORMAT = "advsimplex.eval/1"


def attack_title(record: dict) -> str:
    """A column title from a record's attack and settings, e.g. ``PGD-10``."""
    attack, s = record["attack"], record.get("settings", {})
    if attack == "clean":
        return "Clean"
    if attack == "pgd":
        return f"PGD-{s.get('steps', '?')}"
    if attack == "cw":
        return f"CW-{s.get('steps', '?')}"
    if attack == "autoattack":
        return "AutoAttack"
    kind = "Simplex" if attack == "simplex" else "Simplex transfer"
    return f"{kind} (m={s.get('steps', '?')}, κ={s.get('samples_per_simplex', '?')})"


def _ordered(values: Sequence) -> list:
    return list(dict.fromkeys(values))


def _settings_key(r: dict) -> tuple[str, float]:
    return (r["attack"], r["eps"])


def _table(records: list[dict], models: list[str], datasets: list[tuple[str, str]]) -> list[str]:
    """Rows: models; columns: datasets and their (unweighted) average; cells: accuracy in %."""
    cell = {(r["model"], r["dataset"]): r["accuracy"] for r in records}
    head = "| model | " + " | ".join(title for _, title in datasets) + " | Average |"
    lines = [head, "|---|" + "---:|" * (len(datasets) + 1)]
    for m in models:
        values = [cell.get((m, d)) for d, _ in datasets]
        shown = [f"{100 * v:.1f}" if v is not None else "–" for v in values]
        present = [v for v in values if v is not None]
        avg = f"{100 * sum(present) / len(present):.1f}" if present else "–"
        lines.append(f"| {m} | " + " | ".join(shown) + f" | {avg} |")
    return lines


def markdown_report(records: list[dict], title: str = "Zero-shot robustness") -> str:
    """The markdown report of ``records`` (see the module docstring)."""
    if not records:
        raise ValueError("no records to report")
    models = _ordered(r["model"] for r in records)
    datasets = _ordered((r["dataset"], r["dataset_title"]) for r in records)
    settings = _ordered(_settings_key(r) for r in records)
    first = {key: next(r for r in records if _settings_key(r) == key) for key in settings}
    r0 = records[0]
    lines = [f"# {title}", ""]
    lines.append(
        "Accuracy in %. "
        + _samples_text(records)
        + f". Seed {r0['seed']}; device {r0['environment'].get('device', '?')}; "
        + f"templates: {len(r0['templates'])} ({r0['templates'][0]!r}{', …' if len(r0['templates']) > 1 else ''})."
    )
    lines += ["", "## Summary: average over datasets", ""]
    cols = [(key, attack_title(first[key]) + ("" if key[0] == "clean" else f" {first[key]['eps_label']}"))
            for key in settings]  # fmt: skip
    lines.append("| model | " + " | ".join(c for _, c in cols) + " |")
    lines.append("|---|" + "---:|" * len(cols))
    for m in models:
        row = []
        for key, _ in cols:
            vals = [r["accuracy"] for r in records if r["model"] == m and _settings_key(r) == key]
            row.append(f"{100 * sum(vals) / len(vals):.1f}" if vals else "–")
        lines.append(f"| {m} | " + " | ".join(row) + " |")
    for key in settings:
        name = attack_title(first[key])
        heading = "Clean accuracy" if key[0] == "clean" else f"{name}, ε = {first[key]['eps_label']}"
        lines += ["", f"## {heading}", ""]
        lines += _table([r for r in records if _settings_key(r) == key], models, datasets)
    attacks = _ordered(r["attack"] for r in records if r["attack"] != "clean")
    if attacks:
        lines += ["", "## Attack settings", ""]
    for attack in attacks:
        rs = [r for r in records if r["attack"] == attack]
        shown = {k: v for k, v in rs[0]["settings"].items() if k != "alpha"}
        if "alpha" in rs[0]["settings"]:
            shown = {"alpha": _alpha_rule(rs), **shown}
        lines.append(f"- {attack_title(rs[0])}: " + ", ".join(f"{k}={v}" for k, v in shown.items()))
    return "\n".join(lines) + "\n"


def _samples_text(records: list[dict]) -> str:
    """``Images per dataset: A 500 of 2000, …``; attacks evaluated on other subsets get their own list."""
    by_attack: dict[str, dict[str, tuple[int, int]]] = {}
    for r in records:
        by_attack.setdefault(attack_title(r), {})[r["dataset_title"]] = (r["samples"], r["dataset_size"])
    groups: dict[tuple, list[str]] = {}
    for attack, sizes in by_attack.items():
        groups.setdefault(tuple(sizes.items()), []).append(attack)
    texts = []
    for sizes, attacks in groups.items():
        listed = ", ".join(f"{t} {n}" + (f" of {total}" if n != total else "") for t, (n, total) in sizes)
        texts.append(listed if len(groups) == 1 else f"({', '.join(attacks)}) {listed}")
    return "Images per dataset: " + "; ".join(texts)


def _alpha_rule(records: list[dict]) -> str:
    """The step size as a rule: ``ε/4`` when proportional to ε in every record, else its value(s)."""
    pairs = {(r["eps"], r["settings"]["alpha"]) for r in records if r["eps"] > 0}
    ratios = {round(a / e, 9) for e, a in pairs}
    if len(ratios) == 1:
        (ratio,) = ratios
        return f"ε/{1 / ratio:g}" if ratio < 1 else f"{ratio:g}·ε"
    alphas = sorted({a for _, a in pairs})
    return ", ".join(f"{a * 255:g}/255" for a in alphas)


def plot_robustness(records: list[dict], path: str | os.PathLike) -> Path:
    """Accuracy (%) against ε·255, one panel per attack, one line per model; writes a PNG.

    Each line starts at the clean accuracy (ε = 0). With several datasets a point is the unweighted
    average over the datasets (the per-dataset numbers are in the tables of :func:`markdown_report`).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not records:
        raise ValueError("no records to plot")
    models = _ordered(r["model"] for r in records)
    datasets = _ordered(r["dataset_title"] for r in records)
    attacks = _ordered(r["attack"] for r in records if r["attack"] != "clean") or ["clean"]
    where = datasets[0] if len(datasets) == 1 else f"average over {len(datasets)} datasets"
    ncols = min(3, len(attacks))
    nrows = -(-len(attacks) // ncols)
    fig, axes = plt.subplots(
        nrows, ncols, figsize=(max(6.0, 4.4 * ncols), 3.4 * nrows + 0.4), squeeze=False, layout="constrained"
    )
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    ticks = sorted({0.0, *(r["eps"] * 255 for r in records if r["attack"] != "clean")})
    for ax, attack in zip(axes.flat, attacks):
        for i, model in enumerate(models):
            xs, ys = _curve(records, model, "__average__", attack)
            ax.plot(xs, ys, color=colors[i % len(colors)], marker="o", label=model)
        ax.set_title(f"{attack_title(next(r for r in records if r['attack'] == attack))} ({where})", fontsize="medium")
        ax.set_xticks(ticks, [f"{t:g}" for t in ticks])
        ax.set_xlabel("ε (× 1/255)")
        ax.set_ylabel("accuracy (%)")
        ax.set_ylim(-2, 102)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(attacks) :]:
        ax.axis("off")
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncol=min(4, len(labels)), fontsize="small")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)
    return path


def _curve(records: list[dict], model: str, dataset: str, attack: str) -> tuple[list[float], list[float]]:
    """(ε·255, accuracy %) points of one model × attack, starting at the clean accuracy (ε = 0)."""

    def acc(r_attack: str, eps: float) -> float | None:
        vals = [r["accuracy"] for r in records if r["model"] == model and r["attack"] == r_attack
                and r["eps"] == eps and (dataset == "__average__" or r["dataset"] == dataset)]  # fmt: skip
        return 100 * sum(vals) / len(vals) if vals else None

    points = []
    clean = acc("clean", 0.0)
    if clean is not None:
        points.append((0.0, clean))
    for eps in sorted({r["eps"] for r in records if r["attack"] == attack}):
        value = acc(attack, eps)
        if value is not None and (attack != "clean" and (eps > 0 or clean is None)):
            points.append((eps * 255, value))
    return [p[0] for p in points], [p[1] for p in points]


def write_results(path: str | os.PathLike, records: list[dict], config: dict | None = None) -> Path:
    """Write ``{"format", "config", "records"}`` as JSON (atomically)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps({"format": RESULTS_FORMAT, "config": config, "records": records}, indent=1) + "\n")
    os.replace(tmp, path)
    return path


def load_results(path: str | os.PathLike) -> dict:
    """Read a ``results.json`` written by :func:`write_results`."""
    data = json.loads(Path(path).read_text())
    if data.get("format") != RESULTS_FORMAT:
        raise ValueError(f"{path} is not an advsimplex evaluation result (format {data.get('format')!r})")
    return data


def plot_tradeoff(
    records: list[dict],
    path: str | os.PathLike,
    groups: dict[str, list[tuple[str, str]]],
    title: str = "Clean against robust accuracy",
) -> Path:
    """Average clean accuracy (x) against average robust accuracy (y), both in % and averaged over the
    datasets of ``records``: one panel per robust setting (attack, ε), one point per model.

    ``groups`` maps a legend entry (a method) to its ``(model, annotation)`` pairs in knob order (e.g.
    ``[("advsimplex-lam3", "λ=3"), ...]``); the points of a group are joined by a line, so that trade-off
    fronts rather than single points are compared. Models of ``records`` in no group are not drawn.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not records:
        raise ValueError("no records to plot")
    settings = _ordered(_settings_key(r) for r in records if r["attack"] != "clean")
    if not settings:
        raise ValueError("plot_tradeoff needs robust records (an attack other than clean)")
    avg: dict[tuple[str, tuple[str, float]], list[float]] = {}
    for r in records:
        avg.setdefault((r["model"], _settings_key(r)), []).append(r["accuracy"])
    mean = {k: 100 * sum(v) / len(v) for k, v in avg.items()}
    first = {key: next(r for r in records if _settings_key(r) == key) for key in settings}
    ncols = min(3, len(settings))
    nrows = -(-len(settings) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(5.2 * ncols, 4.4 * nrows + 0.6), squeeze=False,
                             layout="constrained")  # fmt: skip
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    markers = "osD^v<>pPX*h"
    for ax, key in zip(axes.flat, settings):
        for i, (group, members) in enumerate(groups.items()):
            pts = [(mean[(m, ("clean", 0.0))], mean[(m, key)], note) for m, note in members
                   if (m, ("clean", 0.0)) in mean and (m, key) in mean]  # fmt: skip
            if not pts:
                continue
            xs, ys = [p[0] for p in pts], [p[1] for p in pts]
            style = "-" if len(pts) > 1 else "none"
            ax.plot(xs, ys, linestyle=style, marker=markers[i % len(markers)], color=colors[i % len(colors)],
                    label=group)  # fmt: skip
            for x, y, note in pts:
                if note:
                    ax.annotate(note, (x, y), textcoords="offset points", xytext=(4, 3), fontsize="x-small")
        ax.set_title(f"{attack_title(first[key])}, ε = {first[key]['eps_label']}", fontsize="medium")
        ax.set_xlabel("average clean accuracy (%)")
        ax.set_ylabel("average robust accuracy (%)")
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(settings) :]:
        ax.axis("off")
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncol=min(4, max(1, len(labels))), fontsize="small")
    fig.suptitle(title, fontsize="medium")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)
    return path
