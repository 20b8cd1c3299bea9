"""The evaluation runner, dataset suite, prompt templates and reports."""

import json
import logging

import numpy as np
import pytest
from eval_support import fitted_model, single_thread, write_fitted_npz  # noqa: F401 (autouse fixture)

from advsimplex.evaluation import (
    ATTACKS,
    PAPER_SUITE,
    AttackSettings,
    DatasetNotFoundError,
    EvalConfig,
    ModelSpec,
    evaluate,
    markdown_report,
    parse_templates,
    plot_robustness,
    resolve_datasets,
    subset_indices,
)
from advsimplex.evaluation.runner import EvaluationInputError
from advsimplex.evaluation.suite import SUITE, suite_table
from advsimplex.models import save_clip

FAST = AttackSettings(pgd_steps=5, cw_steps=5, aa_iters=5, simplex_steps=4, simplex_samples=3)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("eval")
    model, _, name = fitted_model()
    save_clip(root / "fitted.safetensors", model, name)
    write_fitted_npz(root / "fit.npz")
    return root


def config(files, **kwargs) -> EvalConfig:
    base = dict(
        models=[ModelSpec(str(files / "fitted.safetensors"))], datasets=[f"npz:{files / 'fit.npz'}"],
        eps=(4 / 255,), attacks=("pgd",), settings=FAST, batch_size=12, seed=0, device="cpu",
    )  # fmt: skip
    base.update(kwargs)
    return EvalConfig(**base)


def test_eps_zero_equals_clean_accuracy(files):
    cfg = config(files, eps=(0.0,), attacks=ATTACKS, source=ModelSpec(str(files / "fitted.safetensors")))
    records = evaluate(cfg)
    clean = [r for r in records if r["attack"] == "clean"]
    assert len(clean) == 1 and len(records) == 1 + len(ATTACKS)
    assert clean[0]["accuracy"] >= 0.9  # the fitted model on its own images
    for r in records:
        assert r["accuracy"] == clean[0]["accuracy"] and r["correct"] == clean[0]["correct"], r["attack"]
        assert r["samples"] == 32 and r["seed"] == 0 and r["num_classes"] == 4


def test_records_are_deterministic_under_a_seed(files):
    cfg = config(files, eps=(2 / 255, 8 / 255), attacks=("pgd", "cw", "autoattack", "simplex"), samples=20)
    strip = lambda rs: [{k: v for k, v in r.items() if k != "seconds"} for r in rs]
    first, second = strip(evaluate(cfg)), strip(evaluate(cfg))
    assert first == second
    assert {r["samples"] for r in first} == {20} and {r["subset"] for r in first} == {"random"}
    robust = {(r["attack"], r["eps"]): r["accuracy"] for r in first}
    clean = robust[("clean", 0.0)]
    assert all(acc <= clean for acc in robust.values())
    assert robust[("pgd", 8 / 255)] < clean  # the attacks do something on this model


def test_subset_indices():
    a = subset_indices(1000, 50, seed=0)
    assert len(a) == 50 == len(set(a)) and a == sorted(a) and 0 <= a[0] and a[-1] < 1000
    assert a == subset_indices(1000, 50, seed=0) and a != subset_indices(1000, 50, seed=1)
    assert subset_indices(10, None, 0) == list(range(10)) == subset_indices(10, 99, 0)


def test_config_errors_name_the_option(files):
    with pytest.raises(ValueError, match="--eps values must lie in"):
        config(files, eps=(-1 / 255,)).validate()
    with pytest.raises(ValueError, match="unknown attack"):
        config(files, attacks=("pgd", "fgsm")).validate()
    with pytest.raises(ValueError, match="needs --source-model"):
        config(files, attacks=("simplex-transfer",)).validate()
    with pytest.raises(ValueError, match="--samples must be a positive int"):
        config(files, samples=0).validate()
    with pytest.raises(ValueError, match="labels must be unique"):
        config(files, models=[ModelSpec("a.safetensors"), ModelSpec("x/a.safetensors")]).validate()
    with pytest.raises(EvaluationInputError, match=r"--model .*does not exist"):
        evaluate(config(files, models=[ModelSpec(str(files / "nowhere.safetensors"))]))
    with pytest.raises(EvaluationInputError, match="unknown dataset 'mnist'"):
        evaluate(config(files, datasets=["mnist"]))


