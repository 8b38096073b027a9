"""Where does the Attractor's advantage begin? A size series at CPU scale (paper Table 1,
whose claim is a Pareto gain from 140M parameters up).

At each width the Attractor is `attractor-cpu` (5 backbone blocks and 1 head block) at
that width, and GPT is `gpt-cpu` (value embeddings) at the same width with the depth
whose parameter count comes closest to the Attractor's. Both train with one packaged
config (default lm-pydocs-cpu) on the same number of tokens per Attractor parameter
(default 0.284: the parity run's 1.6M tokens for attractor-cpu's 5.77M), so compute grows
with the square of the size. The warm-up is the same fraction of every run (default 0.05:
the parity run's 20 of 400 steps), so width 256 is that run's schedule exactly; batch,
sequence length, learning rates and the decay stay the config's (no learning-rate transfer
across widths: a limit of the series). Each pair
reports both final validation perplexities, their ratio, the training FLOPs counted from the
iterations run, and wall time. One seed, one run at a time.

    python benchmarks/lm_size_series.py            # widths 128, 256, 512: about 5 hours
    python benchmarks/lm_size_series.py --widths 64,96 --tokens-per-param 0.002 \\
        --evals 1 --eval-batches 2 --work runs/lm_size_series_quick \\
        --name lm_size_series_quick                # the CI smoke version
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
from common import RESULTS, RESUME_HELP, SEED_HELP, ensure_pydocs, write_result  # noqa: E402
from lm_pareto import CONFIG, train_one  # noqa: E402

from attractor.eval.plots import plot_results  # noqa: E402
from attractor.models import build_model  # noqa: E402

HEAD_DIM = 64  # every width's heads: width / 64 (the -cpu presets' 256 / 4)


def parse_widths(text: str) -> list[int]:
    """'128,256,512' -> [128, 256, 512]; each a positive multiple of 32."""
    try:
        widths = [int(w) for w in text.split(",")]
    except ValueError:
        widths = []
    if not widths or any(w < 32 or w % 32 for w in widths):
        raise argparse.ArgumentTypeError(
            f"expected widths such as 128,256,512 (multiples of 32), got {text!r}"
        )
    return widths


def shape(width: int) -> dict[str, int]:
    """The model overrides of one width: its dim and heads (at least one)."""
    return {"dim": width, "n_heads": max(1, width // HEAD_DIM)}


def matched_gpt_layers(width: int, target: int, most: int = 24) -> int:
    """The gpt-cpu depth at `width` whose parameter count is closest to `target`."""
    counts = {
        n: build_model("gpt-cpu", **shape(width), n_layers=n).num_params()
        for n in range(1, most + 1)
    }
    return min(counts, key=lambda n: abs(counts[n] - target))


def train_pair(width: int, args: argparse.Namespace) -> dict[str, Any]:
    """The Attractor and its parameter-matched GPT at `width`, on the same tokens."""
    attractor_params = build_model("attractor-cpu", **shape(width)).num_params()
    layers = matched_gpt_layers(width, attractor_params)
    tokens = max(args.batch * args.seq_len, round(args.tokens_per_param * attractor_params))
    steps = math.ceil(tokens / (args.batch * args.seq_len))
    warmup_steps = max(1, round(args.warmup_fraction * steps))
    warmup = [f"schedule.warmup_steps={warmup_steps}"]
    runs = {
        "attractor": train_one(
            "attractor-cpu", args, tokens, shape(width), f"attractor-{width}", warmup
        ),
        "gpt": train_one(
            "gpt-cpu", args, tokens, dict(shape(width), n_layers=layers), f"gpt-{width}", warmup
        ),
    }
    return {
        "width": width,
        "gpt_layers": layers,
        "warmup_steps": warmup_steps,
        "tokens": runs["attractor"]["tokens"],
        "ppl_ratio": runs["attractor"]["val_ppl"] / runs["gpt"]["val_ppl"],
        "params_ratio": runs["attractor"]["params"] / runs["gpt"]["params"],
        "flops_ratio": runs["attractor"]["train_flops"] / runs["gpt"]["train_flops"],
        **runs,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default=CONFIG, help="both models' run config")
    ap.add_argument("--widths", type=parse_widths, default=[128, 256, 512],
                    help="comma-separated model widths")  # fmt: skip
    ap.add_argument("--tokens-per-param", type=float, default=0.284,
                    help="training tokens per Attractor parameter")  # fmt: skip
    ap.add_argument("--warmup-fraction", type=float, default=0.05,
                    help="warm-up steps as a fraction of each run's steps")  # fmt: skip
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--seq-len", type=int, default=256)
    ap.add_argument("--evals", type=int, default=4, help="evaluations over training")
    ap.add_argument("--eval-batches", type=int, default=16)
    ap.add_argument("--threads", type=int, default=2, help="threads of every run")
    ap.add_argument("--data", default="data/pydocs")
    ap.add_argument("--work", default="runs/lm_size_series", help="run directories")
    ap.add_argument("--name", default="lm_size_series", help="results/NAME.json and .png")
    ap.add_argument("--seed", type=int, default=0, help=SEED_HELP)
    ap.add_argument("--resume", action="store_true", help=RESUME_HELP)
    args = ap.parse_args()
    if args.tokens_per_param <= 0:
        sys.exit("lm_size_series: --tokens-per-param must be > 0")
    if not 0 <= args.warmup_fraction < 1:
        sys.exit("lm_size_series: --warmup-fraction must lie in [0, 1)")
    ensure_pydocs(Path(args.data))
    sizes: list[dict[str, Any]] = []
    for width in args.widths:  # the result is rewritten as each pair ends
        sizes.append(train_pair(width, args))
        result = {
            "result": "lm_size_series",
            "config": args.config,
            "data": args.data,
            "tokens_per_param": args.tokens_per_param,
            "batch": args.batch,
            "seq_len": args.seq_len,
            "threads_per_run": args.threads,
            "seed": args.seed,
            "complete": len(sizes) == len(args.widths),
            "sizes": sizes,
        }
        path = write_result(args.name, result)
        plot_results(result, RESULTS / f"{args.name}.png")
    for s in sizes:
        a, g = s["attractor"], s["gpt"]
        print(f"width {s['width']:4d}: attractor {a['params'] / 1e6:6.2f}M ppl {a['val_ppl']:8.2f}"
              f" | gpt x{s['gpt_layers']} {g['params'] / 1e6:6.2f}M ppl {g['val_ppl']:8.2f}"
              f" | ppl ratio {s['ppl_ratio']:.3f}, FLOPs ratio {s['flops_ratio']:.2f}")  # fmt: skip
    print(f"wrote {path} and its .png")


if __name__ == "__main__":
    main()
