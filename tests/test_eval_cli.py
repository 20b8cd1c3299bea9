"""``advsimplex-eval`` end to end on checkpoints saved here, and its input errors."""

import importlib.metadata
import json
import subprocess
import sys

import pytest
import torch
from eval_support import MODEL, fitted_model, single_thread, write_fitted_npz  # noqa: F401 (autouse fixture)

from advsimplex.evaluation.cli import main
from advsimplex.models import load_clip, save_clip


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    model, _, name = fitted_model()
    save_clip(root / "micro-fitted.safetensors", model, name, note="60 Adam steps on 32 CIFAR-10 images")
    torch.manual_seed(3)
    random, _, _ = load_clip(MODEL)
    save_clip(root / "micro-random.safetensors", random, name)
    torch.save(model.state_dict(), root / "fitted-weights.pt")  # an open_clip name + pretrained file
    write_fitted_npz(root / "fit.npz")
    return root


def test_end_to_end_writes_json_markdown_and_png(files, tmp_path, capsys):
    out = tmp_path / "out"
    argv = [
        "--model", str(files / "micro-random.safetensors"), "--model", str(files / "micro-fitted.safetensors"),
        "--model", MODEL, "--pretrained", "-", "--pretrained", "-", "--pretrained", str(files / "fitted-weights.pt"),
        "--label", "random", "--label", "fitted", "--label", "fitted (open_clip name)",
        "--dataset", "cifar10", "--dataset", f"npz:{files / 'fit.npz'}", "--samples", "16",
        "--attacks", "pgd,cw,autoattack,simplex", "--eps", "1/255,16/255", "--pgd-steps", "10", "--cw-steps", "5",
        "--aa-iters", "5", "--simplex-steps", "4", "--simplex-samples", "3", "--batch-size", "8", "--seed", "1",
        "--device", "cpu", "--out", str(out), "--quiet",
    ]  # fmt: skip
    assert main(argv) == 0
    data = json.loads((out / "results.json").read_text())
    records = data["records"]
    assert data["format"] == "advsimplex.eval/1" and data["config"]["seed"] == 1
    assert len(records) == 3 * 2 * (1 + 4 * 2)
    for r in records:
        for key in ("model", "dataset", "attack", "eps", "accuracy", "samples", "seed", "settings", "templates"):
            assert key in r
        assert r["samples"] == 16 and r["seed"] == 1
    acc = {(r["model"], r["dataset"].split(":")[0], r["attack"], r["eps"]): r["accuracy"] for r in records}
    assert acc[("fitted", "npz", "clean", 0.0)] >= 0.9 > acc[("random", "npz", "clean", 0.0)]
    assert acc[("fitted", "npz", "pgd", 16 / 255)] < acc[("fitted", "npz", "clean", 0.0)]
    for key, value in acc.items():  # the name + pretrained-file route loads the same weights
        if key[0] == "fitted":
            assert acc[("fitted (open_clip name)", *key[1:])] == value
    md = (out / "report.md").read_text()
    assert "| model | CIFAR-10 | npz:" in md and "| fitted |" in md and "| random |" in md and "Average" in md
    assert "## AutoAttack, ε = 16/255" in md and md in capsys.readouterr().out
    png = (out / "robustness.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize(
    ("args", "message"),
    [(["--eps=-1/255"], "--eps: -1/255 = -0.00392157 is outside [0, 1]"), (["--eps", "abc"], "--eps: 'abc' is not"),
     (["--eps", "2"], "outside [0, 1]"), (["--attacks", "pgd,fgsm"], "--attacks: unknown attack 'fgsm'"),
     (["--dataset", "mnist"], "unknown dataset 'mnist'"), (["--pgd-steps", "0"], "--pgd-steps: pgd_steps must be"),
     (["--pgd-alpha", "1/0"], "--pgd-alpha: '1/0' is not"), (["--samples", "0"], "--samples must be a positive"),
     (["--dataset", "dtd", "--data-root", "{root}"], "'dtd' (DTD) not found"),
     (["--attacks", "simplex-transfer"], "needs --source-model"),
     (["--label", "a", "--label", "b"], "--label: give one"),
     (["--pretrained", "a", "--pretrained", "b"], "--pretrained: give it once")],
)  # fmt: skip
def test_bad_input_exits_with_a_clear_message(files, tmp_path, capsys, args, message):
    argv = ["--model", str(files / "micro-fitted.safetensors"), "--out", str(tmp_path), "--quiet"]
    argv += [a.replace("{root}", str(tmp_path)) for a in args]
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "results.json").exists()


def test_missing_checkpoint(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["--model", str(tmp_path / "none.safetensors"), "--out", str(tmp_path), "--quiet"])
    assert "none.safetensors' does not exist" in capsys.readouterr().err


def test_console_script_and_module_entry_points():
    scripts = {e.name: e.value for e in importlib.metadata.entry_points(group="console_scripts")}
    assert scripts.get("advsimplex-eval") == "advsimplex.evaluation.cli:main"
    run = subprocess.run([sys.executable, "-m", "advsimplex.evaluation", "--list-datasets"], capture_output=True,
                         text=True, timeout=120)  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert "| pcam | PCAM | test |" in run.stdout and "| cifar10 | CIFAR-10 | test |" in run.stdout
