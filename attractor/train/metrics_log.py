"""A run's log: metrics.csv, one row per logged step, and TensorBoard when installed.

The CSV is a log: rows are appended as the run goes (a crash keeps every row written so
far), so it is the one file of a run that is not written atomically. A run resumed from its
last checkpoint first drops the rows logged after it (`drop_after`), which it logs again.
"""

from __future__ import annotations

import contextlib
import csv
import io
from pathlib import Path
from typing import Any

from attractor.core.atomic import atomic_write_text


class MetricsLog:
    """metrics.csv (one row per logged step) and TensorBoard when it is installed."""

    TRAIN_FIELDS = (
        "step",
        "loss",
        "lr_factor",
        "grad_norm",
        "tokens_per_s",
        "solver_iters",
        "solver_stalled",
        "skipped",
        "elapsed_s",
        "train_flops",
    )

    def __init__(self, directory: Path, enabled: bool, eval_fields: tuple[str, ...] = ()):
        self.enabled = enabled
        self.fields = self.TRAIN_FIELDS + tuple(eval_fields)
        self.writer = None
        if not enabled:
            return
        directory.mkdir(parents=True, exist_ok=True)
        self.path = directory / "metrics.csv"
        if not self.path.exists():
            with self.path.open("w", newline="") as fh:
                csv.writer(fh).writerow(self.fields)
        with contextlib.suppress(ImportError):
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(directory / "tensorboard"))

    def drop_after(self, step: int) -> None:
        """Keep the header and the rows up to `step`: a run killed after its last
        checkpoint logged steps that its resumed run will log again."""
        if not self.enabled:
            return
        with self.path.open(newline="") as fh:
            rows = list(csv.reader(fh))
        kept = rows[:1] + [r for r in rows[1:] if r and int(float(r[0])) <= step]
        if len(kept) < len(rows):
            text = io.StringIO(newline="")
            csv.writer(text).writerows(kept)
            atomic_write_text(self.path, text.getvalue())

    def write(self, row: dict[str, Any]) -> None:
        if not self.enabled:
            return
        with self.path.open("a", newline="") as fh:
            csv.writer(fh).writerow([row.get(k, "") for k in self.fields])
        if self.writer is not None:
            for key, value in row.items():
                if key != "step" and isinstance(value, (int, float)):
                    self.writer.add_scalar(key, value, row["step"])
