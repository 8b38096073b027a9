"""Our Anderson against torchdeq's on one transformer-block fixed point (issue: engine).

Same f for both: one causal gated pre-norm block from a fixed seed (attractor.demo), B=8,
T=256, d=256, float32, CPU, solved to relative residual 1e-4 with history 5. The two
solvers run alternately (the order flips every repeat), `--repeats` times each, so the
ratio is taken side by side.
Also reports the time each solver spends outside f as a fraction of the time inside f.

    python benchmarks/solver_vs_torchdeq.py            # needs: pip install torchdeq==0.1.0
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import write_result  # noqa: E402

import attractor as at  # noqa: E402
from attractor.nn.block_problem import block_problem  # noqa: E402


class TimedMap:
    """Wraps f to count evaluations and the wall time spent inside it."""

    def __init__(self, f):
        self.f, self.calls, self.seconds = f, 0, 0.0

    def __call__(self, y):
        t = time.perf_counter()
        out = self.f(y)
        self.seconds += time.perf_counter() - t
        self.calls += 1
        return out


def run_ours(f, y0, tol, history, max_iter):
    cfg = at.SolverConfig("anderson", tol=tol, max_iter=max_iter, history=history)
    y, stats = at.solve(f, y0, cfg)
    return y, float(stats.residual.max())


def run_torchdeq(f, y0, tol, history, max_iter):
    from torchdeq.solver.anderson import anderson_solver

    y, _, info = anderson_solver(f, y0, max_iter=max_iter, tol=tol, stop_mode="rel", m=history)
    return y, float(info["rel_lowest"].max())


def measure(runner, f, y0, args) -> dict:
    timed = TimedMap(f)
    t = time.perf_counter()
    with torch.no_grad():
        y, reported = runner(timed, y0, args.tol, args.history, args.max_iter)
    wall = time.perf_counter() - t
    with torch.no_grad():
        fy = f(y)
    # one residual definition for both: |f(y) - y| / |y| of the returned point
    true = float(((fy - y).flatten(1).norm(dim=1) / y.flatten(1).norm(dim=1)).max())
    return {
        "wall_s": wall,
        "f_evals": timed.calls,
        "time_in_f_s": timed.seconds,
        "outside_f_fraction": (wall - timed.seconds) / timed.seconds,
        "reported_residual": reported,
        "true_residual": true,
    }


def summarise(runs: list[dict]) -> dict:
    keys = ("wall_s", "time_in_f_s", "f_evals", "outside_f_fraction", "true_residual")
    return {k: statistics.median(r[k] for r in runs) for k in keys}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--tol", type=float, default=1e-4)
    ap.add_argument("--history", type=int, default=5)
    ap.add_argument("--max-iter", type=int, default=100)
    ap.add_argument("--std", type=float, default=0.05, help="weight scale of the block")
    args = ap.parse_args()
    f, y0 = block_problem(batch=8, seq=256, dim=256, std=args.std)
    runners = {"ours": run_ours, "torchdeq": run_torchdeq}
    with torch.no_grad():
        f(y0)  # warm-up
    runs: dict[str, list[dict]] = {name: [] for name in runners}
    for i in range(args.repeats):
        order = list(runners) if i % 2 == 0 else list(reversed(runners))  # no order bias
        for name in order:
            runs[name].append(measure(runners[name], f, y0, args))
    med = {name: summarise(r) for name, r in runs.items()}
    ratio = med["ours"]["wall_s"] / med["torchdeq"]["wall_s"]
    path = write_result(
        "solver",
        {
            "problem": {
                "batch": 8,
                "seq": 256,
                "dim": 256,
                "dtype": "float32",
                "std": args.std,
                "tol": args.tol,
                "history": args.history,
                "max_iter": args.max_iter,
            },
            "repeats": args.repeats,
            "median": med,
            "wall_ratio_ours_over_torchdeq": ratio,
            "runs": runs,
        },
    )
    print(
        f"{'solver':<10}{'f-evals':>9}{'wall s':>9}{'in f s':>9}{'outside f':>11}{'residual':>11}"
    )
    for name, m in med.items():
        print(
            f"{name:<10}{m['f_evals']:>9.0f}{m['wall_s']:>9.3f}{m['time_in_f_s']:>9.3f}"
            f"{100 * m['outside_f_fraction']:>10.1f}%{m['true_residual']:>11.1e}"
        )
    print(f"wall-time ratio ours / torchdeq: {ratio:.3f} (median of {args.repeats})")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
