"""Saved-for-backward bytes per autograd op: a backbone block, a head block, a training step.

Issue 17's configuration: attractor-cpu with 4 backbone blocks and 1 head block (d 256, 4
heads, FFN 1024, vocabulary 4096), a batch of 8 x 256 tokens, float32, one Neumann term
without clip (backward "neumann", neumann_clip None), the training solver forced to
exactly T iterations (T_max = T_min = T, tol 0). Two block numerics: ours (the defaults:
learned QK-norm before half-split rotary, mlp_scale 1, norm_eps 1e-6) and the paper
code's ("reference": interleaved rotary, weightless QK-norm after it, mlp_scale 0.5,
norm_eps 1e-5). Saved bytes are counted by `attractor.train.memory.SavedTensors`,
parameters excluded, and split by the autograd node that saved each storage
(`SavedTensors.by_op`): for one backbone block and one head block on a (8, 256, 256)
input, and for the whole step (forward of the next-token loss on materialised logits, as
the issue measured; the trainer's chunked loss is reported beside it).

With ``--baseline DIR`` (a checkout whose `attractor` package is DIR/attractor) every
measurement is repeated on that code, and the step time of the two is compared: two
persistent child processes, one per checkout, take turns stepping (forward and backward,
the same model and batch), and the ratio is of their median step times.

    python benchmarks/saved_bytes_per_op.py                     # T = 4, 16
    python benchmarks/saved_bytes_per_op.py --baseline /tmp/old --steps 9
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
MIB = 2**20
REFERENCE_MIB = 250.7  # the paper's code on this configuration, as issue 17 measured it
BATCH, SEQ_LEN, N_BACKBONE = 8, 256, 4
NUMERICS = {
    "ours": {},
    "reference": dict(norm_eps=1e-5, qk_norm="weightless", rope_layout="interleaved", mlp_scale=0.5),
}  # fmt: skip


def _memory_module():
    """This checkout's attractor/train/memory.py (stdlib and torch only), loaded by path, so
    that a baseline checkout is measured by the same counter."""
    spec = importlib.util.spec_from_file_location(
        "saved_bytes_memory", REPO / "attractor" / "train" / "memory.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def build(numerics: str, depth: int):
    """The issue's model at depth T in the given numerics, in training mode."""
    import torch

    from attractor.models import build_model, preset_config

    solver = preset_config("attractor-cpu").fixed_point.train_solver
    forced = dataclasses.replace(solver, max_iter=depth, min_iter=depth, tol=0.0)
    fixed_point = {"train_solver": forced, "backward": "neumann", "neumann_clip": None}
    torch.manual_seed(0)
    model = build_model(
        "attractor-cpu", n_backbone=N_BACKBONE, fixed_point=fixed_point, **NUMERICS[numerics]
    )
    return model.train()


def batch(vocab: int):
    """The fixed token batch, (BATCH, SEQ_LEN + 1)."""
    import torch

    return torch.randint(vocab, (BATCH, SEQ_LEN + 1), generator=torch.Generator().manual_seed(0))


def measure(numerics: str, depths: list[int]) -> dict:
    """Saved bytes by op of one backbone block, one head block, and the step at each T."""
    import torch

    memory = _memory_module()
    model = build(numerics, depths[0])
    params = list(model.parameters())
    x = torch.randn(BATCH, SEQ_LEN, model.config.dim, requires_grad=True)
    blocks = {}
    for name, block in (("backbone block", model.backbone[0]), ("head block", model.head.blocks[0])):
        with memory.SavedTensors(exclude=params) as saved:
            out = block(x)
        blocks[name] = {"saved_bytes": saved.bytes, "by_op": saved.by_op(out)}
    steps = {}
    for depth in depths:
        model = build(numerics, depth)
        ids = batch(model.config.vocab_size)
        row = {}
        for loss in ("materialised", "chunked"):
            with memory.SavedTensors(exclude=model.parameters()) as saved:
                out = model(ids[:, :-1], labels=ids[:, 1:], return_logits=loss == "materialised")
            if out.depth != depth:
                sys.exit(f"saved_bytes_per_op: ran {out.depth} iterations, not {depth}")
            row[loss] = {"saved_bytes": saved.bytes, "by_op": saved.by_op(out.loss)}
            out.loss.backward()
        steps[str(depth)] = row
    return {"blocks": blocks, "steps": steps}


def serve(numerics: str, depth: int, threads: int) -> None:
    """Step on request: one line "step" on stdin -> one training step, its seconds on stdout."""
    import torch

    torch.set_num_threads(threads)
    model = build(numerics, depth)
    ids = batch(model.config.vocab_size)

    def step() -> float:
        model.zero_grad(set_to_none=True)
        start = time.perf_counter()
        model(ids[:, :-1], labels=ids[:, 1:]).loss.backward()
        return time.perf_counter() - start

    step()  # warm-up
    print("ready", flush=True)
    for line in sys.stdin:
        if line.strip() != "step":
            break
        print(f"{step():.6f}", flush=True)


