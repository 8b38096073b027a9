"""Pictures of results JSON files (`attractor plot RESULTS.json [--out PNG]`).

A result names what it is in its "result" field; each known kind has one drawing:
- "depth_sweep" (from `attractor eval --sweep`): loss against the fixed depth T, with the
  adaptive runs at each tolerance placed at their mean iterations, and iterations against
  tolerance;
- "puzzle_depth" (from `attractor eval --depths` and `make demo`): exact and cell accuracy
  against the solver depth T per supervision step, the model's own depth as a line;
- "training_curves" (from benchmarks/reasoning_cpu.py): exact accuracy against training
  time, one line per model, one panel per task;
- "memory_vs_depth" (from benchmarks/memory_vs_depth.py): saved-for-backward MiB and peak
  RSS increase of one training step against the depth T, one line per configuration;
- "lm_pareto" (from benchmarks/lm_pareto.py): validation perplexity against training FLOPs
  and against training time, one line per model;
- "ablations" (from benchmarks/ablations.py): validation perplexity and training step time
  per variant, horizontal bars grouped by family, the baseline as a dashed line;
- "internalization" (from benchmarks/internalization.py): perplexity against the inference
  depth T (attractor, looped), training solver iterations against the step (attractor,
  DEQ), and each model's state trajectory over T on two principal components;
- "throughput" (from benchmarks/throughput.py): training tokens/s and achieved FLOP/s per
  preset, with the matmul peak measured in the same run as a line;
- anything with a "trace" list (a solver's max relative residual per iteration, or a list
  of such traces): the residual on a log axis.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from attractor.core.atomic import atomic_path


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
    """Held-out exact accuracy (top row) and cell accuracy (bottom row) against training
    minutes; a column per task, a colour per model and a line per seed (a model's "runs";
    results written before seeds hold their one run inline)."""
    plt = _pyplot()
    tasks = results["tasks"]
    fig, axes = plt.subplots(2, len(tasks), figsize=(5.5 * len(tasks), 7.6), squeeze=False)
    rows = (("exact_acc", "exact accuracy, held-out (%)"),
            ("cell_acc", "cell accuracy, blanks or path (%)"))  # fmt: skip
    for column, (task, models) in enumerate(tasks.items()):
        for ax, (metric, label) in zip(axes[:, column], rows, strict=True):
            for i, (name, model) in enumerate(models.items()):
                for j, run in enumerate(model.get("runs", [model])):
                    curve = run["curve"]
                    ax.plot(
                        [p["elapsed_s"] / 60 for p in curve],
                        [100 * p[metric] for p in curve],
                        "o-",
                        ms=3,
                        color=f"C{i}",
                        alpha=1.0 if j == 0 else 0.5,
                        label=f"{name} ({model['params'] / 1e6:.2f}M)" if j == 0 else None,
                    )
            ax.set_xlabel("training time (minutes)")
            ax.set_ylabel(label)
            ax.set_ylim(0, 100)
            ax.grid(alpha=0.3)
        axes[0, column].legend(fontsize=8)
        axes[0, column].set_title(task, fontsize=10)
    fig.suptitle(_title(results, "reasoning on CPU"), fontsize=10)
    return _save(fig, out)


def plot_lm_pareto(results: dict[str, Any], out: Path) -> Path:
    """Validation perplexity against training FLOPs and against training time, per model."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for preset, r in results["models"].items():
        curve = [p for p in r["curve"] if p["step"] > 0]
        label = f"{preset} ({r['params'] / 1e6:.1f}M)"
        axes[0].plot([p["train_flops"] for p in curve], [p["val_ppl"] for p in curve], "o-",
                     label=label)  # fmt: skip
        axes[1].plot([p["elapsed_s"] / 60 for p in curve], [p["val_ppl"] for p in curve], "o-",
                     label=label)  # fmt: skip
    axes[0].set_xscale("log")
    axes[0].set_xlabel("training FLOPs (counted from the iterations run)")
    axes[1].set_xlabel("training time (min)")
    for ax in axes:
        ax.set_yscale("log")
        ax.set_ylabel("validation perplexity")
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=8)
    fig.suptitle(_title(results, f"language modelling, {results['tokens_per_model']:,} tokens"))
    return _save(fig, out)


