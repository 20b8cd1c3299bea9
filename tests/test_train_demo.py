"""The demo (``python -m advsimplex``) end to end, on tiny stand-ins for its three presets."""

from __future__ import annotations

import json

import pytest
from test_train_support import single_thread, write_cifar_slice

from advsimplex import __main__ as entry
from advsimplex.train import demo


@pytest.fixture(autouse=True)
def _one_thread():
    with single_thread():
        yield


def test_demo_runs_the_stages_and_reports_before_and_after(tmp_path, monkeypatch, capsys):
    npz = write_cifar_slice(tmp_path / "c10.npz", "train", 32)
    common = f"dataset: npz:{npz}\nsteps: 2\nbatch_size: 8\nlr: 1.0e-3\ntensorboard: false\n"
    (tmp_path / "pre.yaml").write_text(f"model: advsimplex-micro-vit\nmethod: clip\n{common}")
    (tmp_path / "adv.yaml").write_text(f"method: advsimplex\nattack_steps: 3\neps: 1/255\nalpha: 0.5/255\n{common}")
    (tmp_path / "tec.yaml").write_text("base: adv.yaml\nmethod: tecoa\n")
    stages = tuple((name, str(tmp_path / f"{file}.yaml"), label) for (name, _, label), file in
                   zip(demo.STAGES, ("pre", "adv", "tec")))  # fmt: skip
    monkeypatch.setattr(demo, "STAGES", stages)
    out = tmp_path / "out"
    assert entry.main(["--out", str(out), "--samples", "24", "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "advsimplex 0." in printed  # the short installation report comes first
    assert "| + AdvSimplex fine-tuning |" in printed and "| + TeCoA fine-tuning (same budget) |" in printed
    summary = json.loads((out / "summary.json").read_text())
    rows = {r["stage"]: r for r in summary["rows"]}
    assert list(rows) == ["pretrain", "advsimplex", "tecoa"] and summary["samples"] == 24
    assert all(0 <= r["clean"] <= 1 and 0 <= r["pgd"] <= 1 for r in rows.values())
    budget = ("steps", "batch_size", "attack_steps", "eps", "alpha")
    assert (
        [rows["advsimplex"][k] for k in budget] == [rows["tecoa"][k] for k in budget] == [2, 8, 3, 1 / 255, 0.5 / 255]
    )
    assert (out / "eval" / "results.json").is_file() and (out / "table.md").is_file()
    assert rows["advsimplex"]["model"] == str(out / "advsimplex" / "model.safetensors")

    # --resume finds every stage finished: nothing is trained again and the numbers repeat
    assert demo.main(["--out", str(out), "--samples", "24", "--no-progress", "--resume"]) == 0
    again = {r["stage"]: r for r in json.loads((out / "summary.json").read_text())["rows"]}
    assert all(again[s]["train_seconds"] == 0 for s in again)
    assert [(r["clean"], r["pgd"]) for r in again.values()] == [(r["clean"], r["pgd"]) for r in rows.values()]


def test_info_prints_the_installation_report(capsys):
    assert entry.main(["--info"]) == 0
    printed = capsys.readouterr().out
    assert "torch" in printed and "backends:" in printed


def test_bad_demo_options(capsys):
    with pytest.raises(SystemExit):
        demo.main(["--eps", "9"])
    assert "--eps must lie in (0, 1]" in capsys.readouterr().err
