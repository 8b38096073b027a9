"""The paper's ablations (Tables 3-6) at CPU scale, on a shortened schedule.

Every variant is `attractor-cpu` trained through `attractor train` on the python-docs
corpus with the packaged config lm-pydocs-cpu: the same data, optimizer, learning-rate schedule
shape (trapezoid, warm-up scaled with the run) and seed, with one attractor switch changed
from the baseline (jfb backward, additive injection, proposal start, tied head):

- backward (Tables 3, 5): adjoint, phantom (k = 2), neumann;
- injection (Table 4): concat, initial;
- solver start (Table 6): zero, noise;
- output head: untied (a separate output matrix).

The schedule is much shorter than the config's (by default 90 steps of 16 x 128 tokens,
0.18M tokens, against 733 steps of 16 x 256), so the perplexities are early-training
figures, not the paper's values. Every run is evaluated before training and after its last
step on the same validation windows (--eval-batches batches). Runs go two at a time with
one thread each (2 cores), so every variant gets the same share of the machine; step times
are medians of the per-step training seconds in metrics.csv.

    python benchmarks/ablations.py                  # every variant, about 20 minutes
    python benchmarks/ablations.py --variants baseline,adjoint,concat --steps 4 \\
        --name ablations_quick                      # CI smoke run, about a minute
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
from common import RESULTS, ensure_pydocs, train_in_subprocess, write_result  # noqa: E402

from attractor.eval.plots import plot_results  # noqa: E402
from attractor.train.config import load_config  # noqa: E402
from attractor.train.trainer import build_run_model  # noqa: E402

CONFIG = "lm-pydocs-cpu"

# variant -> (family, model.overrides against the baseline)
VARIANTS: dict[str, tuple[str, dict[str, Any]]] = {
    "baseline": ("baseline", {}),
    "adjoint": ("backward", {"fixed_point": {"backward": "adjoint"}}),
    "phantom": ("backward", {"fixed_point": {"backward": "phantom", "backward_steps": 2}}),
    "neumann": ("backward", {"fixed_point": {"backward": "neumann"}}),
    "concat": ("injection", {"injection": "concat"}),
    "initial": ("injection", {"injection": "initial"}),
    "zero": ("start", {"start": "zero"}),
    "noise": ("start", {"start": "noise"}),
    "untied": ("head", {"tied_head": False}),
}


def parse_variants(text: str) -> list[str]:
    """The comma-separated variant names, checked against VARIANTS (one clear error)."""
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in VARIANTS]
    if unknown or not names:
        sys.exit(
            f"ablations: unknown variant(s) {', '.join(unknown) or '(none given)'}; "
            f"choose from {', '.join(VARIANTS)}"
        )
    return names


def run_sets(name: str, data: Path, args: argparse.Namespace) -> list[str]:
    """The `--set` overrides of one variant's run: its model switch, the shortened
    schedule (warm-up scaled by the same factor as the steps) and one final evaluation."""
    base = load_config(CONFIG)
    warmup = round(base.schedule.warmup_steps * args.steps / base.train.steps)
    _, overrides = VARIANTS[name]
    return [f"model.overrides.{k}={json.dumps(v)}" for k, v in overrides.items()] + [
        f"data.source={data}",
        f"data.seq_len={args.seq_len}",
        f"data.batch_size={args.batch_size}",
        f"schedule.warmup_steps={warmup}",
        f"train.steps={args.steps}",
        f"train.eval_every={args.steps}",  # step 0 (untrained) and the last step
        f"train.eval_batches={args.eval_batches}",
        "train.log_every=1",
        "train.progress=false",
        f"train.out_dir={Path(args.work) / name}",
    ]


def summarize(name: str, run: dict[str, Any], sets: list[str], steps: int) -> dict[str, Any]:
    """One variant's numbers from its metrics rows: final validation perplexity, median
    step seconds, mean solver iterations over the last quarter, peak memory, parameters."""
    rows = [r for r in run["metrics"] if r.get("step") is not None]
    evals = [r for r in rows if r.get("val_ppl") is not None]
    trained = [r for r in rows if r["step"] >= 1 and r.get("elapsed_s") is not None]
    elapsed = [0.0] + [r["elapsed_s"] for r in trained]
    step_s = [b - a for a, b in zip(elapsed, elapsed[1:], strict=False)]
    last_quarter = [r for r in trained if r["step"] > steps - math.ceil(steps / 4)]
    iters = [r["solver_iters"] for r in last_quarter if r.get("solver_iters") is not None]
    cfg = load_config(CONFIG, sets)
    return {
        "family": VARIANTS[name][0],
        "overrides": VARIANTS[name][1],
        "params": build_run_model(cfg.model).num_params(),
        "val_loss": evals[-1]["val_loss"],
        "val_ppl": evals[-1]["val_ppl"],
        "init_val_ppl": evals[0]["val_ppl"] if evals[0]["step"] == 0 else None,
        "train_loss_last_quarter": statistics.fmean(r["loss"] for r in last_quarter),
        "step_s": statistics.median(step_s),
        "tokens_per_s": cfg.data.batch_size * cfg.data.seq_len / statistics.median(step_s),
        "solver_iters_last_quarter": statistics.fmean(iters) if iters else None,
        "peak_rss_mib": run["peak_rss_mib"],
        "wall_s": run["wall_s"],
        "steps": int(trained[-1]["step"]),
    }


def against_baseline(variants: dict[str, dict[str, Any]]) -> None:
    """Add each variant's difference to the baseline, in place (when the baseline ran):
    perplexity and parameters as differences, step time and memory as ratios."""
    base = variants.get("baseline")
    if base is None:
        return
    for v in variants.values():
        v["vs_baseline"] = {
            "val_ppl": v["val_ppl"] - base["val_ppl"],
            "step_time_ratio": v["step_s"] / base["step_s"],
            "peak_rss_ratio": v["peak_rss_mib"] / base["peak_rss_mib"],
            "params": v["params"] - base["params"],
        }


def run_all(names: list[str], args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    """Train every variant in its own process, `args.jobs` at a time with `args.threads`
    threads each; their summaries in the order of `names`."""
    data = ensure_pydocs()
    sets = {name: run_sets(name, data, args) for name in names}
    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        futures = {
            name: pool.submit(train_in_subprocess, CONFIG, sets[name], args.threads)
            for name in names
        }
        try:
            runs = {name: future.result() for name, future in futures.items()}
        except BaseException:
            pool.shutdown(wait=False, cancel_futures=True)
            raise
    return {name: summarize(name, runs[name], sets[name], args.steps) for name in names}


def report(variants: dict[str, dict[str, Any]]) -> None:
    """One line a variant: perplexity, step time, iterations, memory, parameters."""
    print(f"{'variant':10s} {'family':10s} {'val ppl':>9s} {'d ppl':>7s} {'step s':>7s} "
          f"{'x base':>6s} {'iters':>6s} {'RSS MiB':>8s} {'params':>10s}")  # fmt: skip
    for name, v in variants.items():
        vs = v.get("vs_baseline") or {}
        iters = v["solver_iters_last_quarter"]
        print(
            f"{name:10s} {v['family']:10s} {v['val_ppl']:9.2f} "
            f"{vs.get('val_ppl', math.nan):+7.2f} {v['step_s']:7.2f} "
            f"{vs.get('step_time_ratio', math.nan):6.2f} "
            f"{iters if iters is not None else math.nan:6.2f} "
            f"{v['peak_rss_mib']:8.0f} {v['params']:10,d}"
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated names")
    ap.add_argument("--steps", type=int, default=90, help="training steps per variant")
    ap.add_argument("--seq-len", type=int, default=128, help="tokens per sequence")
    ap.add_argument("--batch-size", type=int, default=16, help="sequences per step")
    ap.add_argument("--eval-batches", type=int, default=8, help="validation batches")
    ap.add_argument("--jobs", type=int, default=2, help="runs side by side (default 2)")
    ap.add_argument("--threads", type=int, default=1, help="threads per run (default 1)")
    ap.add_argument("--work", default="runs/ablations", help="run directories")
    ap.add_argument("--name", default="ablations", help="results/NAME.json and .png")
    args = ap.parse_args()
    names = parse_variants(args.variants)
    if args.steps < 1 or args.jobs < 1 or args.threads < 1:
        sys.exit("ablations: --steps, --jobs and --threads must be at least 1")
    start = time.perf_counter()
    variants = run_all(names, args)
    against_baseline(variants)
    config = load_config(CONFIG)
    result = {
        "result": "ablations",
        "schedule": (
            f"shortened: {args.steps} steps of {args.batch_size} x {args.seq_len} tokens "
            f"({args.steps * args.batch_size * args.seq_len / 1e6:.2f}M tokens) instead of "
            f"{config.train.steps} x {config.data.batch_size} x {config.data.seq_len}; "
            "early-training perplexities, not the paper's values"
        ),
        "config": CONFIG,
        "preset": config.model.preset,
        "steps": args.steps,
        "seq_len": args.seq_len,
        "batch_size": args.batch_size,
        "eval_batches": args.eval_batches,
        "jobs": args.jobs,
        "threads_per_run": args.threads,
        "wall_s": time.perf_counter() - start,
        "variants": variants,
    }
    path = write_result(args.name, result)
    plot_results(json.loads(path.read_text()), RESULTS / f"{args.name}.png")  # with its date
    report(variants)
    print(f"wrote {path} and its .png ({result['wall_s'] / 60:.1f} min)")


if __name__ == "__main__":
    main()
