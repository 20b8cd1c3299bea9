"""The offline suite: the seven 32×32 array sets by name, held-out parts, unions, templates, tables, plot."""

import json

import numpy as np
import pytest
import torch

from advsimplex.data import default_data_root, load_dataset
from advsimplex.data.folders import OFFLINE_SETS, UnionImages, heldout_indices, open_source, union_source
from advsimplex.evaluation import markdown_report, parse_templates, resolve_datasets
from advsimplex.evaluation.cli import main
from advsimplex.evaluation.report import plot_tradeoff
from advsimplex.evaluation.suite import OFFLINE_SUITE, OFFLINE_VAL_SUITE, PAPER_SUITE, SUITE, suite_table

ROOT = default_data_root()
NAMES = ["tinyimagenet", "cifar10", "caltech101", "flowers102", "eurosat", "gtsrb", "dtd10"]


def write_set(root, name, train_labels, test_labels, classes):
    (root / name).mkdir(parents=True)
    for split, labels in (("train", train_labels), ("test", test_labels)):
        labels = np.asarray(labels, dtype=np.int64)
        images = (np.arange(len(labels) * 4 * 4 * 3) % 251).astype(np.uint8).reshape(len(labels), 4, 4, 3)
        images[:, 0, 0, 0] = np.arange(len(labels))  # identifies each image
        np.savez(root / name / f"{split}.npz", images=images, labels=labels, classes=np.array(classes))


def test_offline_suite_names_and_templates():
    assert [s.folder for s in OFFLINE_SETS] == NAMES
    assert list(OFFLINE_SUITE) == [f"{n}-32" for n in NAMES]
    assert list(OFFLINE_VAL_SUITE) == [f"{n}-32-val" for n in NAMES]
    assert not set(OFFLINE_SUITE) & set(PAPER_SUITE)  # the paper's caltech101/flowers102/eurosat keep their names
    assert [r.name for r in resolve_datasets(["Offline"])] == list(OFFLINE_SUITE)
    assert [r.name for r in resolve_datasets(["offline_val", "caltech-101-32"])] == [*OFFLINE_VAL_SUITE,
                                                                                    "caltech101-32"]  # fmt: skip
    openai = parse_templates("openai")
    expected = {"tinyimagenet": 80, "cifar10": 18, "caltech101": 34, "flowers102": 1, "eurosat": 3, "gtsrb": 3,
                "dtd10": 8}  # fmt: skip
    for spec in OFFLINE_SETS:
        for name in (spec.name, spec.val_name):
            assert SUITE[name].template_key == spec.template_key
        assert len(openai.for_dataset(spec.template_key)) == expected[spec.folder], spec.folder
    assert openai.for_dataset("gtsrb")[0] == 'a zoomed in photo of a "{}" traffic sign.'
    assert parse_templates("paper").for_dataset("gtsrb") == ("This is a photo of a {}",)


def test_offline_sets_open_from_the_data_root():
    refs = resolve_datasets(["offline", "offline-val"])
    for ref in refs:
        data = ref.open(ROOT, (16, 16))
        x, y = data.dataset[len(data) - 1]
        assert x.shape == (3, 16, 16) and x.dtype == torch.float32 and 0 <= y < len(data.classes)
        assert data.location.startswith(str(ROOT)) and data.template_key is not None
    tiny = resolve_datasets(["tinyimagenet-32"])[0].open(ROOT, None)
    tiny_val = resolve_datasets(["tinyimagenet-32-val"])[0].open(ROOT, None)
    assert (len(tiny), len(tiny.classes), tiny.split) == (2000, 200, "test")
    assert (len(tiny_val), tiny_val.split) == (2000, "val")  # 10 of every class's 100 training images


def test_heldout_partition_is_stratified_disjoint_and_fixed():
    labels = torch.tensor([0] * 20 + [1] * 3 + [2] * 1 + [3] * 7)
    held = heldout_indices(labels, "some-set")
    assert held.dtype == torch.int64 and torch.equal(held, torch.sort(held).values)
    counts = torch.bincount(labels[held], minlength=4).tolist()
    assert counts == [2, 1, 0, 1]  # round(10 %), at least one per class of two or more, none of a single image
    assert torch.equal(held, heldout_indices(labels.numpy(), "some-set"))
    assert not torch.equal(held, heldout_indices(labels, "another-set"))
    with pytest.raises(ValueError, match=r"labels must be 1-d \(N,\), got shape \(2, 2\)"):
        heldout_indices(torch.zeros(2, 2), "x")
    with pytest.raises(ValueError, match=r"fraction must lie in \(0, 1\), got 1.5"):
        heldout_indices(labels, "x", fraction=1.5)