def test_transfer_needs_one_pixel_space(files, tmp_path):
    import open_clip

    from advsimplex.models import load_clip, model_config

    cfg16 = model_config("advsimplex-micro-vit")
    cfg16["vision_cfg"]["image_size"] = 16  # the micro model at 16×16 pixels
    (tmp_path / "test-micro-16px.json").write_text(json.dumps(cfg16))
    open_clip.add_model_config(tmp_path / "test-micro-16px.json")
    other, _, name = load_clip("test-micro-16px")
    save_clip(tmp_path / "micro16.safetensors", other, name)
    cfg = config(files, attacks=("simplex-transfer",), source=ModelSpec(str(tmp_path / "micro16.safetensors")))
    with pytest.raises(EvaluationInputError, match="one pixel space"):
        evaluate(cfg)


# ---- dataset suite -------------------------------------------------------------------------------------------


def test_paper_suite_is_the_fifteen_sets():
    refs = resolve_datasets(["paper"])
    assert [r.name for r in refs] == list(PAPER_SUITE) and len(refs) == 15
    assert [r.title for r in refs][:3] == ["ImageNet", "CIFAR-10", "CIFAR-100"]
    for entry in SUITE.values():  # every entry documents where its files are expected
        assert entry.required and entry.layout and entry.split in ("test", "val", "all")
    assert [r.name for r in resolve_datasets(["CIFAR-10", "oxford_pets", "cifar10"])] == ["cifar10", "pets"]


def test_unknown_and_missing_datasets(tmp_path, caplog):
    with pytest.raises(ValueError, match=r"unknown dataset 'mnist'.*imagenet, cifar10"):
        resolve_datasets(["mnist"])
    with pytest.raises(ValueError, match="names no file"):
        resolve_datasets(["npz:"])
    ref = resolve_datasets(["cifar100"])[0]
    with pytest.raises(DatasetNotFoundError, match=r"'cifar100' \(CIFAR-100\) not found.*cifar-100-python/test"):
        ref.check(tmp_path)
    assert "| cifar100 | CIFAR-100 | test |" in suite_table(tmp_path)


def test_skip_missing(files, tmp_path, caplog):
    (tmp_path / "cifar10").mkdir()
    (tmp_path / "cifar10" / "test.npz").symlink_to(files / "fit.npz")
    cfg = config(files, datasets=["cifar10", "dtd"], data_root=str(tmp_path), attacks=("pgd",), samples=8)
    with pytest.raises(DatasetNotFoundError, match=r"'dtd' \(DTD\) not found.*dtd/dtd/images"):
        evaluate(cfg)
    cfg.skip_missing = True
    with caplog.at_level(logging.WARNING, logger="advsimplex.evaluation"):
        records = evaluate(cfg)
    assert {r["dataset"] for r in records} == {"cifar10"} and "skipping dtd" in caplog.text
    cfg.datasets = ["dtd"]
    with pytest.raises(DatasetNotFoundError, match="none of the requested datasets is present"):
        evaluate(cfg)


def test_eurosat_tree_through_torchvision(tmp_path):
    from PIL import Image

    folders = ["AnnualCrop", "Forest", "HerbaceousVegetation", "Highway", "Industrial", "Pasture", "PermanentCrop",
               "Residential", "River", "SeaLake"]  # fmt: skip
    for i, name in enumerate(folders):
        (tmp_path / "eurosat" / "2750" / name).mkdir(parents=True)
        Image.fromarray(np.full((64, 64, 3), 20 * i, np.uint8)).save(tmp_path / "eurosat" / "2750" / name / "0.jpg")
    data = resolve_datasets(["eurosat"])[0].open(tmp_path, (8, 8))
    assert len(data) == 10 and data.classes[2] == "brushland or shrubland" and data.classes[9] == "lake or sea"
    x, y = data.dataset[9]
    assert x.shape == (3, 8, 8) and y == 9 and 0 <= x.min() and x.max() <= 1


