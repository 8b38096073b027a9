"""Pictures of results JSON files: `attractor plot RESULTS.json [--out PNG]`.

A result names what it is in its "result" field; each known kind has one drawing:
- "depth_sweep" (from `attractor eval --sweep`): loss against the fixed depth T, with the
  adaptive runs at each tolerance placed at their mean iterations, and iterations against
  tolerance;
- "puzzle_depth" (from `attractor eval --depths` and `make demo`): exact and cell accuracy
  against the solver depth T per supervision step, the model's own depth as a line;
- "training_curves" (from benchmarks/reasoning_cpu.py): exact accuracy against training
  time, one line per model, one panel per task;
- anything with a "trace" list (a solver's max relative residual per iteration, or a list
  of such traces): the residual on a log axis.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _title(results: dict[str, Any], what: str) -> str:
    model = results.get("model") or {}
    name = model.get("layout") or results.get("kind") or ""
    date = str(results.get("date", ""))[:10]
    return " · ".join(part for part in (what, name, date) if part)


def plot_depth_sweep(results: dict[str, Any], out: Path) -> Path:
    """Loss against T (log2 axis after 0) and solver iterations against tolerance."""
    plt = _pyplot()
    depth, tol = results["depth"], results.get("tolerance") or []
    fig, axes = plt.subplots(1, 2 if tol else 1, figsize=(11 if tol else 6, 4.2), squeeze=False)
    ax = axes[0, 0]
    ax.plot([r["T"] for r in depth], [r["loss"] for r in depth], "o-", label="fixed T")
    if tol:
        ax.scatter(
            [r["iters_mean"] for r in tol],
            [r["loss"] for r in tol],
            marker="s",
            color="C1",
            zorder=3,
            label="adaptive (tol), at mean iterations",
        )
        for r in (tol[0], tol[-1]):  # the loosest and the tightest
            ax.annotate(
                f"tol {r['tol']:g}",
                (r["iters_mean"], r["loss"]),
                fontsize=7,
                textcoords="offset points",
                xytext=(4, 4),
            )
    ax.set_xscale("symlog", base=2, linthresh=1)
    ax.set_xticks([r["T"] for r in depth], [str(r["T"]) for r in depth])
    ax.set_xlabel("solver iterations T")
    ax.set_ylabel("validation loss (nats/token)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    if tol:
        ax = axes[0, 1]
        tols = [r["tol"] for r in tol]
        ax.plot(tols, [r["iters_mean"] for r in tol], "o-", label="mean per position")
        ax.plot(tols, [r["iters_max_mean"] for r in tol], "s--", label="mean per-sequence max")
        ax.set_xscale("log")
        ax.invert_xaxis()  # tighter tolerance to the right
        ax.set_xlabel("tolerance")
        ax.set_ylabel("solver iterations used")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(_title(results, "depth sweep"), fontsize=10)
    return _save(fig, out)


def plot_trace(results: dict[str, Any], out: Path) -> Path:
    """The solver's relative residual per iteration (one line per trace), log y."""
    plt = _pyplot()
    traces = results["trace"]
    if traces and not isinstance(traces[0], list):
        traces = [traces]
    labels = results.get("labels") or [None] * len(traces)
    fig, ax = plt.subplots(figsize=(6, 4.2))
    for trace, label in zip(traces, labels, strict=False):
        ax.semilogy(range(1, len(trace) + 1), trace, label=label)
    ax.set_xlabel("iteration")
    ax.set_ylabel("relative residual |f(y) - y| / |y|")
    ax.grid(alpha=0.3, which="both")
    if any(labels):
        ax.legend(fontsize=8)
    ax.set_title(_title(results, "solver residual"), fontsize=10)
    return _save(fig, out)


