"""The offline zero-shot protocol: its plan, knob choice, errors, and the --quick run end to end (resumed)."""

import json
import math

import pytest

from advsimplex.evaluation import write_results
from advsimplex.protocol import ProtocolError, build_plan
from advsimplex.protocol.cli import main
from advsimplex.protocol.pipeline import PROXY_ID, Paths, _check_plan_file, available_methods, training_jobs
from advsimplex.protocol.proxy import caption_templates
from advsimplex.protocol.selection import choose_knobs, val_score
from advsimplex.protocol.settings import MethodSpec, ProtocolPlan
from advsimplex.protocol.training import check_keys, method_available

METHODS = ["advsimplex", "advsimplex-taylor2", "sampled", "tecoa", "fare", "pmg", "trades", "agft"]


def test_full_plan_sweeps_every_method_at_equal_budget(tmp_path):
    plan = build_plan()
    assert [m.name for m in plan.methods] == METHODS
    assert {len(m.points()) for m in plan.methods if m.keys} == {3} and plan.methods[3].points() == [None]
    ft = plan.finetune
    assert (ft["attack_steps"], ft["eps"], ft["alpha"], ft["dataset"]) == (10, 2 / 255, 1 / 255, "tinyimagenet:fit")
    assert plan.evaluation.eps == (1 / 255, 2 / 255) and plan.evaluation.pgd_steps == 20
    jobs = training_jobs(plan, list(plan.methods), Paths(tmp_path), "proxy.safetensors")
    runs = [j for j in jobs if j.run_id != PROXY_ID]
    assert len(runs) == 22 == len({j.run_id for j in runs})
    shared = {k: v for k, v in runs[0].train.items() if k in ft}
    for job in runs:  # every run: the same budget, the proxy as start, its own method and knob value only
        assert {k: job.train[k] for k in ft} == shared == ft and job.train["model"] == "proxy.safetensors"
        spec = next(m for m in plan.methods if m.name == job.method)
        assert {k: job.train[k] for k in spec.keys} == dict.fromkeys(spec.keys, job.value)
    assert [j.cost for j in jobs] == sorted((j.cost for j in jobs), reverse=True)  # long jobs start first
    pmg = next(j for j in runs if j.run_id == "pmg-w3")
    assert pmg.train["pmg_orig_weight"] == pmg.train["pmg_clean_weight"] == 3.0 and pmg.label == "PMG-AFT w=3"
    quick = build_plan(quick=True)
    assert {len(m.points()) for m in quick.methods if m.keys} == {2} and quick.fingerprint() != plan.fingerprint()


def test_plan_choices_and_errors(tmp_path):
    plan = build_plan().with_methods(["tecoa", "advsimplex"])
    assert [m.name for m in plan.methods] == ["advsimplex", "tecoa"]
    with pytest.raises(ValueError, match=r"--methods: unknown method\(s\) madry; choose from advsimplex"):
        build_plan().with_methods(["madry"])
    with pytest.raises(ProtocolError, match=r"sets TrainConfig key\(s\) no_such_key, which this version"):
        check_keys(["lam", "no_such_key"], "method x")
    assert method_available("tecoa") is None
    assert "method" in method_available("no-such-method")
    bad = MethodSpec("bad", "tecoa", "Bad", "q", "q", ("no_such_knob",), (1.0,))
    missing = MethodSpec("gone", "no-such-method", "Gone")
    full = build_plan()
    with pytest.raises(ProtocolError, match="method bad sets TrainConfig key"):
        available_methods(ProtocolPlan(False, (bad,), {}, full.finetune, full.evaluation))
    usable, skipped = available_methods(ProtocolPlan(False, (missing,), {}, full.finetune, full.evaluation))
    assert usable == [] and "no-such-method" in skipped["gone"]
    _check_plan_file(tmp_path, plan)
    _check_plan_file(tmp_path, plan)  # the same settings: accepted
    with pytest.raises(ProtocolError, match=r"holds results of other protocol settings .*--quick"):
        _check_plan_file(tmp_path, build_plan(quick=True))


