"""CPU proxies of the paper's reasoning table (Table 2): equal parameters, equal wall clock.

Every model trains through the shared trainer on the same split, with the same recipe (the
packaged config of each task), for the same budget of training seconds (evaluation
excluded); the held-out exact accuracy is logged against training time, and the final (EMA) model is
evaluated on every held-out puzzle. Runs go two at a time, one thread each (2 cores), so every model
gets the same share of the machine. Tasks:

- sudoku6-cpu: 6 x 6 (2 x 3 boxes), minimal unique puzzles, 1000 train / 1000 test;
- sudoku9-cpu: 9 x 9, unique, at most 32 givens;
- maze8-cpu: 8 x 8 mazes, shortest path above the scaled hard threshold (> 5 moves): the
  maze proxy, where the one-pass models leave the "no cell on the path" plateau within 500 steps;
- maze-cpu: 12 x 12 mazes, the same rule (> 14); no model leaves the plateau in 20 minutes.

With several `--seeds`, every model trains once per seed (initialisation, data order
and augmentations all follow it; the split stays the same) and the final metrics are the
mean over seeds, with each seed's run kept beside them.

    python benchmarks/reasoning_cpu.py                       # all tasks, 20 minutes a model
    python benchmarks/reasoning_cpu.py --tasks sudoku6-cpu --minutes 5 --name reasoning_quick
    python benchmarks/reasoning_cpu.py --tasks sudoku6-cpu --models reasoner-joint-cpu,trm-cpu \
        --minutes 10 --seeds 0,1,2 --name reasoning_cpu_sudoku6_seeds
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

from attractor.data.puzzles import (  # noqa: E402
    build_maze_split,
    build_sudoku_split,
)
from attractor.eval.loading import load_grid_model_and_puzzles  # noqa: E402
from attractor.eval.plots import plot_results  # noqa: E402
from attractor.eval.puzzle_metrics import evaluate_puzzles  # noqa: E402
from attractor.train.config import load_config  # noqa: E402
from attractor.train.trainer import Trainer  # noqa: E402

# the paper's reasoner scheme and ours (joint), on the same network, then the baselines
MODELS = [
    "reasoner-cpu",
    "reasoner-joint-cpu",
    "trm-cpu",
    "grid-transformer-cpu",
    "grid-attractor-cpu",
]

# task -> (config, how to make its split)
TASKS: dict[str, tuple[str, Any]] = {
    "sudoku6-cpu": (
        "sudoku6-cpu",
        lambda out: build_sudoku_split(out, box=(2, 3), seed=0, workers=2, minimal=True),
    ),
    "sudoku9-cpu": (
        "sudoku9-cpu",
        lambda out: build_sudoku_split(out, box=(3, 3), seed=0, workers=2, max_givens=32),
    ),
    "maze8-cpu": ("maze-cpu", lambda out: build_maze_split(out, size=8, seed=0)),
    "maze-cpu": ("maze-cpu", lambda out: build_maze_split(out, size=12, seed=0)),
}
DEFAULT_TASKS = ["sudoku6-cpu", "sudoku9-cpu", "maze8-cpu"]


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


def run_dir(work: Path, task: str, preset: str, seed: int) -> Path:
    return work / task / preset / f"seed-{seed}"


def train_one(
    task: str, preset: str, seed: int, data_dir: Path, minutes: float, work: Path
) -> dict:
    """Train `preset` on the task for `minutes` of training steps from `seed`; its curve
    and final held-out metrics (every test puzzle), also written to the run's result.json."""
    config, _ = TASKS[task]
    out = run_dir(work, task, preset, seed)
    shutil.rmtree(out, ignore_errors=True)
    sets = [
        f"model.preset={preset}",
        f"data.source={data_dir}",
        f"data.seed={seed}",
        f"train.seed={seed}",
        f"train.out_dir={out}",
        f"train.time_budget_s={60 * minutes}",
        "train.progress=false",
    ]
    trainer = Trainer(load_config(config, sets))
    trainer.fit()
    model, test, _ = load_grid_model_and_puzzles(out / "model", str(data_dir))
    final = evaluate_puzzles(model, test)
    print(f"{task} {preset} seed {seed}: exact {100 * final['exact_acc']:.1f} % after "
          f"{trainer.train_seconds / 60:.1f} min, {trainer.step} steps", flush=True)  # fmt: skip
    result = {
        "seed": seed,
        "params": model.num_params(),
        "steps": trainer.step,
        "train_seconds": trainer.train_seconds,
        "threads": torch.get_num_threads(),
        "final": final,
        "curve": curve(out),
    }
    (out / "result.json").write_text(json.dumps(result, indent=1) + "\n")
    return result


