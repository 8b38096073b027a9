"""The paper's ablations (Tables 3-6) and the recipe's pieces, at CPU scale.

Every variant is one preset (`--model`, default `attractor-cpu`) trained through `attractor
train` on the python-docs corpus with one packaged config (`--config`, default lm-pydocs-cpu,
the paper's recipe with the pieces of ours measured better; lm-pydocs-cpu-reference for the
paper's whole): the same data, optimizer,
learning-rate schedule shape (trapezoid, warm-up scaled with the run) and seed, with one
switch changed from the config's baseline:

- backward (Tables 3, 5): adjoint, phantom (k = 2), neumann (clipped), jfb;
- injection (Table 4): concat, initial;
- solver start (Table 6): zero, noise;
- output head: untied (a separate output matrix);
- gates: fixed at 0.75 (the paper's code) or learnable up to 1.0 (ours);
- init: the paper's scaled orthogonal or our N(0, 0.02);
- optimizer: the paper's Muon (`muon`) or ours (`muon-ns`), and the paper's Muon without
  its weight decays;
- numerics: the paper's block numerics (and for GPT and looped its value embeddings) or ours;
- Parcae (looped): the paper code's prelude norm, C, random start and depth a sequence, or
  none of them (ours).

The first four families and the gates are attractor switches; the rest apply to every
language model. By default the schedule is much shorter than the config's (90 steps of
16 x 128 tokens, 0.18M tokens, against 733 steps of 16 x 256), so the perplexities are
early-training figures, not the paper's values; `--steps 400 --seq-len 256` runs the
reference config's whole schedule. Every run is evaluated before training and after its
last step (and every --eval-every steps) on the same validation windows (--eval-batches
batches). Runs go two at a time with one thread each (2 cores), so every variant gets the
same share of the machine; step times are medians of the per-step training seconds in
metrics.csv.

    python benchmarks/ablations.py                  # every variant that changes attractor-cpu's
                                                    # run, about 30 minutes
    python benchmarks/ablations.py --variants baseline,adjoint,concat --steps 4 \\
        --name ablations_quick                      # CI smoke run, about a minute
    python benchmarks/ablations.py --config lm-pydocs-cpu-reference --model gpt-cpu \\
        --variants init-normal,muon-ns,no-weight-decay,numerics-ours --steps 400 \\
        --seq-len 256 --eval-batches 16 --name recipe_ablations_gpt   # the recipe, for GPT
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import statistics
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
from common import (  # noqa: E402
    RESULTS,
    RESUME_HELP,
    ensure_pydocs,
    train_in_subprocess,
    write_result,
)

from attractor.core.typed_config import ConfigError  # noqa: E402
from attractor.engine import PAPER_LM_SOLVE  # noqa: E402
from attractor.eval.plots import plot_results  # noqa: E402
from attractor.models import preset_config  # noqa: E402
from attractor.models.looped import LoopedConfig  # noqa: E402
from attractor.models.presets import PAPER_NUMERICS, PAPER_VALUE_EMBEDS  # noqa: E402
from attractor.models.registry import kind_of  # noqa: E402
from attractor.nn.shape import TransformerShape  # noqa: E402
from attractor.train.config import load_config  # noqa: E402
from attractor.train.trainer import build_run_model  # noqa: E402

CONFIG = "lm-pydocs-cpu"
ATTRACTOR = ("attractor",)
LANGUAGE_MODELS = ("attractor", "gpt", "looped", "deq")


@dataclass(frozen=True)
class Variant:
    """One switch: its family, the `--set` values it changes (dotted config keys) and the
    model kinds it applies to."""

    family: str
    sets: dict[str, Any] = field(default_factory=dict)
    kinds: tuple[str, ...] = ATTRACTOR


def _overrides(**fields: Any) -> dict[str, Any]:
    return {f"model.overrides.{k}": v for k, v in fields.items()}


# The paper's block numerics (the paper presets' and the -cpu presets') and ours
# (TransformerShape's defaults, the older -cpu presets')
OUR_NUMERICS = {
    f.name: f.default for f in dataclasses.fields(TransformerShape) if f.name in PAPER_NUMERICS
}

# Value embeddings as the paper's code has them (PAPER_VALUE_EMBEDS) or ours, for every kind
# that has them
VALUE_EMBED_KINDS = ("gpt", "looped")
OUR_VALUE_EMBEDS = {
    f.name: f.default for f in dataclasses.fields(LoopedConfig) if f.name in PAPER_VALUE_EMBEDS
}


def _value_embeds(fields: dict[str, Any]) -> dict[str, Any]:
    return {
        f"model.kind_overrides.{kind}.{k}": v
        for kind in VALUE_EMBED_KINDS
        for k, v in fields.items()
    }


# Parcae's parts: the paper's (the looped-140m preset's) and ours (LoopedConfig's defaults)
PARCAE_FIELDS = ("prelude_norm", "state_proj", "state_init", "depth_draw")
PARCAE_PAPER = {k: getattr(preset_config("looped-140m"), k) for k in PARCAE_FIELDS}
PARCAE_OURS = {
    f.name: f.default for f in dataclasses.fields(LoopedConfig) if f.name in PARCAE_FIELDS
}

VARIANTS: dict[str, Variant] = {
    "baseline": Variant("baseline", kinds=LANGUAGE_MODELS),
    "adjoint": Variant("backward", _overrides(**{"fixed_point.backward": "adjoint"})),
    "phantom": Variant(
        "backward",
        _overrides(**{"fixed_point.backward": "phantom", "fixed_point.backward_steps": 2}),
    ),
    "neumann": Variant("backward", _overrides(**{"fixed_point.backward": "neumann"})),
    "jfb": Variant("backward", _overrides(**{"fixed_point.backward": "jfb"})),
    "solve-paper": Variant(
        "solve",
        _overrides(
            solve_unit="sequence",
            **{
                f"fixed_point.{which}.{k}": v
                for which in ("train_solver", "eval_solver")
                for k, v in PAPER_LM_SOLVE.items()
            },
        ),
    ),
    "concat": Variant("injection", _overrides(injection="concat")),
    "initial": Variant("injection", _overrides(injection="initial")),
    "zero": Variant("start", _overrides(start="zero")),
    "noise": Variant("start", _overrides(start="noise")),
    "untied": Variant("head", _overrides(tied_head=False)),
    "gates-fixed": Variant("gates", _overrides(gate_init=0.75, gate_max=0.75, gate_clamp=1e-6)),
    "gates-learnable": Variant("gates", _overrides(gate_init=0.75, gate_max=1.0, gate_clamp=1e-3)),
    # Parcae's parts (the paper's code; looped-140m has them): a norm on the prelude's
    # output, a linear C before the coda, a random start, one depth a sequence; or ours
    "parcae-paper": Variant("parcae", _overrides(**PARCAE_PAPER), ("looped",)),
    "parcae-ours": Variant("parcae", _overrides(**PARCAE_OURS), ("looped",)),
    "init-orthogonal": Variant("init", _overrides(init="scaled-orthogonal"), LANGUAGE_MODELS),
    "init-normal": Variant("init", _overrides(init="gpt"), LANGUAGE_MODELS),
    "muon": Variant("optimizer", {"optim.name": "muon"}, LANGUAGE_MODELS),
    "muon-ns": Variant("optimizer", {"optim.name": "muon-ns"}, LANGUAGE_MODELS),
    "no-weight-decay": Variant(
        "optimizer",
        {"optim.muon_weight_decay": 0.0, "optim.head_weight_decay": 0.0},
        LANGUAGE_MODELS,
    ),
    "numerics-paper": Variant(
        "numerics",
        {
            **_overrides(**PAPER_NUMERICS),
            **_value_embeds(PAPER_VALUE_EMBEDS),
        },
        LANGUAGE_MODELS,
    ),
    "numerics-ours": Variant(
        "numerics",
        {
            **_overrides(**OUR_NUMERICS),
            **_value_embeds(OUR_VALUE_EMBEDS),
        },
        LANGUAGE_MODELS,
    ),
}


def parse_variants(text: str, model: str) -> list[str]:
    """The comma-separated variant names, checked against VARIANTS and against the kind of
    `model` (one clear error)."""
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in VARIANTS]
    if unknown or not names:
        sys.exit(
            f"ablations: unknown variant(s) {', '.join(unknown) or '(none given)'}; "
            f"choose from {', '.join(VARIANTS)}"
        )
    kind = kind_of(preset_config(model))
    foreign = [n for n in names if kind not in VARIANTS[n].kinds]
    if foreign:
        sys.exit(
            f"ablations: variant(s) {', '.join(foreign)} do not apply to {model} (a {kind}); "
            f"those apply to {', '.join(n for n, v in VARIANTS.items() if kind in v.kinds)}"
        )
    return names


def changed_variants(args: argparse.Namespace) -> list[str]:
    """The baseline and every variant that applies to args.model and changes its run under
    args.config (the model's config or the optimizer's): the default list. A variant the
    config refuses (no weight decay to switch off under muon-ns) is left out."""

    def resolved(name: str) -> tuple[Any, Any] | None:
        try:
            cfg = load_config(args.config, run_sets(name, Path(args.work), args))
        except ConfigError:
            return None
        return preset_config(cfg.model.preset, **cfg.model.overrides), cfg.optim

    kind = kind_of(preset_config(args.model))
    base = resolved("baseline")
    return ["baseline"] + [
        name
        for name, v in VARIANTS.items()
        if name != "baseline" and kind in v.kinds and resolved(name) not in (None, base)
    ]


def run_sets(name: str, data: Path, args: argparse.Namespace) -> list[str]:
    """The `--set` overrides of one variant's run: the model, its switch, the schedule
    (--steps; the warm-up --warmup-steps, or the config's scaled by the same factor as the
    steps) and its evaluations."""
    base = load_config(args.config)
    warmup = args.warmup_steps
    if warmup is None:
        warmup = round(base.schedule.warmup_steps * args.steps / base.train.steps)
    return [f"{k}={json.dumps(v)}" for k, v in VARIANTS[name].sets.items()] + [
        f"model.preset={args.model}",
        f"data.source={data}",
        f"data.seq_len={args.seq_len}",
        f"data.batch_size={args.batch_size}",
        f"schedule.warmup_steps={warmup}",
        f"train.steps={args.steps}",
        f"train.eval_every={args.eval_every or args.steps}",  # step 0 (untrained), the last
        f"train.eval_batches={args.eval_batches}",
        "train.log_every=1",
        "train.progress=false",
        f"train.out_dir={Path(args.work) / name}",
    ]


def summarize(
    name: str, run: dict[str, Any], sets: list[str], args: argparse.Namespace
) -> dict[str, Any]:
    """One variant's numbers from its metrics rows: final validation perplexity, median
    step seconds, mean solver iterations over the last quarter and over every step, training
    FLOPs, peak memory, parameters."""
    rows = [r for r in run["metrics"] if r.get("step") is not None]
    evals = [r for r in rows if r.get("val_ppl") is not None]
    trained = [r for r in rows if r["step"] >= 1 and r.get("elapsed_s") is not None]
    elapsed = [0.0] + [r["elapsed_s"] for r in trained]
    step_s = [b - a for a, b in zip(elapsed, elapsed[1:], strict=False)]
    steps = args.steps
    last_quarter = [r for r in trained if r["step"] > steps - math.ceil(steps / 4)]
    iters = [r["solver_iters"] for r in last_quarter if r.get("solver_iters") is not None]
    iters_all = [r["solver_iters"] for r in trained if r.get("solver_iters") is not None]
    cfg = load_config(args.config, sets)
    return {
        "family": VARIANTS[name].family,
        "sets": VARIANTS[name].sets,
        "params": build_run_model(cfg.model).num_params(),
        "val_loss": evals[-1]["val_loss"],
        "val_ppl": evals[-1]["val_ppl"],
        "init_val_ppl": evals[0]["val_ppl"] if evals[0]["step"] == 0 else None,
        "curve": [{"step": int(r["step"]), "val_ppl": r["val_ppl"]} for r in evals],
        "train_loss_last_quarter": statistics.fmean(r["loss"] for r in last_quarter),
        "step_s": statistics.median(step_s),
        "tokens_per_s": cfg.data.batch_size * cfg.data.seq_len / statistics.median(step_s),
        "solver_iters_last_quarter": statistics.fmean(iters) if iters else None,
        "solver_iters_mean": statistics.fmean(iters_all) if iters_all else None,
        "train_flops": trained[-1].get("train_flops"),
        "peak_rss_mib": run["peak_rss_mib"],
        "wall_s": run["wall_s"],
        "resumed": run["resumed"],
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


def run_all(names: list[str], args: argparse.Namespace) -> Iterator[dict[str, dict[str, Any]]]:
    """Train every variant in its own process, `args.jobs` at a time with `args.threads`
    threads each; after each one ends (in the order of `names`), the summaries so far."""
    data = ensure_pydocs()
    sets = {name: run_sets(name, data, args) for name in names}
    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        futures = {
            name: pool.submit(
                train_in_subprocess, args.config, sets[name], args.threads, args.resume
            )
            for name in names
        }
        summaries: dict[str, dict[str, Any]] = {}
        try:
            for name, future in futures.items():
                summaries[name] = summarize(name, future.result(), sets[name], args)
                yield summaries
        except BaseException:
            pool.shutdown(wait=False, cancel_futures=True)
            raise


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
    ap.add_argument("--config", default=CONFIG, help="the packaged run config (lm-pydocs-cpu: "
                    "the best measured; lm-pydocs-cpu-reference: the paper's)")  # fmt: skip
    ap.add_argument("--model", default="attractor-cpu", help="the preset every variant trains")
    ap.add_argument("--variants", default=None, help="comma-separated names (default: the "
                    "baseline and every variant that changes the model's run)")  # fmt: skip
    ap.add_argument("--steps", type=int, default=90, help="training steps per variant")
    ap.add_argument("--seq-len", type=int, default=128, help="tokens per sequence")
    ap.add_argument("--batch-size", type=int, default=16, help="sequences per step")
    ap.add_argument("--warmup-steps", type=int, default=None, help="warm-up steps (default: "
                    "the config's, scaled by --steps over its steps)")  # fmt: skip
    ap.add_argument("--eval-batches", type=int, default=8, help="validation batches")
    ap.add_argument("--eval-every", type=int, default=0, help="steps between evaluations "
                    "(default: only before training and after the last step)")  # fmt: skip
    ap.add_argument("--jobs", type=int, default=2, help="runs side by side (default 2)")
    ap.add_argument("--threads", type=int, default=1, help="threads per run (default 1)")
    ap.add_argument("--work", default="runs/ablations", help="run directories")
    ap.add_argument("--name", default="ablations", help="results/NAME.json and .png")
    ap.add_argument("--resume", action="store_true", help=RESUME_HELP)
    args = ap.parse_args()
    if args.steps < 1 or args.jobs < 1 or args.threads < 1 or args.eval_every < 0:
        sys.exit("ablations: --steps, --jobs and --threads must be at least 1, --eval-every 0 "
                 "or more")  # fmt: skip
    if args.warmup_steps is not None and not 0 <= args.warmup_steps <= args.steps:
        sys.exit(f"ablations: --warmup-steps must lie in 0..{args.steps} (--steps), got "
                 f"{args.warmup_steps}")  # fmt: skip
    names = parse_variants(args.variants or ",".join(changed_variants(args)), args.model)
    start = time.perf_counter()
    config = load_config(args.config)
    schedule = f"{args.steps} steps of {args.batch_size} x {args.seq_len} tokens "
    schedule += f"({args.steps * args.batch_size * args.seq_len / 1e6:.2f}M tokens)"
    own = (config.train.steps, config.data.batch_size, config.data.seq_len)
    if (args.steps, args.batch_size, args.seq_len) == own:
        schedule += f": the whole schedule of {args.config}"
    else:
        schedule += f", against {args.config}'s {own[0]} x {own[1]} x {own[2]}"
        if args.steps < own[0]:
            schedule += ": early-training perplexities, not the paper's values"
    for variants in run_all(names, args):  # the result is rewritten as each variant ends
        against_baseline(variants)
        result = {
            "result": "ablations",
            "schedule": schedule,
            "config": args.config,
            "preset": args.model,
            "steps": args.steps,
            "seq_len": args.seq_len,
            "batch_size": args.batch_size,
            "eval_batches": args.eval_batches,
            "jobs": args.jobs,
            "threads_per_run": args.threads,
            "wall_s": time.perf_counter() - start,
            "complete": len(variants) == len(names),
            "variants": variants,
        }
        path = write_result(args.name, result)
        plot_results(json.loads(path.read_text()), RESULTS / f"{args.name}.png")  # its date
    report(variants)
    print(f"wrote {path} and its .png ({result['wall_s'] / 60:.1f} min)")


if __name__ == "__main__":
    main()
