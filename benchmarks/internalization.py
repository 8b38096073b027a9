"""Equilibrium internalization at CPU scale (paper Figures 6 and 7).

Three measurements on the models that benchmarks/lm_pareto.py trains (RUNS/attractor-cpu
and RUNS/looped-cpu, each with metrics.csv and the exported model/):

1. validation perplexity at a fixed inference depth T = 0, 1, 2, 4, 8, 16 (attractor: T
   solver iterations, T = 0 decoding the proposal y0; looped: T recurrences), on the same
   first --eval-windows validation windows for both, plus each model's own default depth
   (attractor: its eval solver run to tolerance, with the mean iterations it used; looped:
   its eval_depth);
2. solver iterations to reach the training tolerance against the training step: the
   attractor's from its metrics.csv, the DEQ's from a run of deq-cpu trained here on the
   same config with a shortened schedule (--deq-steps; the config's warm-up and decay,
   compressed to that many steps);
3. the trajectory of the last position's state over T = 0 .. 16 on one validation window,
   projected on its first two principal components: the attractor's iterate y_T (what the
   model decodes at depth T; y_0 the proposal) and the looped model's recurrent state after
   T recurrences (the coda's input).

The DEQ trains with its train solver (Anderson to tol 1e-3, at most 32 iterations; the
1e-4 / 64 solver is its eval solver, which this run never calls). Its step time, measured on
this machine with 16 x 256 tokens a step: with OMP_NUM_THREADS=1 (another run on the other
core) about 1.8 s plus 0.11 s per solver iteration (2.15 s at the 3 iterations it starts
with, 3.2 s with 12 forced); with 2 threads 1.0 s at 3 iterations, so about 0.85 s plus
0.05 s per iteration. Its iterations grow in training (3 at first, 5 by step 35 of a
300-step run), so the default --deq-steps 400 assumes about 20 on average: about 12
minutes with --threads 2 on an otherwise idle machine (far longer when another run shares
the cores).

    python benchmarks/lm_pareto.py                     # trains the attractor and looped runs
    python benchmarks/internalization.py               # about 15 minutes, 12 of them the DEQ
    python benchmarks/internalization.py --runs runs/lm_pareto_quick --deq-steps 5 \\
        --eval-windows 8 --name internalization_quick  # about a minute
    python benchmarks/internalization.py --runs runs/lm_pareto_reference \\
        --config lm-pydocs-cpu-reference --threads 1 \\
        --name internalization_reference       # the runs of the paper's recipe
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

sys.path.insert(0, str(Path(__file__).parent))
from common import (  # noqa: E402
    RESULTS,
    ensure_pydocs,
    read_metrics,
    train_in_subprocess,
    write_result,
)

from attractor.data.tokenizer import Tokenizer  # noqa: E402
from attractor.eval.depth_sweep import depth_sweep  # noqa: E402
from attractor.eval.lm_metrics import WindowSource, evaluate_lm  # noqa: E402
from attractor.eval.loading import (  # noqa: E402
    load_language_model,
    load_text,
    training_record,
)
from attractor.eval.plots import plot_results  # noqa: E402
from attractor.models import LanguageModel, load_pretrained  # noqa: E402
from attractor.models.attractor import AttractorLM  # noqa: E402
from attractor.train.config import load_config  # noqa: E402

CONFIG = "lm-pydocs-cpu"
DEPTHS = (0, 1, 2, 4, 8, 16)
TRAJECTORY_DEPTH = 16
BATCH = 8  # validation windows a forward


# -----------------------------------------------------------------------------
# 1. Perplexity against inference depth


def depth_curve(
    model: LanguageModel, windows: WindowSource, n: int, bytes_per_token: float | None
) -> dict[str, Any]:
    """Loss and perplexity on the first n windows at each fixed T in DEPTHS and at the
    model's own default depth."""
    kwargs: dict[str, Any] = dict(batch_size=BATCH, bytes_per_token=bytes_per_token, max_windows=n)
    sweep = depth_sweep(model, windows, depths=DEPTHS, tolerances=(), **kwargs)
    default = evaluate_lm(model, windows, **kwargs)
    if model.depth_unit == "solver iterations":
        solver = model.config.fixed_point.eval_solver
        default["T"] = default["iters_mean"]
        default["what"] = (
            f"eval solver to tol {solver.tol:g} ({solver.min_iter}..{solver.max_iter} "
            f"iterations), at its mean iterations per position"
        )
    else:
        default["T"] = model.config.eval_depth
        default["what"] = f"eval_depth {model.config.eval_depth}"
    return {"params": model.num_params(), "depth": sweep["depth"], "default": default}


# -----------------------------------------------------------------------------
# 2. Solver iterations over training


def iteration_curve(run_dir: Path) -> list[dict[str, float]]:
    """(step, solver_iters) of every training row of RUN_DIR/metrics.csv, one per step."""
    by_step = {
        int(row["step"]): row["solver_iters"]
        for row in read_metrics(run_dir)
        if row.get("step") is not None and row.get("solver_iters") is not None
    }
    return [{"step": s, "solver_iters": by_step[s]} for s in sorted(by_step)]


