"""Training throughput and model FLOPs utilisation (issues: trainer, evidence).

Each preset trains through the real `Trainer` on synthetic tokens (nothing to load) for
`--steps` steps; tokens/s is the median over the steps after `--warmup`. Achieved FLOP/s
count what each step ran (each model's `train_flops`, from the iterations it used) and are
given as a fraction of this machine's matmul peak, measured in the same run (a square
matmul in the training dtype), and on CUDA also of the datasheet peak given with --peak.

    python benchmarks/throughput.py                                # CPU: gpt-cpu, attractor-cpu
    python benchmarks/throughput.py --device cuda --presets attractor-140m --seq-len 2048 \\
        --batch 16 --steps 30 --peak 989e12 --name gpu              # one H200, bf16
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import RESULTS, write_result  # noqa: E402

from attractor.eval.plots import plot_results  # noqa: E402
from attractor.train.config import load_config  # noqa: E402
from attractor.train.trainer import Trainer  # noqa: E402


def matmul_peak(device: torch.device, n: int, repeats: int = 10) -> float:
    """Measured FLOP/s of an n x n matmul in the training dtype (bf16 on CUDA)."""
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(3):
        a @ b
    if device.type == "cuda":
        torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(repeats):
        a @ b
    if device.type == "cuda":
        torch.cuda.synchronize()
    return 2 * n**3 * repeats / (time.perf_counter() - t)


def measure(preset: str, args: argparse.Namespace) -> dict:
    cpu_preset = preset.endswith("-cpu")
    overrides = "{vocab_size: 257}" if cpu_preset else "{}"
    cfg = load_config(
        None,
        [
            f"model.preset={preset}",
            f"model.overrides={overrides}",
            "data.source=synthetic",
            f"data.seq_len={args.seq_len}",
            f"data.batch_size={args.batch}",
            f"train.steps={args.steps}",
            "train.eval_every=0",
            "train.progress=false",
            f"train.device={args.device}",
            f"train.out_dir=runs/throughput-{preset}",
        ],
    )
    trainer = Trainer(cfg)
    seconds, iters, flops = [], [], []
    for _ in range(args.steps):
        if trainer.info.device.type == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        result = trainer.train_step()
        if trainer.info.device.type == "cuda":
            torch.cuda.synchronize()
        seconds.append(time.perf_counter() - t)
        iters.append(result.solver_iters or 0.0)
        flops.append(result.flops)
    step_s = statistics.median(seconds[args.warmup :])
    solver_iters = statistics.mean(iters[args.warmup :])
    tokens = args.batch * args.seq_len
    per_token = statistics.mean(flops[args.warmup :]) / tokens
    return {
        "params": trainer.raw.num_params(),
        "median_step_s": step_s,
        "tokens_per_s": tokens / step_s,
        "solver_iters": solver_iters,
        "flops_per_token": per_token,
        "achieved_flops": per_token * tokens / step_s,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--presets", nargs="+", default=["gpt-cpu", "attractor-cpu"])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--seq-len", type=int, default=256)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--peak", type=float, default=None, help="datasheet FLOP/s (optional)")
    ap.add_argument("--matmul-n", type=int, default=None)
    ap.add_argument("--name", default="throughput")
    args = ap.parse_args()
    device = torch.device(args.device)
    n = args.matmul_n or (8192 if device.type == "cuda" else 1024)
    peak = matmul_peak(device, n)
    results = {}
    for preset in args.presets:
        r = measure(preset, args)
        r["fraction_of_measured_peak"] = r["achieved_flops"] / peak
        if args.peak:
            r["mfu_vs_datasheet"] = r["achieved_flops"] / args.peak
        results[preset] = r
    peak_after = matmul_peak(device, n)
    result = {
        "result": "throughput",
        "device": str(device),
        "device_name": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
        "seq_len": args.seq_len,
        "batch": args.batch,
        "steps": args.steps,
        "warmup": args.warmup,
        "matmul_peak_flops": peak,
        "matmul_peak_flops_after": peak_after,
        "datasheet_peak_flops": args.peak,
        "results": results,
    }
    path = write_result(args.name, result)
    plot_results(result, RESULTS / f"{args.name}.png")
    print(f"matmul peak {peak / 1e9:.1f} GFLOP/s (n={n}; {peak_after / 1e9:.1f} after)")
    for preset, r in results.items():
        print(
            f"{preset:<16} {r['tokens_per_s']:9.0f} tok/s  {r['achieved_flops'] / 1e9:8.1f} "
            f"GFLOP/s  {100 * r['fraction_of_measured_peak']:5.1f} % of peak  "
            f"solver iters {r['solver_iters']:.1f}"
        )
    print(f"wrote {path} and its .png")


if __name__ == "__main__":
    main()