def plot_lm_size_series(results: dict[str, Any], out: Path) -> Path:
    """Final validation perplexity against parameters and against training FLOPs (log
    axes), one line per family across the widths, each point labelled with its width."""
    plt = _pyplot()
    sizes = results["sizes"]
    if not isinstance(sizes, list) or not sizes:
        raise ValueError("'sizes' must be a non-empty list of width pairs")
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for family in ("attractor", "gpt"):
        runs = [(s["width"], s[family]) for s in sizes]
        for ax, key in zip(axes, ("params", "train_flops"), strict=True):
            xs, ys = [r[key] for _, r in runs], [r["val_ppl"] for _, r in runs]
            ax.plot(xs, ys, "o-", label=family)
            for (width, _), x, y in zip(runs, xs, ys, strict=True):
                ax.annotate(f"d{width}", (x, y), xytext=(3, 3), fontsize=7,
                            textcoords="offset points")  # fmt: skip
    axes[0].set_xlabel("parameters")
    axes[1].set_xlabel("training FLOPs (counted from the iterations run)")
    for ax in axes:
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_ylabel("final validation perplexity")
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=8)
    what = f"size series, {results['tokens_per_param']} tokens per parameter"
    fig.suptitle(_title(results, what))
    return _save(fig, out)


def _ablation_rows(variants: dict[str, Any]) -> tuple[list[str], list[tuple[float, str, dict]]]:
    """The families in order of first appearance and (y, name, numbers) per variant, top
    to bottom, grouped by family with a gap between families."""
    if not isinstance(variants, dict) or not variants:
        raise ValueError("'variants' must be a non-empty mapping of name to numbers")
    families = list(dict.fromkeys(v["family"] for v in variants.values()))
    rows, y = [], 0.0
    for family in families:
        for name, v in variants.items():
            if v["family"] == family:
                rows.append((y, name, v))
                y += 1.0
        y += 0.5
    return families, rows


def plot_ablations(results: dict[str, Any], out: Path) -> Path:
    """Validation perplexity and median step time per variant: horizontal bars, one colour
    and block per family, the baseline as a dashed line and each bar's difference to it.
    The perplexity axis starts near the smallest value, so small differences show."""
    plt = _pyplot()
    variants = results["variants"]
    families, rows = _ablation_rows(variants)
    base = variants.get("baseline")
    fig, axes = plt.subplots(1, 2, figsize=(11, 1.2 + 0.38 * rows[-1][0]), sharey=True)
    panels = (("val_ppl", "validation perplexity (axis cut)"), ("step_s", "step time (s)"))
    for ax, (key, label) in zip(axes, panels, strict=True):
        for pos, _, v in rows:
            ax.barh(pos, v[key], color=f"C{families.index(v['family']) % 10}", height=0.8)
            text = f"{v[key]:.1f}" if key == "val_ppl" else f"{v[key]:.2f}"
            if base is not None:
                text += (f" ({v[key] - base[key]:+.1f})" if key == "val_ppl"
                         else f" ({v[key] / base[key]:.2f}x)")  # fmt: skip
            ax.annotate(text, (v[key], pos), xytext=(3, 0), fontsize=7,
                        textcoords="offset points", va="center")  # fmt: skip
        if base is not None:
            ax.axvline(base[key], color="k", ls="--", lw=1)
        ax.set_xlabel(label)
        ax.grid(alpha=0.3, axis="x")
    values = [v["val_ppl"] for _, _, v in rows]
    lo, hi = min(values), max(values)
    left = max(0.0, lo - 0.5 * (hi - lo) - 0.02 * hi)
    axes[0].set_xlim(left, hi + 0.3 * (hi - left))
    axes[1].set_xlim(0, 1.3 * max(v["step_s"] for _, _, v in rows))
    names = [name if v["family"] == name else f"{v['family']}: {name}" for _, name, v in rows]
    axes[0].set_yticks([r[0] for r in rows], names)
    axes[0].invert_yaxis()
    what = f"ablations, {results.get('steps', '?')} steps of "
    what += f"{results.get('batch_size', '?')} x {results.get('seq_len', '?')} tokens"
    fig.suptitle(_title(results, what), fontsize=10)
    return _save(fig, out)


