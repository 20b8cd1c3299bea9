"""``kill -9`` at random points of a training run, ``--resume auto`` after each: the final weights and the
logged losses are bit-identical to an uninterrupted run.

Kills come from outside (SIGKILL at a random moment after the run has logged a chosen step: inside a
step, between steps, or while a checkpoint is written) and from inside, through the fault-injection hook
of the atomic writer (``ADVSIMPLEX_FAULT_KILL_BEFORE_RENAME=N``: SIGKILL after the N-th file of the process
is complete on disk and before it is renamed into place), which leaves a temporary file behind.
"""

from __future__ import annotations

import csv
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from test_train_support import model_weights, write_cifar_slice

from advsimplex._io import FAULT_KILL_BEFORE_RENAME
from advsimplex.train import checkpoint as ckpt

STEPS = 40
SETTINGS = {
    "model": "advsimplex-micro-vit", "method": "advsimplex", "batch_size": 8, "steps": STEPS, "attack_steps": 3,
    "lr": 1e-3, "warmup_steps": 2, "hflip": True, "ckpt_every": 1, "keep_checkpoints": 2, "log_every": 1,
    "eval_samples": 0, "progress": False, "tensorboard": False, "resume": "auto",
}  # fmt: skip


# A zygote process imports torch and advsimplex once (seconds) and forks one child per training process
# (milliseconds); each child runs advsimplex-train's main() with its own arguments and environment, exactly as
# the command would, and is killed with SIGKILL by pid. The zygote itself never computes, so forking it is safe.
ZYGOTE = r"""
import json, os, sys
import open_clip, safetensors.torch, tqdm.auto, yaml  # what every training process imports on its way
import advsimplex.train.cli as cli, advsimplex.train.trainer
for line in sys.stdin:
    req = json.loads(line)
    if "argv" in req:
        pid = os.fork()
        if pid == 0:
            fd = os.open(req["log"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            os.dup2(fd, 1), os.dup2(fd, 2)
            os.environ.pop("ADVSIMPLEX_FAULT_KILL_BEFORE_RENAME", None)
            os.environ.update(req["env"])
            try:
                code = cli.main(req["argv"])
            except SystemExit as exc:
                code = exc.code
            sys.stdout.flush(), sys.stderr.flush()
            os._exit(code if isinstance(code, int) else 1)
        reply = {"pid": pid}
    else:
        done, status = os.waitpid(req["pid"], 0 if req["block"] else os.WNOHANG)
        reply = {"status": None if done == 0 else os.waitstatus_to_exitcode(status)}
    print(json.dumps(reply), flush=True)
"""


class Zygote:
    def __init__(self) -> None:
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        self.proc = subprocess.Popen([sys.executable, "-c", ZYGOTE], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     env=env, text=True)  # fmt: skip

    def ask(self, **request) -> dict:
        self.proc.stdin.write(json.dumps(request) + "\n")
        self.proc.stdin.flush()
        return json.loads(self.proc.stdout.readline())

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=60)


class Training:
    """One ``advsimplex-train`` process forked from the zygote."""

    def __init__(self, zygote: Zygote, config: Path, out: Path, env: dict | None = None) -> None:
        self.zygote, self.log = zygote, out.parent / f"{out.name}.log"
        argv = ["--config", str(config), "--out-dir", str(out), "--quiet"]
        self.pid = zygote.ask(argv=argv, env=env or {}, log=str(self.log))["pid"]
        self.returncode: int | None = None

    def poll(self) -> int | None:
        if self.returncode is None:
            self.returncode = self.zygote.ask(pid=self.pid, block=False)["status"]
        return self.returncode

    def wait(self, timeout: float = 300) -> int:
        deadline = time.monotonic() + timeout
        while self.poll() is None:
            if time.monotonic() > deadline:
                self.kill()
                pytest.fail(f"training process {self.pid} still running after {timeout} s: {self.output()}")
            time.sleep(0.02)
        return self.returncode

    def kill(self) -> None:
        os.kill(self.pid, signal.SIGKILL)
        self.returncode = self.zygote.ask(pid=self.pid, block=True)["status"]

    def output(self) -> str:
        return self.log.read_text()