def summarize(runs: list[dict]) -> dict:
    """One model's runs (one per seed): the parameter count, every run, and the mean and
    the spread (min, max) over seeds of each final metric."""
    finals = [r["final"] for r in runs]
    keys = [k for k in finals[0] if isinstance(finals[0][k], int | float)]
    return {
        "params": runs[0]["params"],
        "final": {k: sum(f[k] for f in finals) / len(finals) for k in keys},
        "final_min": {k: min(f[k] for f in finals) for k in keys},
        "final_max": {k: max(f[k] for f in finals) for k in keys},
        "runs": runs,
    }


def run_all(jobs: list[tuple[str, str, int]], args: argparse.Namespace) -> None:
    """Every (task, preset, seed) as its own process, `args.jobs` at a time with
    `args.threads` threads each, so that concurrent runs share the cores evenly."""
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
    waiting, running = list(jobs), []
    while waiting or running:
        while waiting and len(running) < args.jobs:
            task, preset, seed = waiting.pop(0)
            cmd = [sys.executable, __file__, "--one", f"{task}:{preset}:{seed}", "--minutes",
                   str(args.minutes), "--data", args.data, "--work", args.work]  # fmt: skip
            running.append(subprocess.Popen(cmd, env=env))
        time.sleep(2)
        failed = [p for p in running if p.poll() not in (None, 0)]
        if failed:
            sys.exit(f"reasoning_cpu: {' '.join(failed[0].args)} failed")
        running = [p for p in running if p.poll() is None]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tasks", default=",".join(DEFAULT_TASKS), help="comma-separated tasks")
    ap.add_argument("--models", default=",".join(MODELS), help="comma-separated presets")
    ap.add_argument("--minutes", type=float, default=20.0, help="training budget per model")
    ap.add_argument("--jobs", type=int, default=2, help="runs side by side (default 2)")
    ap.add_argument("--threads", type=int, default=1, help="threads per run (default 1)")
    ap.add_argument("--data", default="data/bench", help="where the splits are made once")
    ap.add_argument("--work", default="runs/reasoning_cpu", help="run directories")
    ap.add_argument("--name", default="reasoning_cpu", help="results/NAME.json and .png")
    ap.add_argument("--seeds", default="0", help="comma-separated seeds, a run each (0)")
    ap.add_argument("--one", help=argparse.SUPPRESS)  # TASK:PRESET:SEED, run by run_all
    args = ap.parse_args()
    if args.one:
        task, preset, seed = args.one.split(":")
        work = Path(args.work)
        train_one(task, preset, int(seed), Path(args.data) / task, args.minutes, work)
        return
    tasks, presets = args.tasks.split(","), args.models.split(",")
    try:
        seeds = [int(s) for s in args.seeds.split(",")]
    except ValueError:
        sys.exit(f"reasoning_cpu: --seeds {args.seeds!r} is not a comma-separated list of integers")
    for task in tasks:
        if task not in TASKS:
            sys.exit(f"reasoning_cpu: unknown task {task!r}; choose from {', '.join(TASKS)}")
        if not (Path(args.data) / task / "split.json").is_file():
            TASKS[task][1](Path(args.data) / task)
    run_all([(t, p, s) for t in tasks for s in seeds for p in presets], args)
    work = Path(args.work)
    results = {
        t: {
            p: summarize(
                [json.loads((run_dir(work, t, p, s) / "result.json").read_text()) for s in seeds]
            )
            for p in presets
        }
        for t in tasks
    }
    result = {
        "result": "training_curves",
        "minutes": args.minutes,
        "jobs": args.jobs,
        "threads_per_run": args.threads,
        "seeds": seeds,
        "tasks": results,
    }
    path = write_result(args.name, result)
    plot_results(result, RESULTS / f"{args.name}.png")
    for t in tasks:
        for p in presets:
            r = results[t][p]
            exact = [100 * r[k]["exact_acc"] for k in ("final", "final_min", "final_max")]
            spread = f" (seeds {exact[1]:.1f}-{exact[2]:.1f})" if len(seeds) > 1 else ""
            print(f"{t:12s} {p:22s} exact {exact[0]:5.1f} %{spread}  "
                  f"cells {100 * r['final']['cell_acc']:5.1f} %")  # fmt: skip
    print(f"wrote {path} and its .png")


if __name__ == "__main__":
    main()
