"""Where a protocol run keeps its files under ``--out`` (shared by the pipeline and the report)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

PROXY_ID = "proxy"
"""The run id of the pre-trained proxy itself (evaluated like every fine-tuned model)."""


@dataclass
class Paths:
    """``runs/<id>/`` (training), ``runs/<id>.json``, ``evals/<id>.<part>.json`` and ``logs/<id>.log``."""

    out: Path

    def run_dir(self, run_id: str) -> Path:
        return self.out / "runs" / run_id

    def run_record(self, run_id: str) -> Path:
        return self.out / "runs" / f"{run_id}.json"

    def eval_file(self, run_id: str, part: str) -> Path:
        return self.out / "evals" / f"{run_id}.{part}.json"

    def log_file(self, run_id: str) -> Path:
        return self.out / "logs" / f"{run_id}.log"
