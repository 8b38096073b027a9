"""Compiled blocks against eager: training step time on the CPU (issue 17, item 3).

Each preset trains through two real `Trainer`s on the same synthetic tokens, one eager and
one with ``train.compile=true`` (every transformer block under `torch.compile`, inductor;
the solver loop, the implicit-gradient hooks, embeddings and loss eager), stepping in turn
(so that a shared machine's load falls on both alike), in a fresh process with an empty
inductor cache, so the compile time is the real first-run cost. Two ratios,
compiled / eager:

- compile time excluded: the median step after ``--warmup`` steps;
- compile time included: the wall time of all ``--steps`` steps, the compiling ones too
  (so it depends on how many steps the budget has: the break-even is in the JSON).

    python benchmarks/compile_speed.py                      # attractor-cpu, gpt-cpu
    python benchmarks/compile_speed.py --steps 6 --warmup 3 --name compile_speed_quick
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import write_result  # noqa: E402

from attractor.train.compile import compiled_blocks_failed  # noqa: E402
from attractor.train.config import load_config  # noqa: E402
from attractor.train.trainer import Trainer  # noqa: E402


def trainer(preset: str, compiled: bool, args: argparse.Namespace) -> Trainer:
    """A trainer of `preset` on synthetic tokens, its blocks compiled or not."""
    cfg = load_config(None, [
        f"model.preset={preset}",
        "data.source=synthetic", f"data.seq_len={args.seq_len}",
        f"data.batch_size={args.batch}", f"train.steps={args.steps}", "train.eval_every=0",
        "train.progress=false", "train.device=cpu", f"train.compile={str(compiled).lower()}",
        f"train.out_dir=runs/compile_speed-{preset}-{int(compiled)}",
    ])  # fmt: skip
    return Trainer(cfg)


def measure_pair(preset: str, args: argparse.Namespace) -> dict:
    """An eager and a compiled trainer of the same model and batches, stepping in turn, so
    that the machine's load falls on both alike (run in a fresh process)."""
    runs = {"eager": trainer(preset, False, args), "compiled": trainer(preset, True, args)}
    out = {name: {"step_s": [], "losses": []} for name in runs}
    for _ in range(args.steps):
        for name, t in runs.items():
            start = time.perf_counter()
            out[name]["losses"].append(t.train_step().loss)
            out[name]["step_s"].append(time.perf_counter() - start)
    out["compiled"]["fell_back_to_eager"] = compiled_blocks_failed(runs["compiled"].raw)
    return out


def run_child(preset: str, args: argparse.Namespace) -> dict:
    """measure_pair in a fresh interpreter with an empty inductor cache."""
    cmd = [sys.executable, __file__, "--one", preset, "--steps", str(args.steps), "--batch",
           str(args.batch), "--seq-len", str(args.seq_len)]  # fmt: skip
    with tempfile.TemporaryDirectory() as cache:
        env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": cache}
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        sys.exit(f"compile_speed: {' '.join(cmd)} failed:\n{proc.stderr.strip()}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def summarize(eager: dict, compiled: dict, warmup: int) -> dict:
    """The two ratios and the break-even step count."""
    med_e = statistics.median(eager["step_s"][warmup:])
    med_c = statistics.median(compiled["step_s"][warmup:])
    total_e, total_c = sum(eager["step_s"]), sum(compiled["step_s"])
    extra = sum(compiled["step_s"][:warmup]) - warmup * med_c  # compiling's own cost
    saving = med_e - med_c
    return {
        "median_step_s_eager": med_e,
        "median_step_s_compiled": med_c,
        "ratio_excluding_compile": med_c / med_e,
        "ratio_including_compile": total_c / total_e,
        "compile_s": extra,
        "break_even_steps": extra / saving if saving > 0 else None,
        "max_loss_difference": max(
            abs(a - b) for a, b in zip(eager["losses"], compiled["losses"], strict=True)
        ),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--presets", nargs="+", default=["attractor-cpu", "gpt-cpu"])
    ap.add_argument("--seq-len", type=int, default=256)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--name", default="compile_speed")
    ap.add_argument("--one", help="PRESET: measure the pair here, print JSON")
    args = ap.parse_args()
    if args.one:
        print(json.dumps(measure_pair(args.one, args)))
        return
    if not 0 < args.warmup < args.steps:
        sys.exit(f"compile_speed: need 0 < --warmup < --steps, got {args.warmup}, {args.steps}")
    results = {}
    for preset in args.presets:
        pair = run_child(preset, args)
        eager, compiled = pair["eager"], pair["compiled"]
        results[preset] = {**pair, **summarize(eager, compiled, args.warmup)}
        r = results[preset]
        fell_back = " (fell back to eager)" if compiled["fell_back_to_eager"] else ""
        print(
            f"{preset:<14} step {r['median_step_s_eager']:.3f} s eager, "
            f"{r['median_step_s_compiled']:.3f} s compiled: x{r['ratio_excluding_compile']:.2f} "
            f"(x{r['ratio_including_compile']:.2f} with {r['compile_s']:.0f} s of compiling "
            f"over {args.steps} steps){fell_back}",
            flush=True,
        )
    result = {
        "result": "compile_speed",
        "seq_len": args.seq_len,
        "batch": args.batch,
        "steps": args.steps,
        "warmup": args.warmup,
        "threads": torch.get_num_threads(),
        "ratios": "compiled / eager: median step after warmup (compile excluded); the wall "
        "time of every step (compile included); the two trainers step in turn in one fresh "
        "process with an empty inductor cache",
        "results": results,
    }
    print(f"wrote {write_result(args.name, result)}")


if __name__ == "__main__":
    main()
