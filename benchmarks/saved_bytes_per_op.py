"""Saved-for-backward bytes per autograd op (issue 17, item 6): one block, a training step.

Issue 17's configuration: d 256, 4 heads, FFN 1024, 4 backbone + 1 head block, vocabulary
4096, a batch of 8 x 256 tokens, float32, one Neumann term without clip (backward
"neumann", neumann_clip None), the training solve forced to exactly T iterations (T_min =
T_max = T, tol 0). Two numerics on that shape:

- "paper": the attractor-140m preset, the paper code's numerics (interleaved rotary base
  5e4, weightless QK-norm after it, mlp_scale 0.5, norm_eps 1e-5, gates fixed at 0.75),
  as the reference implementation computes;
- "ours": attractor-cpu with 4 backbone blocks in the numerics it had when issue 17 was
  measured (half-split rotary, learned QK-norm before it, mlp_scale 1, norm_eps 1e-6,
  learnable gates).

Saved bytes are counted by `attractor.train.memory.SavedTensors`, parameters excluded
(buffers, i.e. the rotary tables, counted), and split by the autograd node that saved
each storage (`SavedTensors.by_op`): for one backbone block and one head block on an
(8, 256, 256) input, and for the whole step (the next-token loss on materialised
logits, as the issue measured; the trainer's chunked loss is reported beside it).

With ``--baseline DIR`` (a checkout whose `attractor` package is DIR/attractor) every
measurement is repeated on that code, and the time of a training step (forward and
backward, materialised logits) and of an evaluation forward (no gradients, depth T) are
compared: two persistent child processes, one per checkout, take turns (one step of the
one, then one of the other), and each ratio is of the two median times.

    python benchmarks/saved_bytes_per_op.py                                  # T = 4, 16, 64
    python benchmarks/saved_bytes_per_op.py --baseline /tmp/old17 --repeats 7
"""

from __future__ import annotations

import argparse
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
sys.path.insert(0, str(HERE))
from common import parse_depths, write_result  # noqa: E402

MIB = 2**20
REFERENCE_MIB = 250.7  # the paper's code on this configuration, as issue 17 measured it
BATCH, SEQ_LEN = 8, 256
SHAPE = dict(dim=256, n_heads=4, mlp_ratio=4.0, n_backbone=4, n_head_layers=1,
             vocab_size=4096, max_seq_len=512)  # fmt: skip
# ours: the numerics and gates the -cpu presets had until 2026-12-07 (lm-pydocs-cpu-ours)
OURS = dict(rope_layout="half", rope_base=10000.0, qk_norm="learned", mlp_scale=1.0,
            norm_eps=1e-6, gate_max=1.0, gate_clamp=1e-3)  # fmt: skip
NUMERICS = {  # name -> (preset, its fixed-point overrides, its other overrides)
    "paper": ("attractor-140m", {}, {}),
    "ours": ("attractor-cpu", {"backward": "neumann", "neumann_clip": None}, OURS),
}
MODES = ("train", "eval")


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
    """The issue's model in the given numerics, its training solve forced to T = depth."""
    import dataclasses

    import torch

    from attractor.models import build_model, preset_config

    preset, fixed_point, fields = NUMERICS[numerics]
    solver = preset_config(preset).fixed_point.train_solver
    forced = dataclasses.replace(solver, max_iter=depth, min_iter=depth, tol=0.0)
    torch.manual_seed(0)
    model = build_model(
        preset, fixed_point={**fixed_point, "train_solver": forced}, **SHAPE, **fields
    )
    return model.train()


def batch(vocab: int):
    """The fixed token batch, (BATCH, SEQ_LEN + 1)."""
    import torch

    return torch.randint(vocab, (BATCH, SEQ_LEN + 1), generator=torch.Generator().manual_seed(0))


def measure(numerics: str, depths: list[int]) -> dict:
    """Saved bytes (and their split by op) of one backbone block, one head block, and the
    training step at each T."""
    import torch

    memory = _memory_module()
    model = build(numerics, depths[0])
    x = torch.randn(BATCH, SEQ_LEN, model.config.dim, requires_grad=True)
    blocks = {}
    one_of_each = {"backbone block": model.backbone[0], "head block": model.head.blocks[0]}
    for name, block in one_of_each.items():
        with memory.SavedTensors(exclude=model.parameters()) as saved:
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
    """Time on request: a line "train" (a training step, forward and backward) or "eval"
    (a forward at depth T without gradients) on stdin -> its seconds on stdout."""
    import torch

    torch.set_num_threads(threads)
    model = build(numerics, depth)
    ids = batch(model.config.vocab_size)

    def train() -> float:
        model.zero_grad(set_to_none=True)
        start = time.perf_counter()
        model(ids[:, :-1], labels=ids[:, 1:]).loss.backward()
        return time.perf_counter() - start

    def evaluate() -> float:
        model.eval()
        start = time.perf_counter()
        with torch.no_grad():
            out = model(ids[:, :-1], labels=ids[:, 1:], depth=depth)
        seconds = time.perf_counter() - start
        model.train()
        if out.depth != depth:
            sys.exit(f"saved_bytes_per_op: evaluation ran depth {out.depth}, not {depth}")
        return seconds

    runs = {"train": train, "eval": evaluate}
    train(), evaluate()  # warm-up
    print("ready", flush=True)
    for line in sys.stdin:
        if line.strip() not in runs:
            break
        print(f"{runs[line.strip()]():.6f}", flush=True)


