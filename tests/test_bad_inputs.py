"""Bad inputs, one table row each: the call (or command line), the error it must raise (or the exit status),
and the words its message must contain — the argument at fault and what was expected.

Add a row with a decorator (a Python call) or :func:`cli_case` (a command line)::

    @case("simplex_head: labels outside [0, C)", ValueError, "labels", "[0, C)")
    def _(ws):
        simplex_head(...)

    cli_case("advsimplex-train: --eps 2", "train", ["--eps", "2"], 2, "eps: must lie in (0, 1]")

``ws`` (:class:`Workspace`) holds files made once per module: a small real-image npz, saved models
(good, NaN, int32, corrupted, truncated, other architectures), npz files with bad labels, a training run
and its checkpoint. Command lines run in-process; ``{name}`` in an argument is replaced by ``ws.name``.
A CLI must exit with the given status and print exactly one ``error:`` line and no traceback.
"""

from __future__ import annotations

import errno
import functools
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import open_clip
import pytest
import torch
from safetensors.torch import save_file
from test_train_support import flip_tensor_byte, single_thread, tiny_config, write_cifar_slice

import advsimplex
from advsimplex._io import tensors_checksum
from advsimplex.data import NpzImageDataset, load_dataset
from advsimplex.evaluation import pgd_attack
from advsimplex.models import load_clip, read_checkpoint_metadata, save_clip
from advsimplex.runtime import parse_number, prepare_output_dir, resolve_device
from advsimplex.train import CheckpointError, ConfigError, TrainConfig, load_config, train
from advsimplex.train.checkpoint import load_checkpoint

MICRO = "advsimplex-micro-vit"


@dataclass(frozen=True)
class Case:
    """One bad input: ``call(ws)`` must raise ``expected``, or ``program`` (``train``/``eval``) run with
    ``argv`` must exit with status ``expected``; the message must contain every one of ``words``."""

    name: str
    expected: type[BaseException] | int
    words: tuple[str, ...]
    call: Callable | None = None
    program: str | None = None
    argv: tuple[str, ...] = ()
    patch: Callable | None = field(default=None, compare=False)  # patch(monkeypatch, ws) before the call


CASES: list[Case] = []


def case(name: str, expected: type[BaseException], *words: str, patch: Callable | None = None):
    """Register the decorated ``f(ws)`` as a row: it must raise ``expected`` with ``words`` in the message."""

    def register(fn: Callable) -> Callable:
        CASES.append(Case(name, expected, words, call=fn, patch=patch))
        return fn

    return register


def cli_case(name: str, program: str, argv: list[str], code: int, *words: str, patch: Callable | None = None):
    """Register a command line of ``advsimplex-train`` (``train``) or ``advsimplex-eval`` (``eval``)."""
    CASES.append(Case(name, code, words, program=program, argv=tuple(argv), patch=patch))


# ---------------------------------------------------------------------- the files the rows use