def _logged_step(out: Path) -> int:
    """The last step in ``metrics.csv`` (0 if none)."""
    try:
        with open(out / "metrics.csv", newline="") as f:
            rows = [r for r in csv.reader(f) if r and r[0].isdigit()]
    except FileNotFoundError:
        return 0
    return int(rows[-1][0]) if rows else 0


def _losses(out: Path) -> list[tuple[str, str]]:
    with open(out / "metrics.csv", newline="") as f:
        return [(r["step"], r["loss"]) for r in csv.DictReader(f)]


def _kill_after(proc: Training, out: Path, step: int, delay: float, timeout: float = 120) -> bool:
    """SIGKILL ``proc`` ``delay`` s after it logged ``step``; False if it exited first."""
    deadline = time.monotonic() + timeout
    while _logged_step(out) < step:
        if proc.poll() is not None:
            return False
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"no progress to step {step} in {timeout} s")
        time.sleep(0.005)
    time.sleep(delay)
    if proc.poll() is not None:
        return False
    proc.kill()
    return True


@pytest.fixture
def zygote():
    z = Zygote()
    yield z
    z.close()


def test_random_kills_and_resumes_are_bit_exact(tmp_path, zygote):
    rng = random.Random(20250611)
    npz = write_cifar_slice(tmp_path / "c10.npz", "train", 40)  # 5 batches per epoch: the run crosses epochs
    config = tmp_path / "run.yaml"
    config.write_text("".join(f"{k}: {v}\n" for k, v in {**SETTINGS, "dataset": f"npz:{npz}"}.items()))

    whole = Training(zygote, config, tmp_path / "whole")
    assert whole.wait() == 0, whole.output()

    out = tmp_path / "killed"
    kills, log = 0, []
    # from inside, before a rename: config.yaml (write 1), a checkpoint (writes 2-4)
    for n in (1, 2, 3, 4):
        proc = Training(zygote, config, out, {FAULT_KILL_BEFORE_RENAME: str(n)})
        assert proc.wait() == -signal.SIGKILL, proc.output()
        left = sorted(p.name for p in out.rglob(".*.tmp"))
        assert left, f"write {n}: no temporary left behind"
        kills += 1
        log.append(f"hook at write {n}, logged step {_logged_step(out)}: left {left}")
    # from outside, at a random moment after a random step: the new process's own rows start 2 steps past
    # its checkpoint (the killed one logged at most 1 step past it)
    # (delays stay below a few steps' time, so that fast steps leave room for at least six such kills)
    outside = 0
    for _ in range(14):
        step = _checkpoint_step(out) + 2 + rng.randint(0, 1)
        if step >= STEPS - 2 or outside == 8:
            break
        delay = rng.uniform(0.0, 0.12)
        if _kill_after(Training(zygote, config, out), out, step, delay):
            kills, outside = kills + 1, outside + 1
            log.append(f"SIGKILL {delay:.3f} s after step {step} (then {_checkpoint_names(out)})")
    # the final model write: every step is done, the model's temporary is complete, the rename never happens
    # (writes of a resumed process: config.yaml, one checkpoint per remaining step, then the model)
    proc = Training(zygote, config, out, {FAULT_KILL_BEFORE_RENAME: str(2 + STEPS - _checkpoint_step(out))})
    if proc.wait() == -signal.SIGKILL:
        kills += 1
        log.append(f"hook before the rename of the model: left {sorted(p.name for p in out.glob('.*.tmp'))}")
    assert kills >= 10, log

    final = Training(zygote, config, out)
    assert final.wait() == 0, final.output()
    a, b = model_weights(tmp_path / "whole"), model_weights(out)
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), (k, log)
    assert _losses(out) == _losses(tmp_path / "whole"), log
    assert not list(out.rglob("*.tmp")), "temporaries of interrupted writes are removed"
    assert not list(out.rglob("*.corrupt")), "a kill never leaves a partial checkpoint behind"


def _checkpoint_names(out: Path) -> list[str]:
    return [p.name for p in ckpt.list_checkpoints(out / "checkpoints")]


def _checkpoint_step(out: Path) -> int:
    found = ckpt.list_checkpoints(out / "checkpoints")
    return int(found[-1].name[5:13]) if found else 0
