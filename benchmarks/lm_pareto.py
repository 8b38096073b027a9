"""Language modelling at CPU scale (paper Table 1 and Figure 4): quality against training cost.

Three parameter-matched models train on the same tokens of the python-docs corpus (4096-token
BPE) with the same optimizer, schedule and seed (the packaged config lm-pydocs-cpu, our
recipe; `--config lm-pydocs-cpu-reference` for the paper's), one
after the other with the same threads: `attractor-cpu`, `gpt-cpu` and `looped-cpu` (mean
depth 8). For each: validation perplexity over training, training FLOPs counted from the
iterations each step actually ran (the trainer's `train_flops`, each model's own count),
wall time, and the run's peak resident memory. The FLOPs
each model needed to first reach the looped model's final validation loss are interpolated
between evaluations (the paper's Figure 4 compares the Attractor with Parcae this way).

    python benchmarks/lm_pareto.py                        # 3.0M tokens a model (one pass)
    python benchmarks/lm_pareto.py --tokens 40000 --work runs/lm_pareto_quick \\
        --name lm_pareto_quick                            # the CI smoke version
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
from common import (  # noqa: E402
    RESULTS,
    RESUME_HELP,
    SEED_HELP,
    ensure_pydocs,
    train_in_subprocess,
    write_result,
)

from attractor.eval.plots import plot_results  # noqa: E402
from attractor.train.config import load_config  # noqa: E402
from attractor.train.trainer import build_run_model  # noqa: E402

CONFIG = "lm-pydocs-cpu"
MODELS = ["attractor-cpu", "gpt-cpu", "looped-cpu"]


def train_one(
    preset: str,
    args: argparse.Namespace,
    tokens: int | None = None,
    overrides: dict[str, Any] | None = None,
    label: str | None = None,
    extra_sets: list[str] | None = None,
) -> dict[str, Any]:
    """Train `preset` (with model `overrides` and further `--set` values `extra_sets`) on
    `tokens` tokens (default args.tokens) in args.work/LABEL (default the preset); its
    curve, cost and final validation loss."""
    tokens_per_step = args.batch * args.seq_len
    steps = math.ceil((tokens or args.tokens) / tokens_per_step)
    sets = [f"model.overrides.{k}={json.dumps(v)}" for k, v in (overrides or {}).items()] + [
        f"model.preset={preset}",
        f"data.source={args.data}",
        f"data.batch_size={args.batch}",
        f"data.seq_len={args.seq_len}",
        f"train.steps={steps}",
        f"train.eval_every={max(1, steps // args.evals)}",
        f"train.eval_batches={args.eval_batches}",
        f"train.out_dir={Path(args.work) / (label or preset)}",
        f"train.seed={args.seed}",
        "train.progress=false",
        *(extra_sets or []),
    ]
    run = train_in_subprocess(args.config, sets, threads=args.threads, resume=args.resume)
    rows = run["metrics"]
    curve = [
        {
            "step": int(r["step"]),
            "tokens": int(r["step"]) * tokens_per_step,
            "train_flops": r["train_flops"] or 0.0,
            "elapsed_s": r["elapsed_s"] or 0.0,
            "val_loss": r["val_loss"],
            "val_ppl": r["val_ppl"],
        }
        for r in rows
        if r["val_loss"] is not None
    ]
    iters = [r["solver_iters"] for r in rows if r["solver_iters"] is not None]
    last = rows[-1]
    tflop, minutes = last["train_flops"] / 1e12, run["wall_s"] / 60
    print(f"{label or preset}: val ppl {last['val_ppl']:.2f} after {steps} steps, "
          f"{tflop:.2f} TFLOP, {minutes:.1f} min", flush=True)  # fmt: skip
    return {
        "params": build_run_model(load_config(args.config, sets).model).num_params(),
        "steps": steps,
        "tokens": steps * tokens_per_step,
        "train_flops": last["train_flops"],
        "train_seconds": last["elapsed_s"],
        "wall_s": run["wall_s"],
        "peak_rss_mib": run["peak_rss_mib"],
        "resumed": run["resumed"],
        "solver_iters_mean": sum(iters) / len(iters) if iters else None,
        "val_loss": last["val_loss"],
        "val_ppl": last["val_ppl"],
        "curve": curve,
    }


def flops_to_reach(curve: list[dict[str, Any]], target: float) -> float | None:
    """Training FLOPs at which the validation loss first reaches `target`, linearly
    interpolated between the two evaluations around it; None if it never does."""
    for before, after in zip(curve[:-1], curve[1:], strict=True):
        if after["val_loss"] <= target:
            drop = before["val_loss"] - after["val_loss"]
            share = 1.0 if drop <= 0 else (before["val_loss"] - target) / drop
            return before["train_flops"] + share * (after["train_flops"] - before["train_flops"])
    return None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default=CONFIG, help="every model's run config (lm-pydocs-cpu: "
                    "our recipe; lm-pydocs-cpu-reference: the paper's)")  # fmt: skip
    ap.add_argument("--models", default=",".join(MODELS), help="comma-separated presets")
    ap.add_argument("--tokens", type=int, default=3_000_000, help="training tokens a model")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--seq-len", type=int, default=256)
    ap.add_argument("--evals", type=int, default=8, help="evaluations over training")
    ap.add_argument("--eval-batches", type=int, default=16)
    ap.add_argument("--threads", type=int, default=2, help="threads of every run")
    ap.add_argument("--data", default="data/pydocs")
    ap.add_argument("--work", default="runs/lm_pareto", help="run directories")
    ap.add_argument("--name", default="lm_pareto", help="results/NAME.json and .png")
    ap.add_argument("--seed", type=int, default=0, help=SEED_HELP)
    ap.add_argument("--resume", action="store_true", help=RESUME_HELP)
    args = ap.parse_args()
    ensure_pydocs(Path(args.data))
    models = {preset: train_one(preset, args) for preset in args.models.split(",")}
    reference = "looped-cpu" if "looped-cpu" in models else next(iter(models))
    target = models[reference]["val_loss"]
    for r in models.values():
        r["flops_to_reference_loss"] = flops_to_reach(r["curve"], target)
    result = {
        "result": "lm_pareto",
        "config": args.config,
        "data": args.data,
        "tokens_per_model": models[next(iter(models))]["tokens"],
        "batch": args.batch,
        "seq_len": args.seq_len,
        "threads_per_run": args.threads,
        "seed": args.seed,
        "reference": reference,
        "reference_val_loss": target,
        "models": models,
    }
    path = write_result(args.name, result)
    plot_results(result, RESULTS / f"{args.name}.png")
    for preset, r in models.items():
        reach = r["flops_to_reference_loss"]
        print(f"{preset:14s} {r['params'] / 1e6:5.2f}M  ppl {r['val_ppl']:7.2f}  "
              f"{r['train_flops'] / 1e12:7.2f} TFLOP  {r['wall_s'] / 60:5.1f} min  "
              f"{r['peak_rss_mib']:6.0f} MiB  to {reference} loss: "
              f"{'never' if reach is None else f'{reach / 1e12:.2f} TFLOP'}")  # fmt: skip
    print(f"wrote {path} and its .png")


if __name__ == "__main__":
    main()
