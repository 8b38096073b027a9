"""Training memory against solver depth (paper Figure 5: constant in depth).

One training step (forward and backward of the next-token loss, float32, CPU) at each
depth T, for the attractor-cpu preset with the jfb, adjoint and phantom (k = 2)
backwards, its solve forced to exactly T iterations (the training solver with T_max =
T_min = T, tol 0: the training path a T_max of T gives when nothing converges early), and
for the
looped-cpu baseline with T recurrences and gradients through all of them
(backprop_depth = T). Two numbers per step:

- saved bytes: the distinct storages autograd saves for backward during the forward,
  counted by `attractor.train.memory.SavedTensors`, parameters excluded (the weights the graph
  saves are reported apart, as saved_param_bytes: they are the model, not the step's
  memory). The adjoint's backward solve (fixed_point's default adjoint solver: Anderson,
  tol 1e-6, at most 64 iterations, whatever T is) saves nothing in the forward: its cost
  is in the peak.
- peak RSS increase: ru_maxrss after the step minus ru_maxrss right before it, in a fresh
  child process per configuration. Before the step the child builds the model and the
  batch and runs one warm-up step at T = 1 on a tiny batch (1 sequence of 16 tokens), so
  the gradient buffers exist and the one-time set-up is done while the high-water mark
  stays at the resting level (rss_before_mib, the RSS just before the step, records it).
  The increase is the step's working set above model + gradients + batch: activations,
  solver buffers, logits and their gradients, temporaries.

    python benchmarks/memory_vs_depth.py                  # T = 4 .. 64, 8 x 256 tokens
    python benchmarks/memory_vs_depth.py --depths 4,8 --seq-len 64 --name memory_vs_depth_quick
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import RESULTS, parse_depths, write_result  # noqa: E402

from attractor.eval.plots import plot_results  # noqa: E402
from attractor.models import (  # noqa: E402
    LanguageModel,  # noqa: E402
    build_model,
    preset_config,
)
from attractor.train.memory import SavedTensors, current_rss_bytes, peak_rss_bytes  # noqa: E402

MIB = 2**20
WARMUP_TOKENS = 16

# configuration -> (preset, overrides)
CONFIGS: dict[str, tuple[str, dict]] = {
    "attractor-jfb": ("attractor-cpu", dict(backward="jfb")),
    "attractor-adjoint": ("attractor-cpu", dict(backward="adjoint")),
    "attractor-phantom2": ("attractor-cpu", dict(backward="phantom", backward_steps=2)),
    "looped-full": ("looped-cpu", {}),
}


def build(config: str, depth: int) -> LanguageModel:
    """The configuration's model, set to train at depth T with its configured backward."""
    preset, overrides = CONFIGS[config]
    if preset.startswith("attractor"):
        solver = preset_config(preset).fixed_point.train_solver
        forced = dataclasses.replace(solver, max_iter=depth, min_iter=depth, tol=0.0)
        overrides = {"fixed_point": {**overrides, "train_solver": forced}}
    else:
        overrides = {**overrides, "backprop_depth": depth}
    torch.manual_seed(0)
    return build_model(preset, **overrides).train()


def step(model: LanguageModel, ids: torch.Tensor, depth: int | None) -> tuple[float, dict]:
    """One forward and backward on ids (B, L+1); the loss and what the forward saved.

    depth is the looped model's T, or a forced attractor depth for the warm-up; None runs
    the attractor's training solve."""
    with SavedTensors(exclude=model.parameters()) as saved:
        out = model(ids[:, :-1], labels=ids[:, 1:], depth=depth)
    out.loss.backward()
    iters = out.depth
    return float(out.loss.detach()), {
        "saved_bytes": saved.bytes,
        "saved_storages": saved.storages,
        "saved_param_bytes": saved.excluded_bytes,
        "depth_run": iters,
    }


