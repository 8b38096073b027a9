"""CPU proxies of the paper's reasoning table (Table 2): equal parameters, equal wall clock.

Every model trains through the shared trainer on the same split, with the same recipe
(configs/<task>.yaml), for the same budget of training seconds (evaluation excluded); the
held-out exact accuracy is logged against training time, and the final (EMA) model is
evaluated on every held-out puzzle. Runs go two at a time, one thread each (2 cores), so every model
gets the same share of the machine. Tasks:

- sudoku6-cpu: 6 x 6 (2 x 3 boxes), minimal unique puzzles, 1000 train / 1000 test;
- sudoku9-cpu: 9 x 9, unique, at most 32 givens;
- maze-cpu: 12 x 12 mazes, shortest path above the scaled hard threshold.

    python benchmarks/reasoning_cpu.py                       # all tasks, 20 minutes a model
    python benchmarks/reasoning_cpu.py --tasks sudoku6-cpu --minutes 5 --name reasoning_quick
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import RESULTS, write_result  # noqa: E402

from attractor.config import load_config  # noqa: E402
from attractor.data.puzzles import (  # noqa: E402
    PuzzleDataset,
    build_maze_split,
    build_sudoku_split,
    load_split,
)
from attractor.plots import plot_results  # noqa: E402
from attractor.pretrained import load_pretrained  # noqa: E402
from attractor.puzzle_eval import evaluate_puzzles  # noqa: E402
from attractor.train.trainer import Trainer  # noqa: E402

MODELS = ["reasoner-cpu", "trm-cpu", "grid-transformer-cpu", "grid-attractor-cpu"]

# task -> (config, how to make its split)
TASKS: dict[str, tuple[str, Any]] = {
    "sudoku6-cpu": (
        "configs/sudoku6-cpu.yaml",
        lambda out: build_sudoku_split(out, box=(2, 3), seed=0, workers=2, minimal=True),
    ),
    "sudoku9-cpu": (
        "configs/sudoku9-cpu.yaml",
        lambda out: build_sudoku_split(out, box=(3, 3), seed=0, workers=2, max_givens=32),
    ),
    "maze-cpu": ("configs/maze-cpu.yaml", lambda out: build_maze_split(out, size=12, seed=0)),
}


def curve(run_dir: Path) -> list[dict[str, float]]:
    """(elapsed_s, exact_acc, cell_acc) of every evaluation logged in metrics.csv."""
    with (run_dir / "metrics.csv").open() as fh:
        rows = [r for r in csv.DictReader(fh) if r["exact_acc"]]
    return [
        {
            "elapsed_s": float(r["elapsed_s"] or 0.0),
            "exact_acc": float(r["exact_acc"]),
            "cell_acc": float(r["cell_acc"]),
        }
        for r in rows
    ]


def train_one(task: str, preset: str, data_dir: Path, minutes: float, work: Path) -> dict:
    """Train `preset` on the task for `minutes` of training steps; its curve and final
    held-out metrics (every test puzzle), also written to the run's result.json."""
    config, _ = TASKS[task]
    run_dir = work / task / preset
    shutil.rmtree(run_dir, ignore_errors=True)
    sets = [
        f"model.preset={preset}",
        f"data.source={data_dir}",
        f"train.out_dir={run_dir}",
        f"train.time_budget_s={60 * minutes}",
        "train.progress=false",
    ]
    trainer = Trainer(load_config(config, sets))
    trainer.fit()
    model = load_pretrained(str(run_dir / "model"))
    _, test, record = load_split(data_dir)
    final = evaluate_puzzles(model, PuzzleDataset(test, record["kind"], augment=False))
    print(f"{task} {preset}: exact {100 * final['exact_acc']:.1f} % after "
          f"{trainer.train_seconds / 60:.1f} min, {trainer.step} steps", flush=True)  # fmt: skip
    result = {
        "params": model.num_params(),
        "steps": trainer.step,
        "train_seconds": trainer.train_seconds,
        "threads": torch.get_num_threads(),
        "final": final,
        "curve": curve(run_dir),
    }
    (run_dir / "result.json").write_text(json.dumps(result, indent=1) + "\n")
    return result


def run_all(jobs: list[tuple[str, str]], args: argparse.Namespace) -> None:
    """Every (task, preset) as its own process, `args.jobs` at a time with
    `args.threads` threads each, so that concurrent runs share the cores evenly."""
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
    waiting, running = list(jobs), []
    while waiting or running:
        while waiting and len(running) < args.jobs:
            task, preset = waiting.pop(0)
            cmd = [sys.executable, __file__, "--one", f"{task}:{preset}", "--minutes",
                   str(args.minutes), "--data", args.data, "--work", args.work]  # fmt: skip
            running.append(subprocess.Popen(cmd, env=env))
        time.sleep(2)
        failed = [p for p in running if p.poll() not in (None, 0)]
        if failed:
            sys.exit(f"reasoning_cpu: {' '.join(failed[0].args)} failed")
        running = [p for p in running if p.poll() is None]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tasks", default=",".join(TASKS), help="comma-separated task names")
    ap.add_argument("--models", default=",".join(MODELS), help="comma-separated presets")
    ap.add_argument("--minutes", type=float, default=20.0, help="training budget per model")
    ap.add_argument("--jobs", type=int, default=2, help="runs side by side (default 2)")
    ap.add_argument("--threads", type=int, default=1, help="threads per run (default 1)")
    ap.add_argument("--data", default="data/bench", help="where the splits are made once")
    ap.add_argument("--work", default="runs/reasoning_cpu", help="run directories")
    ap.add_argument("--name", default="reasoning_cpu", help="results/NAME.json and .png")
    ap.add_argument("--one", help=argparse.SUPPRESS)  # TASK:PRESET, run by run_all
    args = ap.parse_args()
    if args.one:
        task, preset = args.one.split(":")
        train_one(task, preset, Path(args.data) / task, args.minutes, Path(args.work))
        return
    tasks, presets = args.tasks.split(","), args.models.split(",")
    for task in tasks:
        if task not in TASKS:
            sys.exit(f"reasoning_cpu: unknown task {task!r}; choose from {', '.join(TASKS)}")
        if not (Path(args.data) / task / "split.json").is_file():
            TASKS[task][1](Path(args.data) / task)
    run_all([(t, p) for t in tasks for p in presets], args)
    results = {
        t: {p: json.loads((Path(args.work) / t / p / "result.json").read_text()) for p in presets}
        for t in tasks
    }
    result = {
        "result": "training_curves",
        "minutes": args.minutes,
        "jobs": args.jobs,
        "threads_per_run": args.threads,
        "tasks": results,
    }
    path = write_result(args.name, result)
    plot_results(result, RESULTS / f"{args.name}.png")
    for t in tasks:
        for p in presets:
            final = results[t][p]["final"]
            print(f"{t:12s} {p:22s} exact {100 * final['exact_acc']:5.1f} %  "
                  f"cells {100 * final['cell_acc']:5.1f} %")  # fmt: skip
    print(f"wrote {path} and its .png")


if __name__ == "__main__":
    main()