def test_named_sources_parts_and_unions(tmp_path):
    write_set(tmp_path, "a", [0] * 10 + [1] * 10, [0, 1, 1], ["cat", "dog"])
    write_set(tmp_path, "b", [0] * 5 + [1] * 5, [1, 0], ["dog", "car"])
    whole = open_source("a", "train", None, root=tmp_path)
    fit, val = (open_source(f"a:{p}", "train", None, root=tmp_path) for p in ("fit", "val"))
    assert len(whole) == 20 and len(fit) + len(val) == 20 and len(val) == 2
    ids = lambda d: {int(d[i][0][0, 0, 0] * 255 + 0.5) for i in range(len(d))}
    assert ids(fit).isdisjoint(ids(val)) and ids(fit) | ids(val) == set(range(20))
    assert len(open_source("a:fit", "test", None, root=tmp_path)) == 3  # the test split is always whole
    union = open_source("a:fit+b", "train", (8, 8), root=tmp_path)
    assert isinstance(union, UnionImages) and union.classes == ["cat", "dog", "car"]  # "dog" is one class
    assert len(union) == len(fit) + 10 and union[0][0].shape == (3, 8, 8)
    assert union[len(fit)][1] == 1 and union[len(union) - 1][1] == 2  # b's dog → joint 1, b's car → joint 2
    assert union.labels.tolist() == [union[i][1] for i in range(len(union))]
    assert len(open_source("a+b", "train", None, limit=4, root=tmp_path)) == 4
    assert open_source("nothing-here", "train", None, root=tmp_path) is None  # other sources keep their errors
    assert open_source("npz:x.npz", "train", None, root=tmp_path) is None


@pytest.mark.parametrize(
    ("source", "error", "match"),
    [
        ("a:train", ValueError, r"unknown part 'train' of a \(use a:fit or a:val\)"),
        ("a+", ValueError, "empty name in the '\\+' union"),
        ("a+npz:/x.npz", ValueError, "a '\\+' union joins folder names under the data root only"),
        ("a+missing", FileNotFoundError, r"missing/train.npz does not exist"),
        ("../a:fit", ValueError, "'../a' is not a folder name under the data root"),
    ],
)
def test_bad_offline_sources(tmp_path, source, error, match):
    write_set(tmp_path, "a", [0, 0, 1, 1], [0, 1], ["cat", "dog"])
    with pytest.raises(error, match=match):
        open_source(source, "train", None, root=tmp_path)


def test_load_dataset_reads_the_shared_sets_by_name():
    data = load_dataset("gtsrb", "test", image_size=8, limit=5)
    assert len(data) == 5 and len(data.classes) == 43 and data[4][0].shape == (3, 8, 8)
    union = load_dataset(union_source(), "train")
    assert len(union.classes) == 466  # 476 names, equal ones merged (e.g. CIFAR-10's and Caltech101's airplane)
    assert len(union) == sum(len(load_dataset(f"{n}:fit", "train")) for n in NAMES)
    with pytest.raises(ValueError, match="unknown dataset source 'mnist'"):
        load_dataset("mnist")


def test_suite_table_lists_the_suites(tmp_path):
    table = suite_table(tmp_path)
    assert "| cifar10 | CIFAR-10 | test |" in table and "| no | paper |" in table
    assert "| gtsrb-32 | GTSRB (32 px) | test | gtsrb/test.npz" in table and "| no | offline |" in table
    assert "| dtd10-32-val | DTD-10 (32 px) val | val |" in table and "offline-val |" in table
    assert "| tinyimagenet-32 | Tiny-ImageNet (32 px) | test | tinyimagenet/test.npz" in suite_table(ROOT)
    assert "| yes | offline |" in suite_table(ROOT)


def test_cli_lists_the_offline_suite(capsys):
    assert main(["--list-datasets"]) == 0
    shown = capsys.readouterr().out
    for name in [*OFFLINE_SUITE, *OFFLINE_VAL_SUITE]:
        assert f"| {name} |" in shown


def record(model, dataset, attack, eps, accuracy, samples=10):
    return {"model": model, "dataset": dataset, "dataset_title": dataset.upper(), "attack": attack, "eps": eps,
            "eps_label": "0" if attack == "clean" else f"{round(eps * 255)}/255", "accuracy": accuracy,
            "samples": samples, "dataset_size": 100, "seed": 0, "environment": {"device": "cpu"},
            "templates": ["{}"], "settings": {} if attack == "clean" else {"steps": 20, "alpha": eps / 4}}  # fmt: skip


def test_plot_tradeoff_and_sample_counts(tmp_path):
    records = []
    for model, (clean, robust) in {"m-1": (0.6, 0.2), "m-3": (0.5, 0.3), "t": (0.4, 0.35)}.items():
        for d in ("a", "b"):
            records += [record(model, d, "clean", 0.0, clean), record(model, d, "pgd", 1 / 255, robust)]
            records.append(record(model, d, "autoattack", 1 / 255, robust - 0.05, samples=4))
    path = plot_tradeoff(records, tmp_path / "t.png", {"M": [("m-1", "k=1"), ("m-3", "k=3")], "T": [("t", "")]})
    assert path.stat().st_size > 10_000
    report = markdown_report(records)
    assert "Images per dataset: (Clean, PGD-20) A 10 of 100, B 10 of 100; (AutoAttack) A 4 of 100, B 4 of 100" in report
    single = markdown_report([r for r in records if r["attack"] != "autoattack"])
    assert "Images per dataset: A 10 of 100, B 10 of 100. Seed 0" in single
    with pytest.raises(ValueError, match="needs robust records"):
        plot_tradeoff([r for r in records if r["attack"] == "clean"], tmp_path / "x.png", {"M": [("m-1", "")]})
    json.dumps(records)  # the records used here are plain JSON, like the runner's
