"""The protocol end to end: proxy → fine-tuning sweep → zero-shot evaluation → knob choice → AutoAttack → report.

Work is split into jobs (one per fine-tuning run: train, then evaluate the ``test`` and ``val`` parts;
one for the proxy itself; then AutoAttack for the proxy and each method's chosen run) that run in
``workers`` processes of ``threads`` torch threads each (the small proxy gains little from intra-op threads,
so a 2-core machine runs two jobs of one thread). Every finished training run and evaluated part is
cached under ``out`` (``runs/<id>.json`` + ``runs/<id>/``, ``evals/<id>.<part>.json``), so a second
invocation continues where the first stopped, resuming an interrupted training run from its checkpoint.
"""

from __future__ import annotations

import json
import logging
import os
import time
import traceback
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from datetime import datetime, timezone
from multiprocessing import get_context
from pathlib import Path

from .layout import PROXY_ID, Paths
from .presets import write_presets
from .proxy import ensure_proxy
from .scoring import PARTS, evaluate_part
from .selection import choose_knobs
from .settings import EvalPlan, MethodSpec, ProtocolPlan
from .training import ProtocolError, check_keys, method_available, run_training

log = logging.getLogger("advsimplex.protocol")

COST = {"sampled": 17.0, "advsimplex-taylor2": 3.8, "advsimplex": 2.8, "trades": 2.2}
"""CPU cost of a training step relative to TeCoA's (measured on the proxy at batch 64, m = 10, one thread: TeCoA
0.52 s, AGFT 0.56, FARE 0.65, PMG 0.70, TRADES 1.14, AdvSimplex 1.43, taylor2 1.99, sampled 9.15), to start long
jobs first."""


@dataclass(frozen=True)
class Job:
    """One unit of work: train ``run_id`` with ``train`` overrides (or take ``model``: a file written
    before; None for the proxy), then evaluate ``parts``."""

    run_id: str
    label: str
    parts: tuple[str, ...]
    train: dict | None = None
    method: str | None = None
    value: float | None = None
    cost: float = 1.0
    model: str | None = None


@dataclass
class Context:
    """What every job needs besides itself (picklable, sent to the worker processes)."""

    evaluation: EvalPlan
    out: str
    data_root: str
    proxy_model: str
    threads: int
    progress: bool = False


def available_methods(plan: ProtocolPlan) -> tuple[list[MethodSpec], dict[str, str]]:
    """The plan's methods that :mod:`advsimplex.train` offers, and the reason for each one left out.

    A method that exists but whose knob or fixed keys TrainConfig lacks is an error, not a skip."""
    usable, skipped = [], {}
    for spec in plan.methods:
        reason = method_available(spec.method)
        if reason is not None:
            skipped[spec.name] = reason
            continue
        check_keys([*spec.keys, *spec.fixed], f"method {spec.name}")
        usable.append(spec)
    check_keys(plan.finetune, "the fine-tuning budget")
    return usable, skipped