def measure_one(config: str, depth: int, batch: int, seq_len: int) -> dict:
    """Build, warm up, then measure one training step at depth T (run in a fresh process)."""
    model = build(config, depth)
    vocab = model.config.vocab_size
    ids = torch.randint(vocab, (batch, seq_len + 1), generator=torch.Generator().manual_seed(0))
    step(model, ids[:1, : WARMUP_TOKENS + 1], depth=1)
    looped = CONFIGS[config][0].startswith("looped")
    gc.collect()
    rss_before, peak_before = current_rss_bytes(), peak_rss_bytes()
    start = time.perf_counter()
    loss, saved = step(model, ids, depth if looped else None)
    seconds = time.perf_counter() - start
    peak_after = peak_rss_bytes()
    if saved["depth_run"] != depth:
        sys.exit(f"memory_vs_depth: {config} ran {saved['depth_run']} iterations, not {depth}")
    return {
        "T": depth,
        **saved,
        "saved_mib": saved["saved_bytes"] / MIB,
        "peak_rss_increase_mib": (peak_after - peak_before) / MIB,
        "peak_rss_mib": peak_after / MIB,
        "maxrss_before_mib": peak_before / MIB,
        "rss_before_mib": None if rss_before is None else rss_before / MIB,
        "step_s": seconds,
        "loss": loss,
    }


def run_child(config: str, depth: int, args: argparse.Namespace) -> dict:
    """measure_one in a fresh interpreter, so that its peak memory is its own."""
    cmd = [sys.executable, __file__, "--one", f"{config}:{depth}", "--batch", str(args.batch),
           "--seq-len", str(args.seq_len)]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"memory_vs_depth: {' '.join(cmd)} failed:\n{proc.stderr.strip()}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def parse_one(spec: str) -> tuple[str, int]:
    """'CONFIG:T' -> (CONFIG, T), with a clear error for anything else."""
    config, _, depth = spec.rpartition(":")
    if config not in CONFIGS or not depth.isdigit() or int(depth) < 1:
        raise argparse.ArgumentTypeError(
            f"expected CONFIG:T with CONFIG in {', '.join(CONFIGS)} and T >= 1, got {spec!r}"
        )
    return config, int(depth)


def print_table(configs: dict[str, dict]) -> None:
    """One line per configuration and depth: saved MiB, peak RSS increase, step seconds."""
    print(f"{'configuration':<20} {'T':>3} {'saved MiB':>10} {'peak RSS +MiB':>14} {'step s':>7}")
    for name, entry in configs.items():
        for r in entry["rows"]:
            print(
                f"{name:<20} {r['T']:>3} {r['saved_mib']:>10.1f} "
                f"{r['peak_rss_increase_mib']:>14.1f} {r['step_s']:>7.2f}"
            )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--depths", type=parse_depths, default=[4, 8, 16, 32, 64])
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seq-len", type=int, default=256)
    ap.add_argument("--name", default="memory_vs_depth")
    ap.add_argument("--one", type=parse_one, help="measure CONFIG:T here and print it as JSON")
    args = ap.parse_args()
    if args.one:
        print(json.dumps(measure_one(*args.one, args.batch, args.seq_len)))
        return
    configs = {}
    for name, (preset, overrides) in CONFIGS.items():
        rows = []
        for depth in args.depths:
            rows.append(run_child(name, depth, args))
            print(f"{name} T={depth}: {rows[-1]['step_s']:.1f} s", file=sys.stderr, flush=True)
        configs[name] = {"preset": preset, "overrides": overrides, "rows": rows}
    result = {
        "result": "memory_vs_depth",
        "batch": args.batch,
        "seq_len": args.seq_len,
        "depths": args.depths,
        "threads": torch.get_num_threads(),
        "depth": "attractor: training solver with T_max = T_min = T, tol 0 (exactly T "
        "iterations); looped: steps = backprop_depth = T (gradients through every recurrence)",
        "saved_bytes": "distinct storages saved for backward in the forward, parameters "
        "excluded (saved_param_bytes: the parameters' storages the graph saved)",
        "peak_rss_increase": "ru_maxrss after the step minus ru_maxrss right before it, in "
        f"a fresh process, after a T=1 warm-up step on 1 x {WARMUP_TOKENS} tokens",
        "configs": configs,
    }
    print_table(configs)
    path = write_result(args.name, result)
    png = plot_results(result, RESULTS / f"{args.name}.png")
    print(f"wrote {path} and {png}")


if __name__ == "__main__":
    main()
