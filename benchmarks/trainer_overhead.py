"""The trainer's own overhead against a bare forward/backward/step loop (issue: trainer).

Both run `gpt-cpu` (byte vocabulary) on the same pydoc batches with the same optimizer:
the bare loop is `model(x, labels=y).loss.backward(); clip; opt.step(); opt.zero_grad()`,
the trainer is `Trainer.train_step()` (schedule, accumulation bookkeeping, non-finite
guard, metrics). They alternate in blocks of `--steps`, `--repeats` times; the figure is
the ratio of median step times.

    python benchmarks/trainer_overhead.py
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

from attractor.train.config import load_config  # noqa: E402
from attractor.train.trainer import Trainer  # noqa: E402


def bare_steps(trainer: Trainer, steps: int) -> float:
    """Median seconds of the bare loop over the trainer's own model, optimizer and data."""
    model, opt, task = trainer.raw, trainer.opt, trainer.task
    times = []
    for _ in range(steps):
        t = time.perf_counter()
        x, y = task.next_batch()
        model(x, labels=y).loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def trainer_steps(trainer: Trainer, steps: int) -> float:
    times = []
    for _ in range(steps):
        t = time.perf_counter()
        trainer.train_step()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="gpt-cpu")
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    cfg = load_config(
        None,
        [
            f"model.preset={args.preset}",
            "model.overrides={vocab_size: 257}",
            "data.seq_len=128",
            "data.batch_size=16",
            "train.progress=false",
            "train.device=cpu",
            "train.out_dir=runs/trainer-overhead",
            f"train.steps={10**6}",
        ],
    )
    trainer = Trainer(cfg)
    trainer_steps(trainer, 2)  # warm-up
    bare, loop = [], []
    for _ in range(args.repeats):
        bare.append(bare_steps(trainer, args.steps))
        loop.append(trainer_steps(trainer, args.steps))
    b, t = statistics.median(bare), statistics.median(loop)
    overhead = t / b - 1.0
    path = write_result(
        "trainer_overhead",
        {
            "preset": args.preset,
            "steps_per_block": args.steps,
            "repeats": args.repeats,
            "bare_step_s": bare,
            "trainer_step_s": loop,
            "median_bare_step_s": b,
            "median_trainer_step_s": t,
            "overhead": overhead,
        },
    )
    print(
        f"{args.preset}: bare {1e3 * b:.1f} ms/step, trainer {1e3 * t:.1f} ms/step, "
        f"overhead {100 * overhead:+.1f} % (median of {args.repeats} x {args.steps} steps)"
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
