"""README.md's table rows from benchmark results: one markdown row for each model of an
`lm_pareto.py` result and each variant of an `ablations.py` result.

    python benchmarks/table.py benchmarks/results/lm_pareto_best_attractor.json \
        benchmarks/results/recipe_ablations_attractor_jfb_733.json --baseline 27.00

A row is | name | params | val ppl at each evaluation after step 0, or at --steps (the last
in bold) | change against --baseline | training FLOPs | mean solver iterations of the
logged steps |; a number the result does not hold (an older result) is "-".
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any


def runs_of(result: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The named runs of one result: lm_pareto's models or ablations' variants."""
    for key in ("models", "variants"):
        if key in result:
            return result[key]
    kind = result.get("result")
    raise SystemExit(f"table.py: a {kind!r} result has no 'models' or 'variants'; give an "
                     "lm_pareto or ablations result")  # fmt: skip


def row(name: str, run: dict[str, Any], baseline: float | None, steps: set[int] | None) -> str:
    """One markdown row: the evaluations at `steps` (None: all after step 0); the change is
    val ppl - baseline, and as a percentage of it."""
    curve = [
        p["val_ppl"]
        for p in run["curve"]
        if p["step"] > 0 and (steps is None or p["step"] in steps)
    ]
    ppl = " / ".join([f"{v:.2f}" for v in curve[:-1]] + [f"**{curve[-1]:.2f}**"])
    if baseline is None:
        change = "-"
    else:
        delta = run["val_ppl"] - baseline
        change = f"{delta:+.2f} ({100 * delta / baseline:+.1f} %)"
    flops = run.get("train_flops")
    iters = run.get("solver_iters_mean")
    cells = [
        name,
        f"{run['params'] / 1e6:.2f}M",
        ppl,
        change,
        "-" if flops is None else f"{flops / 1e12:.1f} T",
        "-" if iters is None else f"{iters:.1f}",
    ]
    return "| " + " | ".join(cells) + " |"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("results", nargs="+", type=Path, help="benchmarks/results/NAME.json files")
    ap.add_argument("--baseline", type=float, help="the validation perplexity to compare with")
    ap.add_argument("--steps", help="comma-separated evaluation steps to show (default: all)")
    args = ap.parse_args()
    try:
        steps = None if args.steps is None else {int(s) for s in args.steps.split(",")}
    except ValueError:
        ap.error(f"--steps: expected e.g. 91,182,733, got {args.steps!r}")
    for path in args.results:
        try:
            result = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise SystemExit(f"table.py: cannot read {path}: {e}") from None
        for name, run in runs_of(result).items():
            print(row(name, run, args.baseline, steps))


if __name__ == "__main__":
    main()