def train_deq(args: argparse.Namespace) -> dict[str, Any]:
    """Train deq-cpu on the config with the step count cut to --deq-steps; its run record."""
    out_dir = Path(args.work) / "deq-cpu"
    sets = [
        "model.preset=deq-cpu",
        f"data.source={args.data}",
        f"train.steps={args.deq_steps}",
        f"train.out_dir={out_dir}",
        "train.progress=false",
        "train.eval_every=0",
        "train.log_every=1",
    ]
    print(f"training deq-cpu for {args.deq_steps} steps into {out_dir}", flush=True)
    run = train_in_subprocess(args.config, sets, threads=args.threads)
    full = load_config(args.config).train.steps
    s = load_config(args.config, sets).schedule
    train_seconds = run["metrics"][-1]["elapsed_s"]
    return {
        "run": str(out_dir),
        "steps": args.deq_steps,
        "full_steps": full,
        "shortened_schedule": args.deq_steps != full,
        "threads": args.threads,
        "wall_s": run["wall_s"],
        "train_seconds": train_seconds,
        "seconds_per_step": train_seconds / args.deq_steps,
        "schedule": (
            f"shortened: {args.config}'s {s.kind} schedule (warm-up {s.warmup_steps} steps, "
            f"decay over the last {s.decay_fraction:g}) over {args.deq_steps} steps instead "
            f"of {full}"
        ),
        "solver": _solver_record(
            load_pretrained(out_dir / "model").config.fixed_point.train_solver
        ),
        "curve": iteration_curve(out_dir),
    }


def _solver_record(solver: Any) -> dict[str, Any]:
    return {
        "method": solver.method,
        "tol": solver.tol,
        "min_iter": solver.min_iter,
        "max_iter": solver.max_iter,
    }


def iterations_over_training(
    attractor: LanguageModel, runs: Path, args: argparse.Namespace
) -> dict[str, Any]:
    """The attractor's and the DEQ's training solver iterations, and both at common steps."""
    attractor_curve = iteration_curve(runs / "attractor-cpu")
    deq = train_deq(args)
    deq_at = {p["step"]: p["solver_iters"] for p in deq["curve"]}
    common = [
        {"step": p["step"], "attractor": p["solver_iters"], "deq": deq_at[p["step"]]}
        for p in attractor_curve
        if p["step"] in deq_at
    ]
    return {
        "attractor": {
            "run": str(runs / "attractor-cpu"),
            "steps": attractor_curve[-1]["step"] if attractor_curve else 0,
            "solver": _solver_record(attractor.config.fixed_point.train_solver),
            "curve": attractor_curve,
        },
        "deq": deq,
        "common": common,
    }


# -----------------------------------------------------------------------------
# 3. State trajectory and its principal components


def states_by_depth(model: LanguageModel, ids: Tensor, module: nn.Module, depths: range) -> Tensor:
    """The last position's input to `module` in a forward at each fixed depth T, (len, C)."""
    seen: list[Tensor] = []

    def grab(_: nn.Module, inputs: tuple[Tensor, ...]) -> None:
        seen.append(inputs[0][0, -1].detach().float().clone())

    handle = module.register_forward_pre_hook(grab)
    try:
        states = []
        for t in depths:
            seen.clear()
            with torch.no_grad():
                model(ids, depth=t)
            if len(seen) != 1:
                raise RuntimeError(
                    f"internalization: expected one call of the hooked module, saw {len(seen)}"
                )
            states.append(seen[0])
    finally:
        handle.remove()
    return torch.stack(states)


def state_module(model: LanguageModel) -> tuple[nn.Module, str]:
    """The module whose input is the state at depth T, and what that state is."""
    if isinstance(model, AttractorLM):
        return model.norm, "the head's iterate y_T (the final norm's input; y_0 the proposal)"
    if model.depth_unit != "recurrences":
        raise ValueError(f"internalization: no state trajectory for a {model.kind} model")
    if len(model.coda) > 0:
        return model.coda[0], "the recurrent state after T recurrences (the coda's input)"
    return model.norm, "the recurrent state after T recurrences (the final norm's input)"


def pca_2d(states: Tensor) -> dict[str, Any]:
    """Coordinates of the rows on the first two principal components of the centred matrix
    (signs fixed so that the last row is non-negative), the variance each explains, and
    the relative step |s_T - s_{T-1}| / |s_T|."""
    centred = states - states.mean(dim=0)
    _, sigma, vh = torch.linalg.svd(centred, full_matrices=False)
    coords = centred @ vh[:2].T  # (T + 1, 2)
    coords = coords * torch.where(coords[-1] < 0, -1.0, 1.0)
    variance = sigma.pow(2)
    steps = (states[1:] - states[:-1]).norm(dim=1) / states[1:].norm(dim=1)
    return {
        "pca": coords.tolist(),
        "explained": (variance[:2] / variance.sum()).tolist(),
        "relative_step": steps.tolist(),
    }


def trajectory(model: LanguageModel, ids: Tensor) -> dict[str, Any]:
    """The last position's state for T = 0 .. TRAJECTORY_DEPTH, projected on two PCs."""
    module, what = state_module(model)
    states = states_by_depth(model, ids, module, range(TRAJECTORY_DEPTH + 1))
    return {"state": what, **pca_2d(states)}