class Workspace:
    """Files shared by the rows (built once per module in ``root``)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.npz = write_cifar_slice(root / "c10.npz", "train", 16)
        model, _, _ = load_clip(MICRO)
        self.model = root / "micro.safetensors"
        save_clip(self.model, model, MICRO)
        self.weights_pt = root / "micro-weights.pt"
        torch.save(model.state_dict(), self.weights_pt)
        self.nan_model = self._edited(
            model, "nan.safetensors", lambda t: {**t, "visual.proj": t["visual.proj"] * np.nan}
        )
        self.int_model = self._edited(
            model, "int32.safetensors", lambda t: {k: v.to(torch.int32) for k, v in t.items()}
        )
        self.other_arch = self._edited(model, "other-arch.safetensors", lambda t: t, model_name="advsimplex-demo-vit")
        self.flipped = root / "flipped.safetensors"
        self.flipped.write_bytes(self.model.read_bytes())
        flip_tensor_byte(self.flipped)
        self.truncated = root / "truncated.safetensors"
        self.truncated.write_bytes(self.model.read_bytes()[:-500])
        self.garbage = root / "garbage.safetensors"
        self.garbage.write_bytes(os.urandom(2000))
        self.garbage_pt = root / "garbage.pt"
        self.garbage_pt.write_bytes(b"PK\x03\x04 not a zip" * 20)
        nan_weights = {k: v.clone() for k, v in model.state_dict().items()}
        nan_weights["visual.proj"][0, 0] = float("nan")
        self.nan_pt = root / "nan-weights.pt"
        torch.save(nan_weights, self.nan_pt)
        self.int_pt = root / "int-weights.pt"
        torch.save({k: v.to(torch.int32) for k, v in model.state_dict().items()}, self.int_pt)
        self.a_file = root / "a-file.txt"
        self.a_file.write_text("x")
        self.unwritable = self._unwritable()
        self.bad_npz = {name: self._npz(name, **arrays) for name, arrays in self._bad_arrays().items()}
        self.run = root / "run"
        with single_thread():
            train(tiny_config(self.npz, self.run, method="tecoa", steps=2, ckpt_every=1))
        self.checkpoint = self.run / "checkpoints" / "step-00000002.safetensors"
        self.garbage_ckpt = root / "garbage-ckpt.safetensors"
        self.garbage_ckpt.write_bytes(b"\x08" + b"\x00" * 7 + b"{garbage" + b"\x00" * 100)

    def _edited(self, model, name: str, edit, model_name: str = MICRO) -> Path:
        tensors = edit({k: v.detach().clone().contiguous() for k, v in model.state_dict().items()})
        meta = {"format": "advsimplex.clip/1", "model_name": model_name, "checksum": tensors_checksum(tensors)}
        save_file(tensors, str(self.root / name), metadata=meta)
        return self.root / name

    def _unwritable(self) -> Path:
        if os.geteuid() == 0:  # root writes into read-only folders; /sys refuses everyone
            return Path("/sys/advsimplex-test-run")
        locked = self.root / "locked"
        locked.mkdir(mode=0o555)
        return locked / "run"

    def _npz(self, name: str, **arrays) -> Path:
        with np.load(self.npz) as d:
            values = {"images": d["images"][:4], "labels": d["labels"][:4], "classes": d["classes"]} | arrays
        path = self.root / f"{name}.npz"
        np.savez(path, **values)
        return path

    @staticmethod
    def _bad_arrays() -> dict[str, dict]:
        return {
            "float-labels": {"labels": np.array([0.0, 1.7, 2.0, 3.0])},
            "label-10": {"labels": np.array([0, 1, 10, 3])},
            "label-negative": {"labels": np.array([0, -1, 2, 3])},
            "short-labels": {"labels": np.array([0, 1, 2])},
            "labels-2d": {"labels": np.zeros((4, 1), np.int64)},
            "no-classes": {"classes": np.array([], dtype="<U3")},
            "classes-2d": {"classes": np.array([["a", "b"]])},
            "float-images": {"images": np.zeros((4, 8, 8, 3), np.float32)},
        }

    def format(self, arg: str) -> str:
        """``{name}`` in ``arg`` → the path ``self.name`` (``{npz:float-labels}`` → a bad npz)."""
        arg = re.sub(r"\{npz:([\w-]+)\}", lambda m: str(self.bad_npz[m.group(1)]), arg)
        return arg.format(**{k: str(v) for k, v in vars(self).items() if isinstance(v, Path)})


@pytest.fixture(scope="module")
def ws(tmp_path_factory):
    with single_thread():
        return Workspace(tmp_path_factory.mktemp("bad-inputs"))


def _no_space(*args, **kwargs):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(args[1]) if len(args) > 1 else None)


# ---------------------------------------------------------------------- load_clip / save_clip


@case("load_clip(None)", TypeError, "model must be", "NoneType")
def _(ws):
    load_clip(None)


@case("load_clip(3)", TypeError, "model must be", "int 3")
def _(ws):
    load_clip(3)


@case("load_clip('')", TypeError, "model must be")
def _(ws):
    load_clip("")


@case("load_clip(pretrained=5)", TypeError, "pretrained must be", "int 5")
def _(ws):
    load_clip(MICRO, 5)


@case("load_clip(device='gpu0')", TypeError, "device must be", "'gpu0'")
def _(ws):
    load_clip(MICRO, device="gpu0")


@case("load_clip: garbage .safetensors", ValueError, "garbage.safetensors", "truncated, corrupted or not a safetensors")
def _(ws):
    load_clip(str(ws.garbage))


@case("load_clip: truncated .safetensors", ValueError, "truncated.safetensors", "truncated, corrupted")
def _(ws):
    load_clip(str(ws.truncated))


@case("load_clip: corrupted tensor bytes", ValueError, "flipped.safetensors", "corrupted", "checksum")
def _(ws):
    load_clip(str(ws.flipped))


@case("load_clip: int32 weights", ValueError, "int32.safetensors", "stored as torch.int32", "torch.float32")
def _(ws):
    load_clip(str(ws.int_model))


@case("load_clip: NaN weights", ValueError, "nan.safetensors", "non-finite weights", "visual.proj (128 of 128")
def _(ws):
    load_clip(str(ws.nan_model))


@case("load_clip: architecture in metadata does not fit", ValueError, "other-arch", "advsimplex-demo-vit")
def _(ws):
    load_clip(str(ws.other_arch))


@case("load_clip: QuickGELU name on a GELU save_clip file", ValueError, "pretrained file", "micro.safetensors",
      "saved from the architecture advsimplex-micro-vit, not advsimplex-micro-vit-quickgelu")  # fmt: skip
def _(ws):
    load_clip("advsimplex-micro-vit-quickgelu", str(ws.model))


@case("load_clip: weights of another architecture", ValueError, "pretrained file", "micro-weights.pt",
      "does not fit the architecture advsimplex-demo-vit")  # fmt: skip
def _(ws):
    load_clip("advsimplex-demo-vit", str(ws.weights_pt))


@case("load_clip: unreadable weights file", ValueError, "pretrained file", "garbage.pt", "could not be read")
def _(ws):
    load_clip(MICRO, str(ws.garbage_pt))


@case("load_clip: NaN weights file", ValueError, "non-finite weights", "visual.proj (1 of 128")
def _(ws):
    load_clip(MICRO, str(ws.nan_pt))


@case("load_clip: int32 weights file", ValueError, "int-weights.pt", "stored as torch.int32")
def _(ws):
    load_clip(MICRO, str(ws.int_pt))


@case("load_clip: training checkpoint as a model", ValueError, "not an advsimplex CLIP checkpoint")
def _(ws):
    load_clip(str(ws.checkpoint))


@case("read_checkpoint_metadata: garbage", ValueError, "garbage.safetensors", "not a safetensors file")
def _(ws):
    read_checkpoint_metadata(ws.garbage)


@case("save_clip: NaN weights", ValueError, "refusing to save", "non-finite", "visual.proj")
def _(ws):
    model, _, _ = load_clip(MICRO)
    with torch.no_grad():
        model.visual.proj.fill_(float("nan"))
    save_clip(ws.root / "never.safetensors", model, MICRO)


# ---------------------------------------------------------------------- load_dataset


@case("load_dataset(limit=-1)", ValueError, "limit must be None or a positive int", "-1")
def _(ws):
    load_dataset(f"npz:{ws.npz}", "train", limit=-1)


@case("load_dataset(limit=0)", ValueError, "limit must be None or a positive int", "got 0")
def _(ws):
    load_dataset(f"npz:{ws.npz}", "train", limit=0)


@case("load_dataset(limit=2.5)", TypeError, "limit must be None or a positive int", "float 2.5")
def _(ws):
    load_dataset(f"npz:{ws.npz}", "train", limit=2.5)


@case("load_dataset(limit=True)", TypeError, "limit", "bool")
def _(ws):
    load_dataset(f"npz:{ws.npz}", "train", limit=True)


@case("load_dataset(image_size=0)", ValueError, "image_size must be positive", "got 0")
def _(ws):
    load_dataset(f"npz:{ws.npz}", image_size=0)


@case("load_dataset(image_size=(8, -1))", ValueError, "image_size must be positive")
def _(ws):
    load_dataset(f"npz:{ws.npz}", image_size=(8, -1))


@case("load_dataset(image_size='8')", TypeError, "image_size must be None, an int or an (H, W) pair")
def _(ws):
    load_dataset(f"npz:{ws.npz}", image_size="8")


@case("load_dataset(image_size=(8,))", TypeError, "image_size", "(8,)")
def _(ws):
    load_dataset(f"npz:{ws.npz}", image_size=(8,))


@case("load_dataset(image_size=0) for cifar10", ValueError, "image_size must be positive")
def _(ws):
    load_dataset("cifar10", image_size=0)


@case("load_dataset(source=None)", TypeError, "source must be a dataset name")
def _(ws):
    load_dataset(None)


@case("load_dataset(split='val')", ValueError, "split must be 'train' or 'test'", "'val'")
def _(ws):
    load_dataset(f"npz:{ws.npz}", "val")


@case("load_dataset: unknown source", ValueError, "unknown dataset source 'mnist'")
def _(ws):
    load_dataset("mnist")


@case("load_dataset: garbage npz", ValueError, "garbage.pt", "not a readable npz file")
def _(ws):
    load_dataset(f"npz:{ws.garbage_pt}")


for _name, _words in {
    "float-labels": ("labels must be integers", "float64"),
    "label-10": ("labels must lie in [0, 10)", "e.g. 10"),
    "label-negative": ("labels must lie in [0, 10)", "e.g. -1"),
    "short-labels": ("labels must have shape (N,) = (4,)", "(3,)"),
    "labels-2d": ("labels must have shape (N,)", "(4, 1)"),
    "no-classes": ("classes must be a non-empty 1-D array",),
    "classes-2d": ("classes must be a non-empty 1-D array", "(1, 2)"),
    "float-images": ("images must be uint8 (N, H, W, 3)", "float32"),
}.items():
    case(f"load_dataset: npz {_name}", ValueError, f"{_name}.npz", *_words)(
        lambda ws, name=_name: load_dataset(f"npz:{ws.bad_npz[name]}")
    )


@case("NpzImageDataset(limit=-1)", ValueError, "limit")
def _(ws):
    NpzImageDataset(ws.npz, limit=-1)


# ---------------------------------------------------------------------- runtime helpers


@case("resolve_device('tpu')", ValueError, "device", "'tpu'", "auto, cpu, cuda or cuda:N")
def _(ws):
    resolve_device("tpu")


@case("resolve_device(3)", TypeError, "device", "int 3")
def _(ws):
    resolve_device(3)


if not torch.cuda.is_available():

    @case("resolve_device('cuda') without a GPU", ValueError, "device", "'cuda'", "CUDA is not available")
    def _(ws):
        resolve_device("cuda")


@case("parse_number('abc')", ValueError, "'abc' is not a number or fraction like 2/255")
def _(ws):
    parse_number("abc")


@case("parse_number('1/0')", ValueError, "'1/0' is not a number")
def _(ws):
    parse_number("1/0")


@case("parse_number('inf')", ValueError, "'inf' is not a finite number")
def _(ws):
    parse_number("inf")


@case("parse_number(None)", TypeError, "expected a string")
def _(ws):
    parse_number(None)


@case("prepare_output_dir(a file)", ValueError, "out_dir", "a-file.txt is a file, not a folder")
def _(ws):
    prepare_output_dir(ws.a_file)


@case("prepare_output_dir(under a file)", ValueError, "--out", "a parent is a file")
def _(ws):
    prepare_output_dir(ws.a_file / "sub", "--out")


@case("prepare_output_dir(unwritable)", ValueError, "out_dir", "cannot")
def _(ws):
    prepare_output_dir(ws.unwritable)


# ---------------------------------------------------------------------- training config, checkpoints, train()


@case("TrainConfig.from_dict: unknown key", ConfigError, "weight_decy: unknown config key", "weight_decay")
def _(ws):
    TrainConfig.from_dict({"weight_decy": 0.1})


@case("TrainConfig.from_dict: not a mapping", ConfigError, "must hold a mapping")
def _(ws):
    TrainConfig.from_dict(["lr", 1])


@case("TrainConfig: nonfinite policy", ConfigError, "nonfinite: must be one of error, skip", "'ignore'")
def _(ws):
    TrainConfig.from_dict({"nonfinite": "ignore"}).validate()


@case("TrainConfig: overwrite with resume", ConfigError, "overwrite: cannot be combined with resume")
def _(ws):
    TrainConfig.from_dict({"overwrite": True, "resume": "auto"}).validate()


@case("load_config: no such preset", ConfigError, "config: 'nope' is neither a YAML file nor a preset")
def _(ws):
    load_config("nope")


@case("load_checkpoint: garbage", CheckpointError, "resume:", "garbage-ckpt.safetensors")
def _(ws):
    load_checkpoint(ws.garbage_ckpt)


@case("load_checkpoint: a model file", CheckpointError, "not an advsimplex training checkpoint")
def _(ws):
    load_checkpoint(ws.model)


@case("load_checkpoint: missing file", FileNotFoundError, "resume: checkpoint", "does not exist")
def _(ws):
    load_checkpoint(ws.root / "none.safetensors")


@case("train: backend cuda without CUDA kernels", ConfigError, "backend: cuda is not usable here")
def _(ws):
    if torch.cuda.is_available():
        pytest.skip("a GPU is visible")
    train(tiny_config(ws.npz, ws.root / "new-run", backend="cuda"))


@case("train: out_dir is a file", ConfigError, "out_dir:", "is a file, not a folder")
def _(ws):
    train(tiny_config(ws.npz, ws.a_file))


@case("train: NaN model", ConfigError, "model:", "non-finite weights")
def _(ws):
    train(tiny_config(ws.npz, ws.root / "nan-run", model=str(ws.nan_model)))


@case("train: garbage resume file", CheckpointError, "resume:", "garbage-ckpt.safetensors")
def _(ws):
    train(tiny_config(ws.npz, ws.root / "resume-run", resume=str(ws.garbage_ckpt)))


# ---------------------------------------------------------------------- advsimplex-train

TRAIN = ["--model", MICRO, "--dataset", "npz:{npz}", "--batch-size", "8", "--steps", "2", "--attack-steps", "3",
         "--method", "tecoa", "--eval-samples", "0", "--no-progress", "--no-tensorboard", "--quiet"]  # fmt: skip

cli_case("advsimplex-train: --out-dir is a file", "train", [*TRAIN, "--out-dir", "{a_file}"], 2,
         "out_dir:", "a-file.txt is a file, not a folder")  # fmt: skip
cli_case("advsimplex-train: --out-dir under a file", "train", [*TRAIN, "--out-dir", "{a_file}/run"], 2,
         "out_dir:", "a parent is a file")  # fmt: skip
cli_case("advsimplex-train: --out-dir unwritable", "train", [*TRAIN, "--out-dir", "{unwritable}"], 2,
         "out_dir: cannot")  # fmt: skip
cli_case("advsimplex-train: disk full while writing a checkpoint", "train", [*TRAIN, "--out-dir", "{root}/full"], 2,
         "No space left on device", "step-00000002.safetensors",
         patch=lambda mp, ws: mp.setattr("safetensors.torch.save_file", _no_space))  # fmt: skip
cli_case("advsimplex-train: --out-dir holds a run", "train", [*TRAIN, "--out-dir", "{run}"], 2,
         "out_dir:", "is not empty", "--resume auto", "--overwrite")  # fmt: skip
cli_case("advsimplex-train: --resume garbage", "train",
         [*TRAIN, "--out-dir", "{root}/r1", "--resume", "{garbage_ckpt}"], 2,
         "resume:", "garbage-ckpt.safetensors")  # fmt: skip
cli_case("advsimplex-train: --resume missing", "train", [*TRAIN, "--out-dir", "{root}/r2", "--resume", "{root}/no.st"],
         2, "resume: checkpoint", "does not exist")  # fmt: skip
cli_case("advsimplex-train: --resume a model file", "train", [*TRAIN, "--out-dir", "{root}/r3", "--resume", "{model}"],
         2, "resume:", "not an advsimplex training checkpoint")  # fmt: skip
cli_case("advsimplex-train: --optimizer sgd on an AdamW run", "train",
         [*TRAIN, "--out-dir", "{run}", "--resume", "auto", "--optimizer", "sgd"], 2,
         "resume: this run's settings differ", "optimizer 'adamw' → 'sgd'")  # fmt: skip
cli_case("advsimplex-train: --lr changed on resume", "train",
         [*TRAIN, "--out-dir", "{run}", "--resume", "auto", "--lr", "0.01"], 2, "lr 0.001 → 0.01")  # fmt: skip
cli_case("advsimplex-train: --backend cuda without CUDA kernels", "train",
         [*TRAIN, "--method", "advsimplex", "--backend", "cuda", "--out-dir", "{root}/r4"], 2,
         "backend: cuda is not usable here")  # fmt: skip
cli_case("advsimplex-train: --model NaN weights", "train", [*TRAIN, "--model", "{nan_model}", "--out-dir", "{root}/r5"],
         2, "model:", "non-finite weights")  # fmt: skip
cli_case("advsimplex-train: --model corrupted", "train", [*TRAIN, "--model", "{flipped}", "--out-dir", "{root}/r6"],
         2, "model:", "corrupted", "checksum")  # fmt: skip
cli_case("advsimplex-train: --limit 0", "train", [*TRAIN, "--limit", "0"], 2, "limit: must be a positive int")
cli_case("advsimplex-train: --eps 2", "train", [*TRAIN, "--eps", "2"], 2, "eps: must lie in (0, 1]")
cli_case("advsimplex-train: --nonfinite ignore", "train", [*TRAIN, "--nonfinite", "ignore"], 2, "nonfinite:")
cli_case("advsimplex-train: --config missing", "train", ["--config", "{root}/none.yaml"], 2,
         "config:", "neither a YAML file nor a preset")  # fmt: skip
cli_case("advsimplex-train: --dataset with float labels", "train",
         [*TRAIN, "--dataset", "npz:{npz:float-labels}", "--out-dir", "{root}/r7"], 2,
         "dataset:", "labels must be integers")  # fmt: skip
if not torch.cuda.is_available():
    cli_case("advsimplex-train: --device cuda without a GPU", "train", [*TRAIN, "--device", "cuda", "--out-dir",
             "{root}/r8"], 2, "device: 'cuda' asked for, but CUDA is not available")  # fmt: skip

# ---------------------------------------------------------------------- advsimplex-eval

EVAL = ["--dataset", "npz:{npz}", "--samples", "4", "--attacks", "pgd", "--pgd-steps", "1", "--eps", "1/255",
        "--quiet"]  # fmt: skip

cli_case("advsimplex-eval: --out is a file", "eval", ["--model", "{model}", *EVAL, "--out", "{a_file}"], 2,
         "--out:", "is a file, not a folder")  # fmt: skip
cli_case("advsimplex-eval: --out unwritable", "eval", ["--model", "{model}", *EVAL, "--out", "{unwritable}"], 2,
         "--out: cannot")  # fmt: skip
cli_case("advsimplex-eval: disk full while writing results", "eval", ["--model", "{model}", *EVAL, "--out",
         "{root}/e-full"], 2, "cannot write the results", "No space left on device",
         patch=lambda mp, ws: mp.setattr("advsimplex.evaluation.report.write_results", _no_space))  # fmt: skip
cli_case("advsimplex-eval: NaN model", "eval", ["--model", "{nan_model}", *EVAL, "--out", "{root}/e1"], 2,
         "--model", "non-finite weights", "visual.proj")  # fmt: skip
cli_case("advsimplex-eval: int32 model", "eval", ["--model", "{int_model}", *EVAL, "--out", "{root}/e2"], 2,
         "--model", "stored as torch.int32")  # fmt: skip
cli_case("advsimplex-eval: corrupted model", "eval", ["--model", "{flipped}", *EVAL, "--out", "{root}/e3"], 2,
         "--model", "corrupted", "checksum")  # fmt: skip
cli_case("advsimplex-eval: truncated model", "eval", ["--model", "{truncated}", *EVAL, "--out", "{root}/e4"], 2,
         "--model", "truncated, corrupted")  # fmt: skip
cli_case("advsimplex-eval: QuickGELU architecture on GELU weights", "eval",
         ["--model", "advsimplex-micro-vit-quickgelu", "--pretrained", "{model}", *EVAL, "--out", "{root}/e5"], 2,
         "saved from the architecture advsimplex-micro-vit, not advsimplex-micro-vit-quickgelu")  # fmt: skip
cli_case("advsimplex-eval: weights of another architecture", "eval",
         ["--model", "advsimplex-demo-vit", "--pretrained", "{weights_pt}", *EVAL, "--out", "{root}/e6"], 2,
         "--model advsimplex-demo-vit", "does not fit the architecture advsimplex-demo-vit")  # fmt: skip
cli_case("advsimplex-eval: --source-model of another architecture", "eval",
         ["--model", "{model}", "--attacks", "simplex-transfer", "--source-model", "advsimplex-demo-vit",
          "--source-pretrained", "{weights_pt}", *EVAL, "--out", "{root}/e7"], 2,
         "--source-model advsimplex-demo-vit", "does not fit the architecture")  # fmt: skip
cli_case("advsimplex-eval: --source-model NaN", "eval",
         ["--model", "{model}", "--attacks", "simplex-transfer", "--source-model", "{nan_model}", *EVAL, "--out",
          "{root}/e8"], 2, "--source-model", "non-finite weights")  # fmt: skip
cli_case("advsimplex-eval: --eps 1/0", "eval", ["--model", "{model}", *EVAL, "--eps", "1/0", "--out", "{root}/e9"], 2,
         "--eps: '1/0' is not a number")  # fmt: skip
cli_case("advsimplex-eval: --dataset with out-of-range labels", "eval",
         ["--model", "{model}", *EVAL, "--dataset", "npz:{npz:label-10}", "--out", "{root}/e10"], 2,
         "labels must lie in [0, 10)")  # fmt: skip
if not torch.cuda.is_available():
    cli_case("advsimplex-eval: --device cuda without a GPU", "eval",
             ["--model", "{model}", *EVAL, "--device", "cuda", "--out", "{root}/e11"], 2,
             "--device: 'cuda' asked for, but CUDA is not available")  # fmt: skip


# ---------------------------------------------------------------------- the library


@functools.cache
def _library():
    """A float32 micro zero-shot model (4 classes), images in [0, 1], labels and a 3-step trajectory."""
    from advsimplex import ZeroShotModel, pgd_trajectory
    from helpers import micro_clip, unit_rows

    clip = micro_clip(seed=0, dtype=torch.float32)
    model = ZeroShotModel.from_clip(clip, unit_rows(4, 8, dtype=torch.float32), 20.0)
    g = torch.Generator().manual_seed(0)
    x, y = torch.rand(2, 3, 8, 8, generator=g), torch.tensor([0, 3])
    deltas = pgd_trajectory(model, x, y, steps=3).deltas
    return clip, model, x, y, deltas


def _loss(**kwargs):
    from advsimplex import AdvSimplexLoss

    return AdvSimplexLoss(steps=3, **kwargs)


def _call_loss(x=None, y=None, model=None):
    _, m, x0, y0, _ = _library()
    return _loss()(m if model is None else model, x0 if x is None else x, y0 if y is None else y)


def _align(x=None, deltas=None, **kwargs):
    from advsimplex import simplex_alignment

    _, m, x0, _, d0 = _library()
    return simplex_alignment(m, x0 if x is None else x, d0 if deltas is None else deltas, **kwargs)


def _traj(x=None, y=None, **kwargs):
    from advsimplex import pgd_trajectory

    _, m, x0, y0, _ = _library()
    return pgd_trajectory(m, x0 if x is None else x, y0 if y is None else y, **kwargs)


def _x():
    return _library()[2]


for _name, _make, _words in (
    ("labels outside [0, C)", lambda: _call_loss(y=torch.tensor([0, 4])), ("labels", "[0, C) = [0, 4)")),
    ("negative labels", lambda: _call_loss(y=torch.tensor([-1, 0])), ("labels", "[0, C)")),
    ("3-D images", lambda: _call_loss(x=_x()[0]), ("images", "(B, 3, 8, 8)")),
    ("images of another size", lambda: _call_loss(x=_x()[..., :4, :4]), ("images", "(B, 3, 8, 8)")),
    ("empty batch", lambda: _call_loss(x=_x()[:0], y=torch.zeros(0, dtype=torch.long)), ("images", "B >= 1")),
    ("pixels outside [0, 1]", lambda: _call_loss(x=_x() * 255), ("images", "pixels in [0, 1]")),
    (
        "a NaN pixel",
        lambda: _call_loss(x=_x().clone().index_put_((torch.tensor(0),), torch.tensor(float("nan")))),
        ("images", "non-finite"),
    ),
    ("images on another device", lambda: _call_loss(x=_x().to("meta")), ("images is on meta", "model is on cpu")),
):
    case(f"AdvSimplexLoss call: {_name}", ValueError, *_words)(lambda ws, make=_make: make())
case("AdvSimplexLoss call: fp16 images with an fp32 model", TypeError, "images", "float16", "float32")(
    lambda ws: _call_loss(x=_x().half())
)
case("AdvSimplexLoss call: a tower instead of a ZeroShotModel", TypeError, "model must be an advsimplex.ZeroShotModel")(
    lambda ws: _call_loss(model=_library()[0].visual)
)
case("AdvSimplexLoss call: labels of another length", ValueError, "labels must have shape (B,)")(
    lambda ws: _call_loss(y=torch.tensor([0, 1, 2]))
)
for _key, _value, _words in (
    ("lam", -1.0, ("lam must be >= 0",)),
    ("lam", float("nan"), ("lam must be a finite real",)),
    ("alpha", -1 / 255, ("alpha (PGD step size)",)),
    ("alpha", float("inf"), ("alpha (PGD step size)",)),
    ("init_std", -0.1, ("init_std must be >= 0",)),
    ("init_std", float("nan"), ("init_std must be a finite",)),
    ("kappa", -1.0, ("kappa must be >= 0",)),
    ("variant", "bound", ("variant must be one of",)),
    ("weighting", "cosine", ("weighting must be one of",)),
    ("order", 5, ("order must be 3",)),
    ("eps", 1.5, ("eps must lie in [0, 1]",)),
    ("backend", "fpga", ("backend must be one of",)),
):
    case(f"AdvSimplexLoss({_key}={_value!r})", ValueError, *_words)(lambda ws, k=_key, v=_value: _loss(**{k: v}))
case("AdvSimplexLoss(samples=2.5)", TypeError, "samples must be an int")(lambda ws: _loss(samples=2.5))
case("AdvSimplexLoss(steps=0)", ValueError, "steps must be a positive int")(
    lambda ws: advsimplex.AdvSimplexLoss(steps=0)
)

case("simplex_alignment: deltas of another batch", ValueError, "deltas must have shape (B, m, *x.shape[1:])")(
    lambda ws: _align(deltas=_library()[4][:1])
)
case("simplex_alignment: deltas of another dtype", TypeError, "deltas (torch.float64) must have the dtype of x")(
    lambda ws: _align(deltas=_library()[4].double())
)
case("simplex_alignment: m too short for the order", ValueError, "m=1 steps has no simplex of order 3")(
    lambda ws: _align(deltas=_library()[4][:, :1])
)
case("simplex_alignment: NaN deltas", ValueError, "deltas holds non-finite")(
    lambda ws: _align(deltas=_library()[4] * float("nan"))
)
case("simplex_alignment: pixels outside [0, 1]", ValueError, "x must be pixels in [0, 1]")(
    lambda ws: _align(x=_x() - 1)
)

case("pgd_trajectory: 3-D images", ValueError, "x must have shape (B, 3, 8, 8)")(lambda ws: _traj(x=_x()[0]))
case("pgd_trajectory: labels outside [0, C)", ValueError, "y must lie in [0, C) = [0, 4)")(
    lambda ws: _traj(y=torch.tensor([9, 0]))
)
case("pgd_trajectory: float labels", TypeError, "y must be an integer tensor")(lambda ws: _traj(y=torch.zeros(2)))
case("pgd_trajectory: negative init_std", ValueError, "init_std must be >= 0")(lambda ws: _traj(init_std=-1.0))
case("pgd_trajectory: NaN alpha", ValueError, "alpha (PGD step size)")(lambda ws: _traj(alpha=float("nan")))


def _zero_shot(**kwargs):
    from advsimplex import ZeroShotModel
    from helpers import unit_rows

    clip = _library()[0]
    args = {"text_features": unit_rows(4, 8, dtype=torch.float32), "logit_scale": 20.0, **kwargs}
    return ZeroShotModel.from_clip(clip, args.pop("text_features"), args.pop("logit_scale"), **args)


case("ZeroShotModel: text of another width", ValueError, "text_features", "8-dimensional")(
    lambda ws: _zero_shot(text_features=torch.nn.functional.normalize(torch.randn(4, 5), dim=-1))
)
case("ZeroShotModel: text not unit norm", ValueError, "text_features must hold unit-norm rows")(
    lambda ws: _zero_shot(text_features=2 * torch.eye(4, 8))
)
case("ZeroShotModel: logit_scale 0", ValueError, "logit_scale must be a positive number")(
    lambda ws: _zero_shot(logit_scale=0.0)
)
case("ZeroShotModel: jets given as a dict", TypeError, "jets must be an advsimplex.jets.JetOptions")(
    lambda ws: _zero_shot(jets={"mode": "fast"})
)
case("ZeroShotModel.from_clip: a tower", TypeError, "model must be an open_clip CLIP model")(
    lambda ws: advsimplex.ZeroShotModel.from_clip(_library()[0].visual, torch.eye(4, 8))
)
case("ZeroShotModel.from_encoder: not callable", TypeError, "encoder must be an nn.Module or a callable")(
    lambda ws: advsimplex.ZeroShotModel.from_encoder(3, torch.eye(4, 8), 10.0)
)
for _key, _value, _words in (
    ("mode", "fastest", ("jets mode must be one of",)),
    ("rules", "torch", ("jet rules must be one of",)),
    ("checkpoint", "yes", ("checkpoint must be None",)),
    ("micro_batch", 0, ("micro_batch must be a positive int",)),
    ("chunk_size", -3, ("chunk_size must be a positive int",)),
):
    case(f"JetOptions({_key}={_value!r})", ValueError, *_words)(
        lambda ws, k=_key, v=_value: advsimplex.JetOptions(**{k: v})
    )


def _embedding_jets(**change):
    from advsimplex import embedding_jets, pair_index

    _, m, x, _, d = _library()
    args = {"encode": m.embed, "x": x, "deltas": d, "plan": pair_index(3, 3), **change}
    return embedding_jets(args.pop("encode"), args.pop("x"), args.pop("deltas"), args.pop("plan"), **args)


for _name, _change, _error, _words in (
    ("encode not callable", {"encode": 3}, TypeError, ("encode must be a callable",)),
    ("integer images", {"x": torch.zeros(2, 3, 8, 8, dtype=torch.long)}, TypeError, ("x must be a floating",)),
    ("deltas of another shape", {"deltas": torch.zeros(2, 3, 3, 4, 4)}, ValueError, ("deltas must have shape",)),
    (
        "deltas of another dtype",
        {"deltas": torch.zeros(2, 3, 3, 8, 8, dtype=torch.float64)},
        TypeError,
        ("deltas (torch.float64) must have the dtype of x",),
    ),
    ("no directions", {"deltas": torch.zeros(2, 0, 3, 8, 8)}, ValueError, ("at least one direction",)),
    ("negative pair indices", {"plan": torch.tensor([[0, 0], [-1, 1]])}, ValueError, ("pairs must index vertices",)),
    ("pairs of shape (P, 3)", {"plan": torch.zeros(2, 3, dtype=torch.long)}, ValueError, ("(P, 2)",)),
    ("float pairs", {"plan": torch.zeros(2, 2)}, TypeError, ("pairs must be an integer tensor",)),
    ("a plan for another m", {"plan": advsimplex.JetPlan.collapsed(5, 3)}, ValueError, ("plan is for m=5",)),
):
    case(f"embedding_jets: {_name}", _error, *_words)(lambda ws, c=_change: _embedding_jets(**c))


def _vit_jets(x=None, deltas=None):
    from advsimplex import pair_index, vit_jets

    clip, _, x0, _, d0 = _library()
    return vit_jets(clip.visual, x0 if x is None else x, d0 if deltas is None else deltas, pair_index(3, 3))


case("vit_jets: float64 deltas with float32 images", TypeError, "deltas must be a tensor of the dtype of x")(
    lambda ws: _vit_jets(deltas=_library()[4].double())
)
case("vit_jets: float64 images and deltas on a float32 tower", TypeError, "x has dtype torch.float64")(
    lambda ws: _vit_jets(x=_x().double(), deltas=_library()[4].double())
)
case("vit_jets: an uncovered tower", advsimplex.UnsupportedTowerError, "fast jets do not cover")(
    lambda ws: advsimplex.vit_jets(torch.nn.Linear(3, 3), _x(), _library()[4], advsimplex.pair_index(3, 3))
)

for _name, _call, _error, _words in (
    ("pair_index(3, 3.0)", lambda: advsimplex.pair_index(3, 3.0), TypeError, ("order must be an int",)),
    ("pair_index(1, 3)", lambda: advsimplex.pair_index(1, 3), ValueError, ("need m >= order - 1 = 2",)),
    ("pair_index(3, 5)", lambda: advsimplex.pair_index(3, 5), ValueError, ("order must be one of",)),
    ("pair_index('3', 3)", lambda: advsimplex.pair_index("3", 3), TypeError, ("m must be an int",)),
    (
        "dirichlet_moment(3, [1.5])",
        lambda: advsimplex.dirichlet_moment(3, [1.5]),
        TypeError,
        ("exponents must be an int",),
    ),
    ("dirichlet_moment(3, [-1])", lambda: advsimplex.dirichlet_moment(3, [-1]), ValueError, ("non-negative",)),
    (
        "dirichlet_moment(2, [1, 1, 1])",
        lambda: advsimplex.dirichlet_moment(2, [1, 1, 1]),
        ValueError,
        ("exponents has 3 entries",),
    ),
    ("moment_tensor(3, 0)", lambda: advsimplex.moment_tensor(3, 0), ValueError, ("degree must be >= 1",)),
    (
        "second_moment of no vertices",
        lambda: advsimplex.second_moment(torch.zeros(2, 0, 4)),
        ValueError,
        ("vertices must have shape (..., Q, D) with Q >= 1",),
    ),
    (
        "second_moment of integers",
        lambda: advsimplex.second_moment(torch.zeros(3, 4, dtype=torch.long)),
        TypeError,
        ("vertices must be a floating tensor",),
    ),
    (
        "simplex_weights: scheme",
        lambda: advsimplex.simplex_weights(torch.ones(2), torch.ones(2, 3), scheme="cosine"),
        ValueError,
        ("weighting must be one of",),
    ),
    (
        "simplex_weights: shapes",
        lambda: advsimplex.simplex_weights(torch.ones(3), torch.ones(2, 3)),
        ValueError,
        ("clean_prob must be (B,) and vertex_probs (B, m)",),
    ),
    ("JetPlan.collapsed(2, 4)", lambda: advsimplex.JetPlan.collapsed(2, 4), ValueError, ("need m >= order - 1 = 3",)),
    (
        "pgd_attack: unknown loss",
        lambda: pgd_attack(_library()[1], _x(), _library()[3], eps=1 / 255, loss="dlr"),
        ValueError,
        ("loss must be one of",),
    ),
    (
        "class_text_features: template without {}",
        lambda: advsimplex.class_text_features(
            _library()[0], open_clip.get_tokenizer("advsimplex-micro-vit"), ["cat"], ["a photo"]
        ),
        ValueError,
        ("templates must be format strings",),
    ),
):
    case(_name, _error, *_words)(lambda ws, c=_call: c())


# ---------------------------------------------------------------------- the test


def _run_cli(program: str, argv: list[str]) -> int:
    from advsimplex.evaluation.cli import main as eval_main
    from advsimplex.train.cli import main as train_main

    main = train_main if program == "train" else eval_main
    try:
        return main(argv)
    except SystemExit as exc:  # argparse's parser.error
        return exc.code


@pytest.mark.parametrize("row", CASES, ids=[c.name for c in CASES])
def test_bad_input(row: Case, ws: Workspace, monkeypatch, capsys):
    if row.patch is not None:
        row.patch(monkeypatch, ws)
    with single_thread():
        if row.call is not None:
            with pytest.raises(row.expected) as info:
                row.call(ws)
            message = str(info.value)
        else:
            code = _run_cli(row.program, [ws.format(a) for a in row.argv])
            err = capsys.readouterr().err
            assert code == row.expected, err
            assert "Traceback" not in err
            assert sum("error:" in line for line in err.splitlines()) == 1, err
            message = err
    missing = [w for w in row.words if w not in message]
    assert not missing, f"{missing} not in: {message}"