def training_jobs(plan: ProtocolPlan, methods: list[MethodSpec], paths: Paths, proxy_model: str) -> list[Job]:
    """The proxy's evaluation job and one job per (method, knob value), most expensive first."""
    jobs = [Job(PROXY_ID, "Pre-trained proxy", ("test", "val"), cost=0.5)]
    for spec in methods:
        for value in spec.points():
            run_id = spec.run_id(value)
            overrides = {**plan.finetune, **spec.overrides(value), "model": proxy_model,
                         "out_dir": str(paths.run_dir(run_id)), "eval_samples": 0,
                         "ckpt_every": max(1, plan.finetune["steps"] // 4), "log_every": 5}  # fmt: skip
            jobs.append(Job(run_id, spec.label(value), ("test", "val"), overrides, spec.name, value,
                            COST.get(spec.name, 1.0)))  # fmt: skip
    return sorted(jobs, key=lambda j: -j.cost)


def _train(job: Job, ctx: Context, paths: Paths) -> dict:
    record_path = paths.run_record(job.run_id)
    if record_path.is_file():
        record = json.loads(record_path.read_text(encoding="utf-8"))
        if record["overrides"] != json.loads(json.dumps(job.train)):
            raise ProtocolError(
                f"{record_path} was trained with other settings than this protocol asks for; delete "
                f"{record_path} and {paths.run_dir(job.run_id)} or choose another --out"
            )
        return record
    result = run_training(job.train, progress=ctx.progress)
    record = {"run_id": job.run_id, "label": job.label, "method": job.method, "value": job.value,
              "overrides": job.train, **result}  # fmt: skip
    record_path.parent.mkdir(parents=True, exist_ok=True)
    record_path.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    return record


def execute(job: Job, ctx: Context) -> dict:
    """Run one job in this process (a worker): train if needed, then evaluate its parts (cached)."""
    import torch

    torch.set_num_threads(ctx.threads)
    os.environ["ADVSIMPLEX_DATA"] = ctx.data_root
    paths = Paths(Path(ctx.out))
    handler = logging.FileHandler(paths.log_file(job.run_id), encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(message)s"))
    handler.setLevel(logging.INFO)
    root = logging.getLogger("advsimplex")
    if not logging.getLogger().handlers:  # a fresh worker process: its log file gets the progress messages
        root.setLevel(logging.INFO)
    root.addHandler(handler)
    try:
        t0 = time.perf_counter()
        fresh = job.train is not None and not paths.run_record(job.run_id).is_file()
        trained = _train(job, ctx, paths) if job.train is not None else None
        if fresh:  # a model trained now makes every evaluation of an earlier model of that name stale
            for part in PARTS:
                paths.eval_file(job.run_id, part).unlink(missing_ok=True)
        model = trained["model"] if trained else (job.model or ctx.proxy_model)
        seconds = {}
        for part in job.parts:
            t = time.perf_counter()
            evaluate_part(ctx.evaluation, part, model, job.run_id, paths.eval_file(job.run_id, part), ctx.data_root)
            seconds[part] = time.perf_counter() - t
        return {"run_id": job.run_id, "model": model, "train": trained, "eval_seconds": seconds,
                "wall_seconds": time.perf_counter() - t0}  # fmt: skip
    finally:
        root.removeHandler(handler)
        handler.close()


def cached_result(job: Job, ctx: Context) -> dict | None:
    """The result of ``job`` from the caches, if its training run and every evaluation part are finished
    with the settings it asks for (then no worker is started for it)."""
    paths = Paths(Path(ctx.out))
    trained = None
    if job.train is not None:
        path = paths.run_record(job.run_id)
        if not path.is_file():
            return None
        trained = json.loads(path.read_text(encoding="utf-8"))
        if trained["overrides"] != json.loads(json.dumps(job.train)):
            return None  # execute() names the conflict
    if not all(paths.eval_file(job.run_id, part).is_file() for part in job.parts):
        return None
    model = trained["model"] if trained else (job.model or ctx.proxy_model)
    return {"run_id": job.run_id, "model": model, "train": trained, "eval_seconds": {}, "wall_seconds": 0.0,
            "cached": True}  # fmt: skip


def run_jobs(jobs: list[Job], ctx: Context, workers: int, on_done: Callable[[Job, dict], None]) -> dict[str, str]:
    """Run ``jobs`` (in this process when ``workers`` is 1; finished ones are read from the caches);
    returns the error of each failed job."""
    Paths(Path(ctx.out)).log_file("x").parent.mkdir(parents=True, exist_ok=True)
    errors: dict[str, str] = {}
    todo = []
    for job in jobs:
        if (result := cached_result(job, ctx)) is not None:
            on_done(job, result)
        else:
            todo.append(job)
    jobs = todo
    if workers <= 1 or len(jobs) <= 1:
        for job in jobs:
            try:
                on_done(job, execute(job, ctx))
            except Exception:  # one failed run must not lose the others; reported at the end
                errors[job.run_id] = traceback.format_exc()
                log.error("%s failed:\n%s", job.run_id, errors[job.run_id])
        return errors
    with ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn")) as pool:
        futures = {pool.submit(execute, job, ctx): job for job in jobs}
        for future in as_completed(futures):
            job = futures[future]
            try:
                on_done(job, future.result())
            except Exception:
                errors[job.run_id] = traceback.format_exc()
                log.error("%s failed:\n%s", job.run_id, errors[job.run_id])
    return errors


def run_protocol(
    plan: ProtocolPlan,
    out: str | Path,
    *,
    cache: str | Path,
    data_root: str | Path,
    workers: int = 1,
    threads: int = 1,
    progress: bool = False,
) -> dict:
    """Run (or continue) the whole protocol into ``out``; returns the summary written to ``protocol.json``."""
    from .report import write_report

    t_start = time.perf_counter()
    started = datetime.now(timezone.utc).isoformat(timespec="seconds")
    out, data_root = Path(out), str(data_root)
    os.environ["ADVSIMPLEX_DATA"] = data_root
    paths = Paths(out)
    _check_plan_file(out, plan)
    methods, skipped = available_methods(plan)
    for name, reason in skipped.items():
        log.warning("method %s is left out: advsimplex.train does not offer it (%s)", name, reason)
    import torch

    torch.set_num_threads(threads)  # pre-training too: two threads on two shared cores ran 4× slower than one
    t0 = time.perf_counter()
    proxy_model, proxy = ensure_proxy(plan, cache, data_root, progress=progress)
    pretrain_seconds = time.perf_counter() - t0
    ctx = Context(plan.evaluation, str(out), data_root, str(proxy_model), threads, progress)
    jobs = training_jobs(plan, methods, paths, str(proxy_model))
    done: dict[str, dict] = {}
    ran = [0]

    def on_done(job: Job, result: dict, count_only: bool = False) -> None:
        ran[0] += 0 if result.get("cached") else 1
        if count_only:
            return
        done[job.run_id] = result
        if result.get("cached"):
            log.info("[%d] %s: finished before (cached)", len(done), job.run_id)
            return
        train = result["train"]
        what = f"train {train['wall_seconds']:.0f} s, " if train else ""
        evals = ", ".join(f"{p} {s:.0f} s" for p, s in result["eval_seconds"].items())
        log.info("[%d] %s done (%s%s)", len(done), job.run_id, what, evals)

    log.info("%d jobs (%d fine-tuning runs) on %d worker(s) × %d thread(s)", len(jobs), len(jobs) - 1, workers,
             threads)  # fmt: skip
    t_jobs = time.perf_counter()
    errors = run_jobs(jobs, ctx, workers, on_done)
    sweep_seconds = time.perf_counter() - t_jobs
    selection = choose_knobs(methods, paths, done_ids=set(done))
    aa_jobs = [Job(PROXY_ID, "Pre-trained proxy", ("autoattack",), cost=1.0)]
    for spec in methods:
        chosen = selection.get(spec.name)
        if chosen is not None and spec.run_id(chosen["value"]) in done:
            run_id = spec.run_id(chosen["value"])
            aa_jobs.append(Job(run_id, spec.label(chosen["value"]), ("autoattack",), method=spec.name,
                               value=chosen["value"], model=done[run_id]["model"]))  # fmt: skip
    t_aa = time.perf_counter()
    errors |= run_jobs(aa_jobs, ctx, workers, on_done=lambda job, result: on_done(job, result, count_only=True))
    aa_seconds = time.perf_counter() - t_aa
    timing = _timing(out, {"started": started, "wall_seconds": time.perf_counter() - t_start,
                           "pretrain_seconds": pretrain_seconds, "sweep_seconds": sweep_seconds,
                           "autoattack_seconds": aa_seconds, "workers": workers, "threads": threads,
                           "jobs_run": ran[0]})  # fmt: skip
    presets = write_presets(plan, methods, selection, out, str(proxy_model))
    summary = write_report(plan, out, methods=methods, skipped=skipped, proxy=proxy, selection=selection,
                           timing=timing, errors=errors, data_root=data_root, presets=presets)  # fmt: skip
    if errors:
        raise ProtocolError(f"{len(errors)} job(s) failed: {', '.join(errors)} (tracebacks in {out}/logs/ and "
                            f"{out}/protocol.json); the report covers the rest")  # fmt: skip
    return summary


def _timing(out: Path, this: dict) -> dict:
    """This invocation's timing, with every earlier invocation's (from ``protocol.json``) and their total."""
    earlier = []
    path = out / "protocol.json"
    if path.is_file():
        earlier = json.loads(path.read_text(encoding="utf-8")).get("timing", {}).get("invocations", [])
    invocations = [*earlier, this]
    return {**this, "invocations": invocations, "total_wall_seconds": sum(i["wall_seconds"] for i in invocations)}


def _check_plan_file(out: Path, plan: ProtocolPlan) -> None:
    """Record the plan in ``out/plan.json``, or refuse an ``out`` made with other settings."""
    path = out / "plan.json"
    fingerprint = plan.fingerprint()
    if path.is_file():
        saved = json.loads(path.read_text(encoding="utf-8"))
        if saved.get("fingerprint") != fingerprint:
            raise ProtocolError(
                f"{out} holds results of other protocol settings (fingerprint {saved.get('fingerprint')}, now "
                f"{fingerprint}{', --quick' if plan.quick else ''}); choose another --out or delete it"
            )
        return
    out.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"fingerprint": fingerprint, "plan": plan.to_dict()}, indent=2) + "\n",
                    encoding="utf-8")  # fmt: skip