def _env(tree: Path | None) -> dict[str, str]:
    env = dict(os.environ)
    if tree is not None:
        env["PYTHONPATH"] = os.pathsep.join([str(tree), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return env


def run_child(args: list[str], tree: Path | None) -> dict:
    """This script with `args` in a child importing `attractor` from `tree` (None: here)."""
    cmd = [sys.executable, __file__, *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=_env(tree))
    if proc.returncode != 0:
        sys.exit(f"saved_bytes_per_op: {' '.join(cmd)} failed:\n{proc.stderr.strip()}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def step_times(numerics: str, depth: int, trees: dict[str, Path | None], steps: int, threads: int):
    """Each tree's step seconds, from persistent children that take turns stepping."""
    cmd = [sys.executable, __file__, "--serve", f"{numerics}:{depth}", "--threads", str(threads)]
    children = {
        name: subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                               env=_env(tree))
        for name, tree in trees.items()
    }  # fmt: skip
    times: dict[str, list[float]] = {name: [] for name in trees}
    try:
        for name, child in children.items():
            if child.stdout.readline().strip() != "ready":
                sys.exit(f"saved_bytes_per_op: the {name} step server did not start")
        for _ in range(steps):
            for name, child in children.items():
                child.stdin.write("step\n")
                child.stdin.flush()
                times[name].append(float(child.stdout.readline()))
    finally:
        for child in children.values():
            child.stdin.close()
            child.wait()
    return times


def parse_depths(text: str) -> list[int]:
    """'4,16' -> [4, 16]; every depth at least 1."""
    try:
        depths = [int(d) for d in text.split(",")]
    except ValueError:
        depths = []
    if not depths or min(depths) < 1:
        raise argparse.ArgumentTypeError(f"expected e.g. 4,16 (each >= 1), got {text!r}")
    return depths


def parse_serve(spec: str) -> tuple[str, int]:
    """'NUMERICS:T' -> (NUMERICS, T)."""
    numerics, _, depth = spec.partition(":")
    if numerics not in NUMERICS or not depth.isdigit() or int(depth) < 1:
        raise argparse.ArgumentTypeError(f"expected NUMERICS:T, NUMERICS in {list(NUMERICS)}")
    return numerics, int(depth)


def print_tables(result: dict) -> None:
    """Per-op MiB of each block and the step totals, for every tree and numerics."""
    for tree, by_numerics in result["trees"].items():
        for numerics, m in by_numerics.items():
            for name, block in m["blocks"].items():
                print(f"{tree} / {numerics} / {name}: {block['saved_bytes'] / MIB:.2f} MiB")
                for op, size in block["by_op"].items():
                    print(f"    {op:<48} {size / MIB:8.3f}")
            for depth, row in m["steps"].items():
                mib = {loss: r["saved_bytes"] / MIB for loss, r in row.items()}
                print(f"{tree} / {numerics} / step T={depth}: {mib['materialised']:.1f} MiB "
                      f"(chunked loss {mib['chunked']:.1f}; reference {REFERENCE_MIB})")  # fmt: skip
    for numerics, row in result.get("step_time", {}).items():
        print(f"step time {numerics} T={row['T']}: after / before = {row['ratio']:.3f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--depths", type=parse_depths, default=[4, 16])
    ap.add_argument("--baseline", type=Path, help="a checkout to compare with (DIR/attractor)")
    ap.add_argument("--steps", type=int, default=7, help="timed steps per checkout (baseline)")
    ap.add_argument("--time-depth", type=int, default=4, help="T of the timed steps")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--name", default="saved_bytes_per_op")
    ap.add_argument("--measure", choices=list(NUMERICS), help=argparse.SUPPRESS)
    ap.add_argument("--serve", type=parse_serve, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.measure:
        print(json.dumps(measure(args.measure, args.depths)))
        return
    if args.serve:
        serve(*args.serve, args.threads)
        return
    if args.baseline is not None and not (args.baseline / "attractor" / "__init__.py").is_file():
        sys.exit(f"saved_bytes_per_op: --baseline {args.baseline} has no attractor/__init__.py")
    trees: dict[str, Path | None] = {"after": None}
    if args.baseline is not None:
        trees = {"before": args.baseline.resolve(), "after": None}
    depths = ",".join(map(str, args.depths))
    result: dict = {
        "result": "saved_bytes_per_op",
        "config": f"attractor-cpu, n_backbone {N_BACKBONE}, 1 head block, backward neumann, "
        "neumann_clip None, training solver forced to exactly T iterations",
        "batch": BATCH,
        "seq_len": SEQ_LEN,
        "depths": args.depths,
        "numerics": NUMERICS,
        "reference_mib": REFERENCE_MIB,
        "baseline": None if args.baseline is None else str(args.baseline),
        "saved_bytes": "distinct storages saved for backward, parameters excluded; by_op: "
        "the autograd node that saved each (the first made, when several did)",
        "trees": {
            tree: {n: run_child(["--measure", n, "--depths", depths], path) for n in NUMERICS}
            for tree, path in trees.items()
        },
    }
    if args.baseline is not None:
        result["step_time"] = {}
        for numerics in NUMERICS:
            times = step_times(numerics, args.time_depth, trees, args.steps, args.threads)
            medians = {name: statistics.median(t) for name, t in times.items()}
            result["step_time"][numerics] = {
                "T": args.time_depth,
                "threads": args.threads,
                "seconds": times,
                "median_s": medians,
                "ratio": medians["after"] / medians["before"],
            }
    print_tables(result)
    sys.path.insert(0, str(HERE))
    from common import write_result

    print(f"wrote {write_result(args.name, result)}")


if __name__ == "__main__":
    main()
