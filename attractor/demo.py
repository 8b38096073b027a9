"""`make demo`: learn 6 x 6 Sudoku on a CPU; and a small fixed point for the solver demo.

`sudoku_demo` is the project's main job end to end, on data it makes itself: generate a
seeded split of minimal 6 x 6 puzzles, train `reasoner-cpu` through the shared trainer for
a fixed wall-clock budget (configs/sudoku6-cpu.yaml), then evaluate the exported (EMA)
model on the 1000 held-out puzzles at its own depth and with the solver cut to T = 0, 1,
2, 4, 6 iterations per supervision step, and draw accuracy against depth.

`block_problem` and `residual_traces` are the attractor-head fixed point that
`attractor demo solver` and the solver benchmark use.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import Tensor

from attractor.layers import init_weights
from attractor.models.attractor import AttractorHead
from attractor.solvers import Map, SolverConfig, solve


def block_problem(
    batch: int = 8,
    seq: int = 256,
    dim: int = 256,
    n_heads: int = 4,
    std: float = 0.05,
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
) -> tuple[Map, Tensor]:
    """f(y) = y0 + D(y + y0) for one causal gated pre-norm block from a fixed seed, and y0.

    ``std`` is the weight scale at initialisation; 0.05 gives a map that contracts by about
    a half per step, a typical value for a freshly initialised head.
    """
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    head = AttractorHead(dim, n_heads, 4 * dim).to(dtype)
    init_weights(head, std=std)
    head.requires_grad_(False)
    y0 = torch.randn(batch, seq, dim, generator=gen).to(dtype)
    return (lambda y: head(y, y0)), y0


def residual_traces(
    batch: int = 4, seq: int = 64, dim: int = 128, tol: float = 1e-6, max_iter: int = 150
) -> dict[str, list[float]]:
    """Max relative residual per iteration of Picard and Anderson on one block problem.

    The weights are drawn at std 0.08, where Picard contracts by only about 0.87 a step.
    """
    f, y0 = block_problem(batch, seq, dim, std=0.08, dtype=torch.float64)
    traces = {}
    for method in ("picard", "anderson"):
        _, stats = solve(f, y0, SolverConfig(method, tol=tol, max_iter=max_iter))
        traces[method] = stats.trace
    return traces


def solver_demo() -> None:
    """Print Picard's and Anderson's residual traces side by side."""
    traces = residual_traces()
    print("Fixed point of one gated transformer block, f(y) = y0 + D(y + y0), float64")
    print(f"{'iter':>4}  {'picard':>10}  {'anderson':>10}")
    n = max(len(t) for t in traces.values())
    for k in list(range(0, n, 5)) + [n - 1]:
        cells = [f"{t[k]:10.2e}" if k < len(t) else " " * 10 for t in traces.values()]
        print(f"{k + 1:>4}  " + "  ".join(cells))
    for method, t in traces.items():
        print(f"{method}: {len(t)} f-evaluations, final residual {t[-1]:.2e}")


DEMO_DEPTHS = [0, 1, 2, 4, 6]  # reasoner-cpu's T_max is 6


def sudoku_demo(
    data_dir: str = "data/sudoku6",
    out_dir: str = "runs/demo-sudoku6",
    minutes: float = 10.0,
    config: str = "configs/sudoku6-cpu.yaml",
) -> dict:
    """Generate (once), train (resuming a finished run only re-evaluates), evaluate, plot."""
    from attractor.config import load_config
    from attractor.data.puzzles import PuzzleDataset, build_sudoku_split, load_split
    from attractor.plots import plot_results
    from attractor.pretrained import load_pretrained
    from attractor.puzzle_eval import puzzle_depth_sweep
    from attractor.train.trainer import Trainer

    if not (Path(data_dir) / "split.json").is_file():
        print(f"generating 1000 + 1000 minimal 6x6 Sudoku puzzles into {data_dir} ...")
        build_sudoku_split(data_dir, box=(2, 3), n_train=1000, n_test=1000, seed=0,
                           workers=2, minimal=True)  # fmt: skip
    sets = [f"data.source={data_dir}", f"train.out_dir={out_dir}",
            f"train.time_budget_s={60 * minutes}"]  # fmt: skip
    trainer = Trainer(load_config(config, sets))
    print(f"training reasoner-cpu ({trainer.raw.num_params() / 1e6:.2f}M parameters) for "
          f"{minutes:g} minutes on {torch.get_num_threads()} threads")  # fmt: skip
    trainer.fit()
    model = load_pretrained(str(Path(out_dir) / "model"))
    _, test, _ = load_split(data_dir)
    data = PuzzleDataset(test, "sudoku", augment=False)
    result = puzzle_depth_sweep(model, data, DEMO_DEPTHS)
    result["training"] = {"steps": trainer.step, "seconds": round(trainer.train_seconds, 1)}
    path = Path(out_dir) / "depth.json"
    path.write_text(json.dumps(result, indent=1) + "\n")
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