def test_caption_templates_cover_every_sets_prompts():
    templates = caption_templates()
    assert len(templates) == 102 == len(set(templates)) and all(t.count("{}") == 1 for t in templates)
    assert "This is a photo of a {}" in templates and 'a centered photo of a "{}" traffic sign.' in templates
    assert "a centered satellite photo of {}." in templates and "a bad photo of a {}." in templates
    assert len(caption_templates("first")) == 7


def val_records(model, clean, robust):
    out = []
    for d in ("a", "b"):
        out.append({"model": model, "dataset": d, "attack": "clean", "eps": 0.0, "accuracy": clean})
        out += [{"model": model, "dataset": d, "attack": "pgd", "eps": e, "accuracy": r} for e, r in robust.items()]
    return out


def test_knob_choice_uses_only_the_held_out_parts(tmp_path):
    assert math.isclose(val_score(val_records("m", 0.6, {1 / 255: 0.3, 2 / 255: 0.1})), (0.6 + 0.2) / 2)
    with pytest.raises(ValueError, match="needs clean and robust records"):
        val_score(val_records("m", 0.6, {}))
    spec = MethodSpec("trades", "trades", "TRADES", "β", "beta", ("trades_beta",), (1.0, 3.0, 9.0))
    tecoa = MethodSpec("tecoa", "tecoa", "TeCoA")
    paths = Paths(tmp_path)
    scores = {"trades-beta1": (0.875, 0.0625), "trades-beta3": (0.75, 0.25), "trades-beta9": (0.5, 0.5),
              "tecoa": (0.5, 0.25)}  # fmt: skip
    for run_id, (clean, robust) in scores.items():
        write_results(paths.eval_file(run_id, "val"), val_records(run_id, clean, {1 / 255: robust, 2 / 255: robust}))
        # the test part says otherwise: it must not matter
        write_results(paths.eval_file(run_id, "test"), val_records(run_id, 1 - clean, {1 / 255: 1 - robust}))
    chosen = choose_knobs([spec, tecoa], paths, done_ids=set(scores))
    assert chosen["trades"]["value"] == 3.0 and chosen["trades"]["run_id"] == "trades-beta3"  # 0.5 beats 0.46875
    assert chosen["trades"]["scores"]["trades-beta9"] == 0.5  # a tie keeps the first value
    assert chosen["tecoa"]["value"] is None
    assert choose_knobs([spec], paths, done_ids={"trades-beta9"})["trades"]["value"] == 9.0  # only finished runs


def _outputs(out):
    results = json.loads((out / "results.json").read_text())["records"]
    return {(r["model"], r["part"], r["dataset"], r["attack"], r["eps"]): r["accuracy"] for r in results}


def _check_presets(out, summary):
    """Each chosen run is written as a preset that trains exactly that run (same keys but the run bookkeeping)."""
    from advsimplex.train import load_config

    bookkeeping = {"out_dir", "resume", "eval_samples", "ckpt_every", "log_every", "progress", "tensorboard"}
    assert set(summary["presets"]) == set(summary["selection"])
    for method, path in summary["presets"].items():
        chosen = summary["selection"][method]
        preset = load_config(path).to_dict()
        trained = load_config(str(out / "runs" / chosen["run_id"] / "config.yaml")).to_dict()
        differing = {k for k in preset if preset[k] != trained[k]} - bookkeeping
        assert not differing, (method, {k: (preset[k], trained[k]) for k in differing})
    assert "## Defaults from the sweep" in (out / "report.md").read_text()


