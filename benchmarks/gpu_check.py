"""One prepared GPU check (issue 17, item 4): paper-scale training steps on one GPU.

    python benchmarks/gpu_check.py                        # one H200: under 8 minutes
    python benchmarks/gpu_check.py --device cpu --quick   # CI: tiny presets, under 2 minutes

On the GPU: attractor-140m, gpt-140m and looped-140m at seq 2048 and the largest
micro-batch the memory table predicts (benchmarks/results/logits_memory*.json,
`largest_micro_batch` of the chunked loss; a micro-batch that runs out of memory is halved
and retried), bf16 autocast, eager and then with ``train.compile=true``, ``--steps`` steps
each on synthetic tokens through the real `Trainer`. For each run: tokens/s (median step
after the first two), MFU against 989 TFLOP/s bf16 (each model's `train_flops` of the steps
it ran), peak memory (`torch.cuda.max_memory_allocated`), solver iterations and the
fraction of solver samples that stalled at the noise floor, the compile's own seconds. Then:

- the parity fixtures: tests/models/test_reference_parity.py under pytest, when
  tests/data/reference/ exists (else skipped, with a note);
- DDP on one device: a 1-process group (no torchrun), the trainer's ddp strategy against
  the plain model on the same batches, 3 steps: the same losses.

With ``--quick`` (the CPU, for CI): attractor-cpu, gpt-cpu and looped-cpu at width 64 with a
512-token vocabulary, 2 x 64 tokens, 3 steps, compiled with the aot_eager backend (Dynamo's
capture and the fallback plumbing; inductor's C++ compile is what
benchmarks/compile_speed.py times). Runs stop being started
once ``--budget-s`` seconds have passed (360 on the GPU, so that a last compiled run ends
before 8 minutes; 90 with --quick); those left are recorded as skipped.
Writes benchmarks/results/gpu_check.json (gpu_check_quick.json with --quick).
"""

from __future__ import annotations

import argparse
import gc
import glob
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.distributed as dist

sys.path.insert(0, str(Path(__file__).parent))
from common import RESULTS, write_result  # noqa: E402

from attractor.train.compile import compile_blocks, compiled_blocks_failed  # noqa: E402
from attractor.train.config import load_config  # noqa: E402
from attractor.train.trainer import Trainer  # noqa: E402

PEAK_BF16 = 989e12  # H200 dense bf16 FLOP/s
ROOT = Path(__file__).resolve().parent.parent
PARITY_TEST = ROOT / "tests/models/test_reference_parity.py"
PARITY_DATA = ROOT / "tests/data/reference"
FULL = ("attractor-140m", "gpt-140m", "looped-140m")
QUICK = ("attractor-cpu", "gpt-cpu", "looped-cpu")
# --quick shrinks them further (width 64, 512 tokens): on two CPU cores Muon's Newton-Schulz
# alone would take seconds a step at the presets' own width
TINY = "{vocab_size: 512, dim: 64, n_heads: 2}"


def predicted_batches() -> dict[str, int]:
    """preset -> the memory table's largest micro-batch with the chunked loss."""
    out = {}
    for path in sorted(glob.glob(str(RESULTS / "logits_memory*.json"))):
        record = json.loads(Path(path).read_text())
        if record.get("seq_len") != 2048:
            continue
        for preset, variants in record["models"].items():
            out[preset] = variants["after"]["largest_micro_batch"]
    return out


def run_config(
    preset: str, batch: int, args: argparse.Namespace, out_dir: str, compile_flag: bool
) -> list[str]:
    """The --set assignments of one training run on synthetic tokens."""
    return [
        f"model.preset={preset}", f"model.overrides={TINY if args.quick else '{}'}",
        "data.source=synthetic", f"data.seq_len={args.seq_len}",
        f"data.batch_size={batch}", f"train.steps={args.steps}", "train.eval_every=0",
        "train.progress=false", f"train.device={args.device}", f"train.out_dir={out_dir}",
        f"train.compile={str(compile_flag).lower()}",
    ]  # fmt: skip


def train_run(preset: str, compiled: bool, batch: int, args: argparse.Namespace) -> dict:
    """`--steps` trainer steps; tokens/s, MFU, peak memory, solver figures."""
    cuda = args.device.startswith("cuda")
    with tempfile.TemporaryDirectory() as out_dir:
        flag = compiled and not args.quick  # quick: the aot_eager backend, just below
        trainer = Trainer(load_config(None, run_config(preset, batch, args, out_dir, flag)))
        if compiled and args.quick:
            compile_blocks(trainer.raw, backend="aot_eager")
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        seconds, flops, iters, stalled = [], [], [], []
        for _ in range(args.steps):
            if cuda:
                torch.cuda.synchronize()
            start = time.perf_counter()
            result = trainer.train_step()
            if cuda:
                torch.cuda.synchronize()
            seconds.append(time.perf_counter() - start)
            flops.append(result.flops)
            iters.append(result.solver_iters)
            stalled.append(result.solver_stalled)
        fell_back = compiled_blocks_failed(trainer.raw)
        params = trainer.raw.num_params()
    warm = seconds[2:] if len(seconds) > 2 else seconds
    step_s = statistics.median(warm)
    tokens = batch * args.seq_len
    achieved = statistics.mean(flops[len(seconds) - len(warm) :]) / step_s
    solved = [s for s in stalled if s is not None]  # steps whose model has a solver
    iters = [i for i in iters if i is not None]
    return {
        "batch": batch,
        "params": params,
        "steps": args.steps,
        "median_step_s": step_s,
        "first_step_s": seconds[0],
        # the first step's excess over the median; not measured in --quick (aot_eager, a
        # few tiny steps: below the timing noise)
        "compile_s": seconds[0] - step_s if compiled and not args.quick else None,
        "tokens_per_s": tokens / step_s,
        "achieved_flops": achieved,
        "mfu": achieved / PEAK_BF16 if cuda else None,
        "peak_memory_bytes": torch.cuda.max_memory_allocated() if cuda else None,
        "solver_iters": statistics.mean(iters) if iters else None,
        "solver_stalled_fraction": statistics.mean(solved) if solved else None,
        "steps_with_stalls": sum(s > 0 for s in solved) if solved else None,
        "fell_back_to_eager": fell_back,
    }


