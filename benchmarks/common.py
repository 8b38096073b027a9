"""What every benchmark records next to its numbers: command, commit, machine, date."""

from __future__ import annotations

import argparse
import csv
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from attractor.core.atomic import atomic_write_json
from attractor.core.provenance import provenance
from attractor.train.checkpoint import CHECKPOINT_NAME
from attractor.train.config import load_config

RESULTS = Path(__file__).parent / "results"
SOURCE = Path(__file__).resolve().parent
# the checkout's commit when the benchmark started, i.e. of the code it imported and ran
COMMIT_AT_START = provenance(source=SOURCE)["commit"]


def write_result(name: str, numbers: dict) -> Path:
    """Write benchmarks/results/NAME.json atomically, with this run's provenance. "commit" is
    the commit the run started at; a checkout that moved on during a long run is recorded
    beside it as "commit_at_write"."""
    record = provenance(source=SOURCE)
    if record["commit"] != COMMIT_AT_START:
        record = {**record, "commit": COMMIT_AT_START, "commit_at_write": record["commit"]}
    return atomic_write_json(RESULTS / f"{name}.json", {**record, **numbers})


def parse_depths(text: str) -> list[int]:
    """'4,8,16' -> [4, 8, 16]; every depth at least 1 (the benchmarks' --depths)."""
    try:
        depths = [int(d) for d in text.split(",")]
    except ValueError:
        depths = []
    if not depths or min(depths) < 1:
        raise argparse.ArgumentTypeError(f"expected e.g. 4,8,16 (each >= 1), got {text!r}")
    return depths


def read_metrics(run_dir: Path) -> list[dict[str, float | None]]:
    """The rows of RUN_DIR/metrics.csv as numbers (empty cells become None)."""
    with (Path(run_dir) / "metrics.csv").open() as fh:
        return [
            {k: float(v) if v not in ("", None) else None for k, v in row.items()}
            for row in csv.DictReader(fh)
        ]


SEED_HELP = (
    "train.seed of every run: the initialisation and the models' own draws (the data split "
    "and batch order stay those of data.seed)"
)
RESUME_CHECKPOINT_EVERY = 25  # steps between the checkpoints of a resumable run
RESUME_HELP = (
    "continue each run from the checkpoint in its run directory instead of starting it over "
    f"(resumable runs checkpoint every {RESUME_CHECKPOINT_EVERY} steps, so a killed benchmark "
    "loses at most that many steps; wall_s and peak_rss_mib are then the last leg's)"
)


def train_in_subprocess(
    config: str | None, sets: list[str], threads: int | None = None, resume: bool = False
) -> dict[str, Any]:
    """Run `attractor train CONFIG --set ...` in a child process (so that its peak memory is
    its own) and return its wall seconds, peak resident memory (MiB), metrics rows and
    whether it resumed.

    The run's directory is the config's train.out_dir; it is emptied first, unless `resume`:
    then the run checkpoints every RESUME_CHECKPOINT_EVERY steps and continues from the
    checkpoint it finds there (the trainer refuses one of another configuration). A failed
    run stops the benchmark with the child's exit status.
    """
    if resume:
        sets = [*sets, f"train.checkpoint_every={RESUME_CHECKPOINT_EVERY}"]
    out_dir = Path(load_config(config, sets).train.out_dir)
    resumed = resume and (out_dir / CHECKPOINT_NAME).is_file()
    if not resume:
        shutil.rmtree(out_dir, ignore_errors=True)
    env = dict(os.environ)
    if threads is not None:
        env["OMP_NUM_THREADS"] = str(threads)
    cmd = [sys.executable, "-m", "attractor", "train"]
    cmd += ([config] if config else []) + [a for s in sets for a in ("--set", s)]
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit(f"benchmark: {' '.join(cmd)} failed (exit {os.waitstatus_to_exitcode(status)})")
    return {
        "out_dir": str(out_dir),
        "wall_s": wall,
        "peak_rss_mib": usage.ru_maxrss / 1024,  # Linux reports KiB
        "metrics": read_metrics(out_dir),
        "resumed": resumed,
    }


PYDOCS = Path("data/pydocs")


def ensure_pydocs(directory: Path = PYDOCS, vocab_size: int = 4096) -> Path:
    """The python-docs corpus (Debian's python3.11-doc sources) as token shards, made once with
    `attractor data text --source python-docs --out DIRECTORY --vocab-size 4096
    --val-fraction 0.05` (5 % of the documents held out: about 150K tokens)."""
    if not (Path(directory) / "meta.json").is_file():
        cmd = [sys.executable, "-m", "attractor", "data", "text", "--source",
               "python-docs", "--out", str(directory), "--vocab-size", str(vocab_size),
               "--val-fraction", "0.05", "--no-progress"]  # fmt: skip
        if subprocess.run(cmd).returncode != 0:
            sys.exit("benchmark: the python-docs corpus could not be made (the reason is above)")
    return Path(directory)