def plot_memory_vs_depth(results: dict[str, Any], out: Path) -> Path:
    """Saved-for-backward MiB and peak RSS increase of one training step against the depth
    T (log2 axis), one line per configuration (paper Figure 5)."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    panels = (("saved_mib", "saved for backward (MiB, parameters excluded)"),
              ("peak_rss_increase_mib", "peak RSS increase of the step (MiB)"))  # fmt: skip
    for ax, (key, label) in zip(axes, panels, strict=True):
        for i, (name, entry) in enumerate(results["configs"].items()):
            rows = entry["rows"]  # markers shrink line by line, so equal lines stay visible
            marker = dict(marker="osD^v"[i % 5], ms=max(3.0, 8.0 - 1.5 * i))
            ax.plot([r["T"] for r in rows], [r[key] for r in rows], "-", label=name, **marker)
        ax.set_xscale("log", base=2)
        ax.set_xticks(results["depths"], [str(t) for t in results["depths"]])
        ax.set_xlabel("solver iterations / recurrences T")
        ax.set_ylabel(label)
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    what = f"training memory against depth, {results['batch']} x {results['seq_len']} tokens"
    fig.suptitle(_title(results, what), fontsize=10)
    return _save(fig, out)


def plot_internalization(results: dict[str, Any], out: Path) -> Path:
    """Equilibrium internalization (paper Figures 6 and 7): perplexity against the inference
    depth T per model, training solver iterations against the step (attractor and DEQ),
    and each model's state trajectory over T on its first two principal components."""
    plt = _pyplot()
    trajectory = results["trajectory"]
    panels = 2 + len(trajectory["models"])
    fig, axes = plt.subplots(1, panels, figsize=(5.2 * panels, 4.4), squeeze=False)
    _depth_panel(axes[0, 0], results["depth"], results["depths"])
    _iterations_panel(axes[0, 1], results["solver_iters"])
    for ax, (name, entry) in zip(axes[0, 2:], trajectory["models"].items(), strict=True):
        _trajectory_panel(ax, name, entry, trajectory["T"])
    what = (
        f"equilibrium internalization: {results['eval_windows']} validation windows; "
        f"trajectories of window {trajectory['window']}, position {trajectory['position']}"
    )
    fig.suptitle(_title(results, what), fontsize=10)
    return _save(fig, out)


def _depth_panel(ax: Any, models: dict[str, Any], depths: list[int]) -> None:
    """Perplexity at each fixed T (log2 axis after 0; log y when it spans over 10x), each
    model's own default depth a star."""
    ppl = []
    for i, (name, entry) in enumerate(models.items()):
        rows, default = entry["depth"], entry["default"]
        ppl += [r["ppl"] for r in rows] + [default["ppl"]]
        ax.plot([r["T"] for r in rows], [r["ppl"] for r in rows], "o-", color=f"C{i}",
                label=f"{name}, fixed T")  # fmt: skip
        ax.scatter([default["T"]], [default["ppl"]], marker="*", s=140, color=f"C{i}",
                   zorder=3, label=f"{name}, own depth (T = {default['T']:.1f})")  # fmt: skip
    ax.set_xscale("symlog", base=2, linthresh=1)
    ax.set_xticks(depths, [str(t) for t in depths])
    if ppl and max(ppl) > 10 * min(ppl):
        ax.set_yscale("log")
    ax.set_xlabel("inference depth T (iterations / recurrences)")
    ax.set_ylabel("validation perplexity")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7)


def _iterations_panel(ax: Any, runs: dict[str, Any]) -> None:
    """Training solver iterations against the step, the attractor's and the DEQ's."""
    for name in ("attractor", "deq"):
        run, solver = runs[name], runs[name]["solver"]
        curve = run["curve"]
        label = f"{name} (tol {solver['tol']:g}, at most {solver['max_iter']})"
        if "schedule" in run:
            label += f", {run['steps']}-step schedule"
        ax.plot([p["step"] for p in curve], [p["solver_iters"] for p in curve], ".-",
                ms=3, lw=1, label=label)  # fmt: skip
    ax.set_xlabel("training step")
    ax.set_ylabel("solver iterations to tolerance")
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)


