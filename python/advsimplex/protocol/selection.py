"""Choosing each method's knob value on the held-out parts of the training splits (never the test splits).

Score of a run (:func:`val_score`): the mean of its clean accuracy and its robust accuracy (PGD averaged
over the plan's ε), each averaged over the seven held-out parts (``val`` evaluation part). Each method
keeps the knob value of highest score (the first on ties); the main table shows these runs, the
trade-off plot and the sweep table every run.
"""

from __future__ import annotations

from collections.abc import Iterable

from .scoring import cached_part
from .settings import MethodSpec


def averages(records: Iterable[dict]) -> dict[tuple[str, float], float]:
    """Accuracy averaged over datasets, per (attack, ε), of one model's records."""
    sums: dict[tuple[str, float], list[float]] = {}
    for r in records:
        sums.setdefault((r["attack"], r["eps"]), []).append(r["accuracy"])
    return {key: sum(v) / len(v) for key, v in sums.items()}


def val_score(records: list[dict]) -> float:
    """``(clean + mean over ε of robust) / 2`` of one model's held-out records (dataset averages)."""
    avg = averages(records)
    robust = [v for (attack, _), v in avg.items() if attack != "clean"]
    if ("clean", 0.0) not in avg or not robust:
        raise ValueError("val_score needs clean and robust records")
    return (avg[("clean", 0.0)] + sum(robust) / len(robust)) / 2


def choose_knobs(methods: list[MethodSpec], paths, done_ids: set[str]) -> dict[str, dict]:
    """Per method, ``{"value", "run_id", "score", "scores": {run_id: score}}`` of its best finished run."""
    chosen = {}
    for spec in methods:
        scores = {}
        for value in spec.points():
            run_id = spec.run_id(value)
            records = cached_part(paths.eval_file(run_id, "val")) if run_id in done_ids else None
            if records:
                scores[run_id] = (value, val_score(records))
        if not scores:
            continue
        best = max(scores, key=lambda r: scores[r][1])  # max keeps the first of equal scores
        chosen[spec.name] = {"value": scores[best][0], "run_id": best, "score": scores[best][1],
                             "scores": {r: s for r, (_, s) in scores.items()}}  # fmt: skip
    return chosen