@pytest.mark.slow
def test_quick_protocol_end_to_end_and_resume(tmp_path, capsys):
    out, cache = tmp_path / "out", tmp_path / "cache"
    args = ["--quick", "--out", str(out), "--cache", str(cache), "--workers", "2", "--quiet"]
    assert main(args) == 0
    report = (out / "report.md").read_text()
    summary = json.loads((out / "protocol.json").read_text())
    offered = [m.name for m in build_plan(quick=True).methods if method_available(m.method) is None]
    assert set(summary["selection"]) == set(offered) and len(offered) >= 7
    assert set(summary["skipped_methods"]) == set(METHODS) - set(offered) and not summary["errors"]
    runs = {r["run_id"]: r for r in summary["runs"]}
    assert len(runs) == 1 + sum(1 if m == "tecoa" else 2 for m in offered)
    for r in runs.values():
        assert set(r["test"]) == {"clean", "pgd@1/255", "pgd@2/255"} and set(r["val"]) == set(r["test"])
        assert (r["autoattack"] is not None and "autoattack@1/255" in r["autoattack"]) == r["chosen"]
    records = _outputs(out)
    assert len({k[2] for k in records if k[1] == "test"}) == 7 and len({k[2] for k in records if k[1] == "val"}) == 7
    for heading in ("## The proxy's clean zero-shot accuracy", "### Clean accuracy", "### PGD-2, ε = 1/255",
                    "### PGD-2, ε = 2/255", "### AutoAttack, ε = 1/255", "## Every point of the sweep"):  # fmt: skip
        assert heading in report, heading
    assert "| TRADES | β=3" in report and "| Pre-trained proxy |" in report
    assert (out / "tradeoff.png").stat().st_size > 10_000
    _check_presets(out, summary)
    assert (cache / next(p.name for p in cache.iterdir()) / "model.safetensors").is_file()
    # interrupt: lose one fine-tuned model and one evaluation part; the rerun redoes exactly those (a retrained
    # model is evaluated again, AutoAttack included if it is the chosen one)
    victim = "trades-beta3"
    victim_chosen = summary["selection"]["trades"]["run_id"] == victim
    (out / "runs" / f"{victim}.json").unlink()
    for p in (out / "runs" / victim).rglob("*"):
        p.unlink() if p.is_file() else None
    (out / "evals" / "tecoa.val.json").unlink()
    kept = {p.name: p.stat().st_mtime_ns for p in (out / "evals").iterdir() if not p.name.startswith(victim)}
    capsys.readouterr()
    assert main(args) == 0
    changed = {n for n, t in kept.items() if (out / "evals" / n).stat().st_mtime_ns != t}
    assert changed == set()
    assert (out / "evals" / "tecoa.val.json").is_file() and (out / "runs" / f"{victim}.json").is_file()
    assert _outputs(out) == records  # the same numbers: training and evaluation are deterministic
    summary = json.loads((out / "protocol.json").read_text())
    assert len(summary["timing"]["invocations"]) == 2 and summary["timing"]["jobs_run"] == 2 + victim_chosen


def test_shipped_proxy_preset_is_the_sweeps_choice():
    """``configs/train/proxy-advsimplex.yaml`` is the protocol's generated preset for AdvSimplex, copied verbatim:
    its λ is one of the swept values, it names the plan it came from and it holds exactly that run's keys."""
    import yaml

    from advsimplex.protocol.presets import preset_values
    from advsimplex.protocol.proxy import proxy_dir
    from advsimplex.train import load_config
    from advsimplex.train.presets import resolve_config_path

    plan = build_plan()
    spec = next(m for m in plan.methods if m.name == "advsimplex")
    path = resolve_config_path("proxy-advsimplex")
    text = path.read_text(encoding="utf-8")
    values = yaml.safe_load(text)
    assert values["lam"] in spec.values
    assert f"Protocol fingerprint {plan.fingerprint()};" in text
    assert values["model"] == str(proxy_dir(plan, "runs/proxy") / "model.safetensors")
    assert values == preset_values(plan, spec, values["lam"], values["model"])
    cfg = load_config("proxy-advsimplex")
    assert cfg.method == "advsimplex" and cfg.variant == "paper" and cfg.lam == values["lam"]