def _trajectory_panel(ax: Any, name: str, entry: dict[str, Any], depths: list[int]) -> None:
    """The state at T = 0, 1, ... on two principal components, coloured and numbered by T."""
    points = entry["pca"]
    if len(points) != len(depths):
        raise ValueError(f"{name}: {len(points)} trajectory points for {len(depths)} depths")
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    ax.plot(xs, ys, "-", color="0.7", lw=1, zorder=1)
    dots = ax.scatter(xs, ys, c=depths, cmap="viridis", s=28, zorder=2)
    for t, x, y in zip(depths, xs, ys, strict=True):
        if t & (t - 1) == 0:  # 0, 1, 2, 4, 8, 16: the rest would pile up near the end
            ax.annotate(str(t), (x, y), fontsize=7, textcoords="offset points", xytext=(3, 3))
    ax.figure.colorbar(dots, ax=ax, label="T")
    explained = entry["explained"]
    ax.set_xlabel(f"PC 1 ({100 * explained[0]:.0f} % of the variance)")
    ax.set_ylabel(f"PC 2 ({100 * explained[1]:.0f} %)")
    ax.grid(alpha=0.3)
    ax.set_title(f"{name}: the last position's state, T = 0 .. {depths[-1]}", fontsize=9)


def plot_throughput(results: dict[str, Any], out: Path) -> Path:
    """Training tokens/s and achieved GFLOP/s per preset (bars), the measured matmul peak
    (dashed before the presets ran, dotted after) as lines on the FLOP/s panel."""
    plt = _pyplot()
    rows = results["results"]
    if not isinstance(rows, dict) or not rows:
        raise ValueError("'results' must be a non-empty mapping of preset to numbers")
    names = list(rows)
    fig, axes = plt.subplots(1, 2, figsize=(10, 1.6 + 0.5 * len(names)), sharey=True)
    tokens = [float(rows[n]["tokens_per_s"]) for n in names]
    gflops = [float(rows[n]["achieved_flops"]) / 1e9 for n in names]
    axes[0].barh(names, tokens, color="C0")
    axes[1].barh(names, gflops, color="C1")
    for i, n in enumerate(names):
        axes[0].annotate(f"{tokens[i]:.0f}", (tokens[i], i), xytext=(3, 0), fontsize=8,
                         textcoords="offset points", va="center")  # fmt: skip
        frac = float(rows[n]["fraction_of_measured_peak"])
        label = f"{gflops[i]:.1f} ({100 * frac:.0f} % of peak)"
        axes[1].annotate(label, (gflops[i], i), xytext=(3, 0), fontsize=8,
                         textcoords="offset points", va="center")  # fmt: skip
    peaks = [results["matmul_peak_flops"], results.get("matmul_peak_flops_after")]
    for peak, style in zip(peaks, ("--", ":"), strict=True):
        if peak:
            axes[1].axvline(float(peak) / 1e9, color="k", ls=style, lw=1)
    axes[1].set_xlim(0, 1.1 * max(gflops + [float(p) / 1e9 for p in peaks if p]))
    axes[0].set_xlim(0, 1.3 * max(tokens))
    axes[0].set_xlabel("training tokens/s")
    axes[1].set_xlabel("achieved GFLOP/s (lines: measured matmul peak before / after)")
    for ax in axes:
        ax.grid(alpha=0.3, axis="x")
    axes[0].invert_yaxis()
    what = f"throughput, {results.get('batch', '?')} x {results.get('seq_len', '?')} tokens a step"
    fig.suptitle(_title(results, what), fontsize=10)
    return _save(fig, out)


def _save(fig: Any, out: Path) -> Path:
    """Lay out, write the PNG and free the figure."""
    fig.tight_layout()
    with atomic_path(out) as tmp:
        fig.savefig(tmp, dpi=120)
    _pyplot().close(fig)
    return out


PLOTTERS = {
    "depth_sweep": plot_depth_sweep,
    "puzzle_depth": plot_puzzle_depth,
    "training_curves": plot_training_curves,
    "memory_vs_depth": plot_memory_vs_depth,
    "lm_pareto": plot_lm_pareto,
    "lm_size_series": plot_lm_size_series,
    "ablations": plot_ablations,
    "internalization": plot_internalization,
    "throughput": plot_throughput,
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
    except (AttributeError, KeyError, TypeError, ValueError) as err:
        raise ValueError(f"{kind or 'trace'} result is malformed ({err!r})") from None
