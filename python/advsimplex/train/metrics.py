"""Metric sinks of a training run (main process only): ``metrics.csv``, ``eval.csv`` and TensorBoard."""

from __future__ import annotations

import csv
import os
from pathlib import Path


class MetricsLogger:
    """Appends rows of scalars to CSV files in ``out_dir`` and to TensorBoard (``out_dir/tensorboard``).

    On resume (``start_step > 0``) CSV rows past ``start_step`` are dropped, and TensorBoard purges
    events after it, so an interrupted run's tail is not logged twice.
    """

    def __init__(self, out_dir: str | os.PathLike, *, enabled: bool, tensorboard: bool, start_step: int = 0) -> None:
        self.out_dir, self.enabled = Path(out_dir), enabled
        self.writer = None
        if not enabled:
            return
        self.out_dir.mkdir(parents=True, exist_ok=True)
        for name in ("metrics.csv", "eval.csv"):
            _truncate_after(self.out_dir / name, start_step)
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(self.out_dir / "tensorboard"), purge_step=start_step or None)

    def log(self, step: int, values: dict[str, float], file: str = "metrics.csv", prefix: str = "train") -> None:
        """One row ``step, *values`` in ``file`` and one TensorBoard scalar per value (``prefix/name``)."""
        if not self.enabled:
            return
        path = self.out_dir / file
        row = {"step": step, **values}
        new = not path.is_file() or path.stat().st_size == 0
        with open(path, "a", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(row))
            if new:
                writer.writeheader()
            writer.writerow(row)
        if self.writer is not None:
            for name, value in values.items():
                self.writer.add_scalar(f"{prefix}/{name}", value, step)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


def _truncate_after(path: Path, step: int) -> None:
    """Keep the header and the rows with ``step <= step`` (all of them are dropped for step 0)."""
    if not path.is_file():
        return
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    if not rows:
        return
    kept = [rows[0]] + [r for r in rows[1:] if r and int(r[0]) <= step] if step > 0 else []
    with open(path, "w", newline="") as f:
        csv.writer(f).writerows(kept)