def test_imagenet_needs_its_thousand_folders(tmp_path):
    from PIL import Image

    for wnid in ("n01440764", "n01443537"):
        (tmp_path / "imagenet" / "val" / wnid).mkdir(parents=True)
        Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "imagenet" / "val" / wnid / "a.JPEG")
    with pytest.raises(ValueError, match="has 2 class folders, expected 1000"):
        resolve_datasets(["imagenet"])[0].open(tmp_path, (8, 8))


# ---- prompt templates ----------------------------------------------------------------------------------------


def test_templates(tmp_path):
    assert parse_templates(None).for_dataset("cifar10") == ("This is a photo of a {}",)
    openai = parse_templates(["openai"])
    assert len(openai.for_dataset("cifar10")) == 18 and openai.for_dataset("cifar10")[0] == "a photo of a {}."
    assert len(openai.for_dataset("imagenet")) == 80 and all("{}" in t for t in openai.for_dataset("imagenet"))
    assert openai.for_dataset("caltech256") == openai.for_dataset(None) == openai.for_dataset("imagenet")
    assert len(parse_templates("simple-imagenet").for_dataset(None)) == 7
    assert parse_templates(["a {} photo", "art of a {}"]).for_dataset("x") == ("a {} photo", "art of a {}")
    (tmp_path / "t.txt").write_text("# mine\na {}.\n\nthe {}.\n")
    assert parse_templates([str(tmp_path / "t.txt")]).for_dataset(None) == ("a {}.", "the {}.")
    (tmp_path / "t.json").write_text(json.dumps({"cifar10": ["c {}"], "default": ["d {}"]}))
    spec = parse_templates([str(tmp_path / "t.json")])
    assert spec.for_dataset("cifar10") == ("c {}",) and spec.for_dataset("dtd") == ("d {}",)
    with pytest.raises(ValueError, match="--templates: 'photo' is neither"):
        parse_templates(["photo"])
    with pytest.raises(ValueError, match="must contain one '\\{\\}'"):
        parse_templates(["a {}", "no placeholder"])


# ---- reports -------------------------------------------------------------------------------------------------


def _record(model, dataset, attack, eps, acc):
    return {"model": model, "dataset": dataset, "dataset_title": dataset.upper(), "attack": attack, "eps": eps,
            "eps_label": f"{round(eps * 255)}/255" if attack != "clean" else "0", "accuracy": acc, "samples": 10,
            "dataset_size": 100, "seed": 0, "templates": ["t {}"], "environment": {"device": "cpu"},
            "settings": {"steps": 10, "alpha": eps / 4} if attack != "clean" else {}}  # fmt: skip


def test_markdown_table_and_plot(tmp_path):
    records = [
        _record("m1", "a", "clean", 0.0, 0.50), _record("m1", "b", "clean", 0.0, 0.70),
        _record("m2", "a", "clean", 0.0, 0.40), _record("m2", "b", "clean", 0.0, 0.20),
        _record("m1", "a", "pgd", 1 / 255, 0.25), _record("m1", "b", "pgd", 1 / 255, 0.35),
        _record("m2", "a", "pgd", 1 / 255, 0.10), _record("m2", "b", "pgd", 1 / 255, 0.00),
    ]  # fmt: skip
    md = markdown_report(records)
    assert "| model | A | B | Average |" in md
    assert "| m1 | 50.0 | 70.0 | 60.0 |" in md and "| m2 | 40.0 | 20.0 | 30.0 |" in md
    assert "## PGD-10, ε = 1/255" in md and "| m1 | 25.0 | 35.0 | 30.0 |" in md
    assert "| model | Clean | PGD-10 1/255 |" in md and "| m2 | 30.0 | 5.0 |" in md
    assert "alpha=ε/4" in md
    path = plot_robustness(records, tmp_path / "plot.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 10_000
    with pytest.raises(ValueError, match="no records"):
        markdown_report([])


def test_results_are_json_serialisable(files):
    records = evaluate(config(files, samples=4))
    json.dumps(records)
    r = records[-1]
    assert r["attack"] == "pgd" and r["eps_label"] == "4/255" and r["settings"]["alpha"] == pytest.approx(1 / 255)
    assert r["model"] == "fitted" and r["environment"]["device"] == "cpu" and r["templates"]