def _env(tree: Path | None) -> dict[str, str]:
    env = dict(os.environ)
    if tree is not None:
        paths = [str(tree), env.get("PYTHONPATH", "")]
        env["PYTHONPATH"] = os.pathsep.join(paths).rstrip(os.pathsep)
    return env


def run_child(args: list[str], tree: Path | None) -> dict:
    """This script with `args` in a child importing `attractor` from `tree` (None: here)."""
    cmd = [sys.executable, __file__, *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=_env(tree))
    if proc.returncode != 0:
        sys.exit(f"saved_bytes_per_op: {' '.join(cmd)} failed:\n{proc.stderr.strip()}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def times(numerics: str, depth: int, trees: dict[str, Path | None], repeats: int, threads: int):
    """{mode: {tree: [seconds, ...]}} from persistent children that take turns."""
    cmd = [sys.executable, __file__, "--serve", f"{numerics}:{depth}", "--threads", str(threads)]
    children = {
        name: subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                               env=_env(tree))
        for name, tree in trees.items()
    }  # fmt: skip
    seconds: dict[str, dict[str, list[float]]] = {m: {n: [] for n in trees} for m in MODES}
    try:
        for name, child in children.items():
            if child.stdout.readline().strip() != "ready":
                sys.exit(f"saved_bytes_per_op: the {name} timing server did not start")
        for _ in range(repeats):
            for mode in MODES:
                for name, child in children.items():
                    child.stdin.write(f"{mode}\n")
                    child.stdin.flush()
                    seconds[mode][name].append(float(child.stdout.readline()))
    finally:
        for child in children.values():
            child.stdin.close()
            child.wait()
    return seconds


def parse_serve(spec: str) -> tuple[str, int]:
    """'NUMERICS:T' -> (NUMERICS, T)."""
    numerics, _, depth = spec.partition(":")
    if numerics not in NUMERICS or not depth.isdigit() or int(depth) < 1:
        raise argparse.ArgumentTypeError(f"expected NUMERICS:T, NUMERICS in {list(NUMERICS)}")
    return numerics, int(depth)


def _commit(tree: Path) -> str:
    """The baseline checkout's commit."""
    proc = subprocess.run(["git", "-C", str(tree), "rev-parse", "HEAD"], capture_output=True,
                          text=True)  # fmt: skip
    return proc.stdout.strip() or "unknown"


def print_tables(result: dict) -> None:
    """Per-op MiB of each block, the step totals, and the time ratios."""
    for tree, by_numerics in result["trees"].items():
        for numerics, m in by_numerics.items():
            for name, block in m["blocks"].items():
                print(f"{tree} / {numerics} / {name}: {block['saved_bytes'] / MIB:.3f} MiB")
                for op, size in block["by_op"].items():
                    print(f"    {op:<48} {size / MIB:8.3f}")
            for depth, row in m["steps"].items():
                mib = {loss: r["saved_bytes"] / MIB for loss, r in row.items()}
                print(f"{tree} / {numerics} / step T={depth}: {mib['materialised']:.2f} MiB "
                      f"(chunked {mib['chunked']:.2f}; reference {REFERENCE_MIB})")  # fmt: skip
    for key, row in result.get("time", {}).items():
        print(f"{key}: after / before = {row['ratio']:.3f} (medians {row['median_s']})")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--depths", type=parse_depths, default=[4, 16, 64])
    ap.add_argument("--baseline", type=Path, help="a checkout to compare with (DIR/attractor)")
    ap.add_argument("--repeats", type=int, default=7, help="timed runs per checkout and mode")
    ap.add_argument("--time-depths", type=parse_depths, default=[4, 16])
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
        "config": "d 256, 4 heads, FFN 1024, 4 backbone + 1 head block, vocabulary 4096, "
        "backward neumann, neumann_clip None, training solve forced to exactly T iterations",
        "shape": SHAPE,
        "batch": BATCH,
        "seq_len": SEQ_LEN,
        "depths": args.depths,
        "numerics": {n: {"preset": p, "fixed_point": fp} for n, (p, fp) in NUMERICS.items()},
        "reference_mib": REFERENCE_MIB,
        "baseline": None if args.baseline is None else str(args.baseline),
        "baseline_commit": None if args.baseline is None else _commit(args.baseline),
        "saved_bytes": "distinct storages saved for backward, parameters excluded; by_op: "
        "the autograd node that saved each (the first made, when several did)",
        "trees": {
            tree: {n: run_child(["--measure", n, "--depths", depths], path) for n in NUMERICS}
            for tree, path in trees.items()
        },
    }
    if args.baseline is not None:
        result["time"] = {}
        for numerics in NUMERICS:
            for depth in args.time_depths:
                seconds = times(numerics, depth, trees, args.repeats, args.threads)
                for mode, by_tree in seconds.items():
                    medians = {name: statistics.median(t) for name, t in by_tree.items()}
                    result["time"][f"{mode} {numerics} T={depth}"] = {
                        "threads": args.threads,
                        "seconds": by_tree,
                        "median_s": medians,
                        "ratio": medians["after"] / medians["before"],
                    }
    print_tables(result)
    print(f"wrote {write_result(args.name, result)}")


if __name__ == "__main__":
    main()