# -----------------------------------------------------------------------------
# Command line


def load_model(runs: Path, preset: str) -> tuple[LanguageModel, Tokenizer]:
    """The exported model of RUNS/PRESET in eval mode and its tokenizer."""
    directory = runs / preset / "model"
    if not directory.is_dir():
        raise ValueError(
            f"{directory} does not exist; run benchmarks/lm_pareto.py first or pass --runs "
            "with the directory it trained into"
        )
    return load_language_model(directory)


def report(result: dict[str, Any]) -> None:
    """The numbers as a few lines of text."""
    names = list(result["depth"])
    print("T      " + "".join(f"{n:>14s}" for n in names))
    for i, t in enumerate(result["depths"]):
        row = "".join(f"{result['depth'][n]['depth'][i]['ppl']:14.2f}" for n in names)
        print(f"{t:<7d}{row}")
    for n in names:
        d = result["depth"][n]["default"]
        print(f"{n} default ({d['what']}): ppl {d['ppl']:.2f} at T = {d['T']:.2f}")
    it = result["solver_iters"]
    deq = it["deq"]
    print(f"deq-cpu: {deq['steps']} steps in {deq['wall_s']:.0f} s "
          f"({deq['seconds_per_step']:.2f} s/step, {deq['threads']} threads)")  # fmt: skip
    if it["common"]:
        mean = {
            k: sum(p[k] for p in it["common"]) / len(it["common"]) for k in ("attractor", "deq")
        }
        print(f"training solver iterations at {len(it['common'])} common steps: attractor "
              f"{mean['attractor']:.1f}, deq {mean['deq']:.1f} (mean)")  # fmt: skip
    for n in names:
        tr = result["trajectory"]["models"][n]
        ex = ", ".join(f"{100 * e:.1f} %" for e in tr["explained"])
        print(f"{n} trajectory: PCs explain {ex}; last relative step {tr['relative_step'][-1]:.2e}")


def measure(args: argparse.Namespace) -> dict[str, Any]:
    """Every number of the result: depth sweeps, trajectories, solver iterations."""
    runs = Path(args.runs)
    ensure_pydocs(Path(args.data))
    loaded = {
        "attractor": load_model(runs, "attractor-cpu"),
        "looped": load_model(runs, "looped-cpu"),
    }
    models = {n: model for n, (model, _) in loaded.items()}
    seq_len = load_config(args.config).data.seq_len
    record = training_record(runs / "attractor-cpu" / "model")
    split = load_text(args.data, seq_len, loaded["attractor"][1], record)
    val, bytes_per_token = split.val, split.bytes_per_token["val"]
    if not 1 <= args.eval_windows <= len(val):
        raise ValueError(
            f"--eval-windows must lie in 1..{len(val)} (the validation windows there are), "
            f"got {args.eval_windows}"
        )
    if not 0 <= args.window < len(val):
        raise ValueError(f"--window must lie in 0..{len(val) - 1}, got {args.window}")
    ids = val.batch([args.window])[0]  # (1, seq_len)
    return {
        "result": "internalization",
        "runs": str(runs),
        "config": args.config,
        "data": args.data,
        "seq_len": seq_len,
        "eval_windows": args.eval_windows,
        "depths": list(DEPTHS),
        "depth": {
            n: depth_curve(m, val, args.eval_windows, bytes_per_token) for n, m in models.items()
        },
        "trajectory": {
            "window": args.window,
            "position": seq_len - 1,
            "T": list(range(TRAJECTORY_DEPTH + 1)),
            "models": {n: trajectory(m, ids) for n, m in models.items()},
        },
        "solver_iters": iterations_over_training(models["attractor"], runs, args),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", default="runs/lm_pareto", help="where lm_pareto.py trained")
    ap.add_argument("--config", default=CONFIG, help="the DEQ's run config, the one lm_pareto.py "
                    "trained the runs with (lm-pydocs-cpu: our recipe; lm-pydocs-cpu-reference: "
                    "the paper's)")  # fmt: skip
    ap.add_argument("--data", default="data/pydocs", help="the python-docs token shards")
    ap.add_argument(
        "--eval-windows", type=int, default=128, help="validation windows (default 128)"
    )
    ap.add_argument("--window", type=int, default=0, help="validation window of the trajectory")
    ap.add_argument("--deq-steps", type=int, default=400, help="DEQ training steps (default 400)")
    ap.add_argument("--threads", type=int, default=2, help="threads of the DEQ run (default 2)")
    ap.add_argument("--work", help="where the DEQ trains (default runs/NAME)")
    ap.add_argument("--name", default="internalization", help="results/NAME.json and .png")
    args = ap.parse_args()
    args.work = args.work or f"runs/{args.name}"
    try:
        result = measure(args)
    except ValueError as err:
        sys.exit(f"internalization: {err}")
    path = write_result(args.name, result)
    plot_results(result, RESULTS / f"{args.name}.png")
    report(result)
    print(f"wrote {path} and its .png")


if __name__ == "__main__":
    main()