def train_with_retries(preset: str, compiled: bool, batch: int, args: argparse.Namespace) -> dict:
    """`train_run`, halving the micro-batch after each out-of-memory error."""
    tried = []
    while batch >= 1:
        try:
            return {**train_run(preset, compiled, batch, args), "out_of_memory_at": tried}
        except torch.OutOfMemoryError:
            tried.append(batch)
            batch //= 2
        finally:  # the next run starts from an empty cache
            gc.collect()
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
    return {"error": f"out of memory at every micro-batch tried: {tried}"}


def parity() -> dict:
    """The parity fixtures under pytest, or a note why they were skipped."""
    if not (PARITY_DATA.is_dir() and PARITY_TEST.is_file()):
        return {"skipped": f"no {PARITY_DATA.relative_to(ROOT)} or {PARITY_TEST.name} here"}
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(PARITY_TEST)]
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    tail = (proc.stdout + proc.stderr).strip().splitlines()
    return {
        "passed": proc.returncode == 0,
        "summary": tail[-1] if tail else "",
        "seconds": time.perf_counter() - start,
    }


def ddp_check(args: argparse.Namespace) -> dict:
    """The trainer's ddp strategy in a 1-process group against the plain model: the same
    losses over 3 steps (gradients pass DDP's all-reduce, a no-op in value here)."""
    backend = "nccl" if args.device.startswith("cuda") else "gloo"
    preset = QUICK[1]  # gpt-cpu: the check is of the wiring, not of the model
    sets = ["data.seq_len=64", "data.batch_size=2", "train.steps=3"]
    losses = {}
    with tempfile.TemporaryDirectory() as tmp:
        dist.init_process_group(
            backend, init_method=f"file://{tmp}/rendezvous", rank=0, world_size=1
        )
        try:
            for strategy in ("none", "ddp"):
                cfg = load_config(None, [
                    f"model.preset={preset}", f"model.overrides={TINY}",
                    "data.source=synthetic", "train.eval_every=0",
                    "train.progress=false", f"train.device={args.device}",
                    f"train.out_dir={tmp}/{strategy}", f"train.strategy={strategy}", *sets,
                ])  # fmt: skip
                trainer = Trainer(cfg)
                wrapped = type(trainer.model).__name__
                losses[strategy] = [trainer.train_step().loss for _ in range(3)]
        finally:
            dist.destroy_process_group()
    diff = max(abs(a - b) for a, b in zip(losses["none"], losses["ddp"], strict=True))
    return {"backend": backend, "wrapped_as": wrapped, "losses": losses,
            "max_loss_difference": diff, "passed": diff <= 1e-5}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--quick", action="store_true", help="tiny presets, a few steps (CI)")
    ap.add_argument("--steps", type=int, default=None)
    ap.add_argument("--seq-len", type=int, default=None)
    ap.add_argument("--batch", type=int, default=None, help="micro-batch for every preset")
    ap.add_argument("--budget-s", type=float, default=None)
    ap.add_argument("--name", default=None)
    args = ap.parse_args()
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        sys.exit("gpu_check: no CUDA device here; run with --device cpu --quick on a CPU")
    start = time.perf_counter()
    presets = QUICK if args.quick else FULL
    args.steps = args.steps or (3 if args.quick else 20)
    args.seq_len = args.seq_len or (64 if args.quick else 2048)
    budget = args.budget_s or (90.0 if args.quick else 360.0)
    predicted = {} if args.quick else predicted_batches()
    record: dict = {"parity": parity(), "ddp": ddp_check(args), "runs": {}}
    print(f"parity: {record['parity']}\nddp: {record['ddp']['passed']}", flush=True)
    for preset in presets:
        batch = args.batch or (2 if args.quick else predicted.get(preset, 16))
        for mode in ("eager", "compiled"):
            key = f"{preset}/{mode}"
            if time.perf_counter() - start > budget:
                record["runs"][key] = {"skipped": f"time budget of {budget:.0f} s spent"}
                continue
            r = train_with_retries(preset, mode == "compiled", batch, args)
            record["runs"][key] = r
            print(f"{key}: {json.dumps(r)}", flush=True)
    result = {
        "result": "gpu_check",
        "device": args.device,
        "device_name": torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu",
        "quick": args.quick,
        "seq_len": args.seq_len,
        "steps": args.steps,
        "predicted_micro_batch": predicted,
        "peak_flops": PEAK_BF16,
        "wall_s": time.perf_counter() - start,
        **record,
    }
    name = args.name or ("gpu_check_quick" if args.quick else "gpu_check")
    print(f"wrote {write_result(name, result)} in {result['wall_s']:.0f} s")


if __name__ == "__main__":
    main()
