"""`attractor demo`: learn 6 x 6 Sudoku on a CPU; `attractor demo solver`: a small fixed point.

`sudoku_demo` is the project's main job end to end, on data it makes itself: generate a
seeded split of minimal 6 x 6 puzzles, train `reasoner-cpu` (the paper's reasoner scheme,
the winner on 6 x 6 at 10 minutes in README.md) through the shared trainer for a fixed
wall-clock budget (the packaged config sudoku6-cpu), then evaluate the exported (EMA)
model on the 1000 held-out puzzles at its own depth and with the solver cut to T = 0, 1,
2, 4, 6 iterations per supervision step, and draw accuracy against depth. It works from
any directory: the config ships with the package.

`solver_demo` prints Picard against Anderson on the attractor-head fixed point of
`attractor.nn.block_problem`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from attractor.train.config import RunConfig


def run(args: argparse.Namespace) -> int:
    """`attractor demo [sudoku|solver]`; bad input is one line on stderr."""
    if args.which == "solver":
        solver_demo()
        return 0
    try:
        sudoku_demo(args.data, args.out, args.minutes)
    except (ValueError, OSError) as err:
        print(f"attractor demo: {err}", file=sys.stderr)
        return 2
    return 0


def solver_demo() -> None:
    """Print Picard's and Anderson's residual traces side by side."""
    from attractor.nn.block_problem import residual_traces

    traces = residual_traces()
    print("Fixed point of one gated transformer block, f(y) = y0 + D(y + y0), float64")
    print(f"{'iter':>4}  {'picard':>10}  {'anderson':>10}")
    n = max(len(t) for t in traces.values())
    for k in list(range(0, n, 5)) + [n - 1]:
        cells = [f"{t[k]:10.2e}" if k < len(t) else " " * 10 for t in traces.values()]
        print(f"{k + 1:>4}  " + "  ".join(cells))
    for method, t in traces.items():
        print(f"{method}: {len(t)} f-evaluations, final residual {t[-1]:.2e}")


DEMO_DEPTHS = [0, 1, 2, 4, 6]  # reasoner-cpu's T_max is 6 (each of its solves)


def demo_config(
    data_dir: str, out_dir: str, minutes: float, config: str = "sudoku6-cpu"
) -> RunConfig:
    """The packaged config `config` (found without the working directory) on the split in
    `data_dir`, writing to `out_dir`, for `minutes` of training."""
    from attractor.train.config import load_config

    sets = [f"data.source={data_dir}", f"train.out_dir={out_dir}",
            f"train.time_budget_s={60 * minutes}"]  # fmt: skip
    return load_config(config, sets)


def sudoku_demo(
    data_dir: str = "data/sudoku6",
    out_dir: str = "runs/demo-sudoku6",
    minutes: float = 10.0,
    config: str = "sudoku6-cpu",
) -> dict:
    """Generate (once), train (resuming a finished run only re-evaluates), evaluate, plot."""
    from attractor.data.puzzles import build_sudoku_split
    from attractor.eval.loading import load_grid_model_and_puzzles
    from attractor.eval.plots import plot_results
    from attractor.eval.puzzle_metrics import puzzle_depth_sweep
    from attractor.eval.results import write_result
    from attractor.train.trainer import Trainer

    if not (Path(data_dir) / "split.json").is_file():
        print(f"generating 1000 + 1000 minimal 6x6 Sudoku puzzles into {data_dir} ...")
        build_sudoku_split(data_dir, box=(2, 3), n_train=1000, n_test=1000, seed=0,
                           workers=2, minimal=True)  # fmt: skip
    trainer = Trainer(demo_config(data_dir, out_dir, minutes, config))
    print(f"training {trainer.cfg.model.preset} ({trainer.raw.num_params() / 1e6:.2f}M "
          f"parameters) for {minutes:g} minutes on {torch.get_num_threads()} threads")  # fmt: skip
    trainer.fit()
    model, data, _ = load_grid_model_and_puzzles(Path(out_dir) / "model", data_dir)
    result = puzzle_depth_sweep(model, data, DEMO_DEPTHS)
    result["training"] = {"steps": trainer.step, "seconds": round(trainer.train_seconds, 1)}
    path = write_result(Path(out_dir) / "depth.json", result)
    png = plot_results(result, path.with_suffix(".png"))
    full = result["full"]
    print(f"held-out puzzles: {full['puzzles']}")
    print(f"exact accuracy at full depth: {100 * full['exact_acc']:.1f} %  "
          f"(cells {100 * full['cell_acc']:.1f} %, {full['solver_iters']:.1f} solver "
          f"iterations a step, halting after {full['halt_step']:.1f} of "
          f"{model.config.n_sup} steps)")  # fmt: skip
    for row in result["depth"]:
        print(f"exact accuracy at T = {row['T']}: {100 * row['exact_acc']:.1f} %  "
              f"(cells {100 * row['cell_acc']:.1f} %)")  # fmt: skip
    print("(T = 0: no solver iteration in any supervision step, so the latents never leave "
          "their initial state: the reasoner has no proposal to fall back on)")  # fmt: skip
    print(f"wrote {path} and {png}")
    return result
