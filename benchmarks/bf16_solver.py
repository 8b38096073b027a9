"""The solve under bf16: iterations to the tolerance or to the noise floor (issue 17, item 1).

attractor-cpu at random init (seed 0), evaluation mode, 2 x 128 tokens, on the CPU. Two
parts:

- the table: the evaluation solve (Anderson, every position stopping on its own, T_max 16)
  at the preset's tolerance 1e-3 and the paper's 3e-4, in float32, in bf16 autocast with
  stall detection off ("before": ``stall_patience=0``) and on ("after": the default). For
  each: the solve's iterations, the mean iterations a position ran, the largest residual,
  the fractions converged and stalled, the wall time, and the logits' largest per-position
  error against float32's in units of u = 2^-8;
- the floor: where the residual stops falling when it is not stopped (tol 0, 40 iterations,
  no stall detection) for different precisions of the head map, to see what sets it: the
  head's matmuls in bf16 (autocast), everything in bf16 (additions too), the head's linear
  layers fed bf16 inputs and weights but producing float32 (emulated: rounded inputs,
  float32 products; attention in float32), and the head in float32.

    python benchmarks/bf16_solver.py
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import dataclasses
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).parent))
from common import write_result  # noqa: E402

from attractor.engine import SolverConfig, solve  # noqa: E402
from attractor.models import build_model  # noqa: E402
from attractor.models.attractor import AttractorLM, HeadMap  # noqa: E402

U = 2.0**-8


def bf16() -> contextlib.AbstractContextManager:
    """CPU bf16 autocast."""
    return torch.autocast("cpu", dtype=torch.bfloat16)


@contextlib.contextmanager
def linear_bf16_inputs_fp32_products() -> Iterator[None]:
    """F.linear with its input and weight rounded to bf16 and the product in float32
    (what a bf16 GEMM with a float32 output gives), autocast off (attention in float32)."""
    linear = F.linear

    def rounded(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None = None):
        return linear(x.bfloat16().float(), w.bfloat16().float(), b)

    F.linear = rounded
    try:
        with torch.autocast("cpu", enabled=False):
            yield
    finally:
        F.linear = linear


def solver_table(model: AttractorLM, ids: torch.Tensor, tol: float) -> dict[str, dict]:
    """float32, bf16 before and bf16 after at one tolerance."""
    base = model.config.fixed_point.eval_solver
    rows, reference = {}, None
    for name, autocast, patience in [
        ("float32", contextlib.nullcontext, base.stall_patience),
        ("bf16 before", bf16, 0),
        ("bf16 after", bf16, base.stall_patience),
    ]:
        model.config.fixed_point.eval_solver = dataclasses.replace(
            base, tol=tol, stall_patience=patience
        )
        start = time.perf_counter()
        with torch.no_grad(), autocast():
            out = model(ids)
        seconds = time.perf_counter() - start
        logits = out.logits.float()
        reference = logits if reference is None else reference
        s = out.solver
        error = (logits - reference).norm(dim=-1) / reference.norm(dim=-1)
        rows[name] = {
            "iters": s.iters,
            "mean_position_iters": float(s.sample_iters.float().mean()),
            "max_residual": float(s.residual.max()),
            "converged": float(s.converged.float().mean()),
            "stalled": float(s.stalled.float().mean()),
            "floor": s.floor,
            "seconds": seconds,
            "logit_error_u": float(error.max()) / U,
        }
    model.config.fixed_point.eval_solver = base
    return rows


def floor_trace(
    model: AttractorLM, ids: torch.Tensor, outer: Callable, head: Callable, iters: int
) -> list[float]:
    """The max residual per iteration of an unstopped solve, the head run inside `head`."""
    cfg = SolverConfig("anderson", tol=0.0, max_iter=iters, stall_patience=0)
    with torch.no_grad(), outer():
        y0 = model.proposal(ids)
        f = HeadMap(model.head, y0)

        def g(y: torch.Tensor, active: torch.Tensor | None = None) -> torch.Tensor:
            with head():
                return f(y.to(y0.dtype)).float()

        _, stats = solve(g, f.flat(y0).float(), cfg)
    return stats.trace


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--seq-len", type=int, default=128)
    ap.add_argument("--floor-iters", type=int, default=40)
    ap.add_argument("--name", default="bf16_solver")
    args = ap.parse_args()
    torch.manual_seed(0)
    model = build_model("attractor-cpu").eval()
    vocab = model.config.vocab_size
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(0, vocab, (args.batch, args.seq_len), generator=gen)
    table = {f"{tol:g}": solver_table(model, ids, tol) for tol in (1e-3, 3e-4)}
    all_bf16 = copy.deepcopy(model).to(torch.bfloat16)
    none = contextlib.nullcontext
    variants = {
        "float32": (model, none, none),
        "bf16 autocast (head matmuls bf16, additions float32)": (model, bf16, none),
        "bf16 model (additions bf16 too)": (all_bf16, none, none),
        "head linears bf16 inputs, float32 products (emulated)": (
            model,
            bf16,
            linear_bf16_inputs_fp32_products,
        ),  # fmt: skip
        "head float32, backbone bf16": (model, bf16, lambda: torch.autocast("cpu", enabled=False)),
    }
    floors = {}
    for name, (m, outer, head) in variants.items():
        trace = floor_trace(m, ids, outer, head, args.floor_iters)
        tail = trace[len(trace) // 2 :]
        floors[name] = {"trace": trace, "floor_median": sorted(tail)[len(tail) // 2]}
    result = {
        "result": "bf16_solver",
        "preset": "attractor-cpu",
        "batch": args.batch,
        "seq_len": args.seq_len,
        "threads": torch.get_num_threads(),
        "table": table,
        "floors": floors,
        "floor": "median over the second half of an unstopped 40-iteration solve of the max "
        "residual over positions",
        "logit_error_u": "largest per-position |l - l_float32| / |l_float32|, in u = 2^-8",
    }
    print(f"{'tol':<6} {'run':<12} {'iters':>5} {'mean':>5} {'max res':>8} {'conv':>5} "
          f"{'stall':>5} {'s':>5} {'logit err':>9}")  # fmt: skip
    for tol, rows in table.items():
        for name, r in rows.items():
            print(
                f"{tol:<6} {name:<12} {r['iters']:>5} {r['mean_position_iters']:>5.1f} "
                f"{r['max_residual']:>8.1e} {r['converged']:>5.2f} {r['stalled']:>5.2f} "
                f"{r['seconds']:>5.2f} {r['logit_error_u']:>8.2f}u"
            )
    for name, r in floors.items():
        print(f"floor {r['floor_median']:.1e}  {name}")
    print(f"wrote {write_result(args.name, result)}")


if __name__ == "__main__":
    main()