def plot_puzzle_depth(results: dict[str, Any], out: Path) -> Path:
    """Exact and cell accuracy against T, the adaptive solve as horizontal lines."""
    plt = _pyplot()
    rows, full = results["depth"], results["full"]
    fig, ax = plt.subplots(figsize=(6, 4.2))
    for key, color, name in (("exact_acc", "C0", "exact"), ("cell_acc", "C1", "cells")):
        ax.plot(
            [r["T"] for r in rows],
            [100 * r[key] for r in rows],
            "o-",
            color=color,
            label=f"{name}, solver cut to T",
        )
        ax.axhline(
            100 * full[key],
            color=color,
            ls="--",
            lw=1,
            label=f"{name}, adaptive ({full.get('solver_iters', 0):.1f} iterations)",
        )
    if rows:
        ax.set_xscale("symlog", base=2, linthresh=1)
        ax.set_xticks([r["T"] for r in rows], [str(r["T"]) for r in rows])
    ax.set_xlabel("solver iterations T per supervision step")
    ax.set_ylabel("accuracy on held-out puzzles (%)")
    ax.set_ylim(0, 100)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(
        _title(results, f"accuracy against depth ({full['puzzles']} puzzles)"), fontsize=10
    )
    return _save(fig, out)


def plot_training_curves(results: dict[str, Any], out: Path) -> Path:
    """Exact accuracy against training seconds; one panel per task, one line per model."""
    plt = _pyplot()
    tasks = results["tasks"]
    fig, axes = plt.subplots(1, len(tasks), figsize=(5.5 * len(tasks), 4.2), squeeze=False)
    for ax, (task, runs) in zip(axes[0], tasks.items(), strict=True):
        for name, run in runs.items():
            curve = run["curve"]
            ax.plot(
                [p["elapsed_s"] / 60 for p in curve],
                [100 * p["exact_acc"] for p in curve],
                "o-",
                ms=3,
                label=f"{name} ({run['params'] / 1e6:.2f}M)",
            )
        ax.set_xlabel("training time (minutes)")
        ax.set_ylabel("exact accuracy, held-out (%)")
        ax.set_ylim(0, 100)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        ax.set_title(task, fontsize=10)
    fig.suptitle(_title(results, "reasoning on CPU"), fontsize=10)
    return _save(fig, out)


def _save(fig: Any, out: Path) -> Path:
    """Lay out, write the PNG and free the figure."""
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    _pyplot().close(fig)
    return out


PLOTTERS = {
    "depth_sweep": plot_depth_sweep,
    "puzzle_depth": plot_puzzle_depth,
    "training_curves": plot_training_curves,
}


def plot_results(results: dict[str, Any], out: str | Path) -> Path:
    """Draw `results` into the PNG `out` by its "result" kind (or its "trace")."""
    out = Path(out)
    kind = results.get("result") if isinstance(results, dict) else None
    if kind in PLOTTERS:
        plotter = PLOTTERS[kind]
    elif isinstance(results, dict) and isinstance(results.get("trace"), list):
        plotter = plot_trace
    else:
        raise ValueError(
            f"no plot for result kind {kind!r}; known kinds: {', '.join(PLOTTERS)}, or any "
            "result with a 'trace' list"
        )
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        return plotter(results, out)
    except (KeyError, TypeError, ValueError) as err:
        raise ValueError(f"{kind or 'trace'} result is malformed ({err!r})") from None


def cli_plot(args: argparse.Namespace) -> int:
    """`attractor plot RESULTS.json [--out PNG]`."""
    path = Path(args.results)
    try:
        results = json.loads(path.read_text(encoding="utf-8"))
        out = plot_results(results, args.out or path.with_suffix(".png"))
    except FileNotFoundError:
        print(f"attractor plot: {path} does not exist", file=sys.stderr)
        return 2
    except json.JSONDecodeError as err:
        print(
            f"attractor plot: {path} is not valid JSON ({err.msg}, line {err.lineno})",
            file=sys.stderr,
        )
        return 2
    except (OSError, ValueError) as err:
        print(f"attractor plot: {path}: {err}", file=sys.stderr)
        return 2
    print(f"wrote {out}")
    return 0


def add_plot_parser(sub: Any) -> None:
    p = sub.add_parser("plot", help="draw a results JSON (depth sweep, solver trace) as PNG")
    p.add_argument("results", help="a JSON file written by attractor eval --sweep, ...")
    p.add_argument("--out", help="the PNG to write (default: RESULTS with .png)")
    p.set_defaults(run=cli_plot)
