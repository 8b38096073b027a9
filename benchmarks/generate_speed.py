"""Cached-head decoding against full recomputation (issue: language model, fast inference).

`attractor-cpu` with random weights from a fixed seed, float32, CPU. A prompt of
``512 - new`` tokens is extended by ``new`` greedy tokens, so the last tokens see 512
tokens of context. Both paths run alternately, ``--repeats`` times each; the figure is the
ratio of median tokens/s, end to end and for decoding alone (the prompt pass timed
separately and subtracted), and the two outputs are checked to be the same tokens.

    python benchmarks/generate_speed.py
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

from attractor.models import build_model  # noqa: E402


def timed_generate(model, prompt, new, use_cache):
    """(output, seconds) of one greedy generation."""
    t = time.perf_counter()
    out = model.generate(prompt, max_new_tokens=new, use_cache=use_cache)
    return out, time.perf_counter() - t


def measure(model, prompt, new, use_cache) -> dict:
    """End-to-end tokens/s, and decode-only tokens/s (the prompt pass subtracted)."""
    _, prompt_s = timed_generate(model, prompt, 0, use_cache)
    out, total_s = timed_generate(model, prompt, new, use_cache)
    n = new * prompt.shape[0]
    return {
        "output": out,
        "end_to_end_tokens_per_s": n / total_s,
        "decode_tokens_per_s": n / max(total_s - prompt_s, 1e-9),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="attractor-cpu")
    ap.add_argument("--context", type=int, default=512)
    ap.add_argument("--new", type=int, default=32)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    torch.manual_seed(0)
    model = build_model(args.preset).eval()
    gen = torch.Generator().manual_seed(1)
    prompt = torch.randint(
        0, model.config.vocab_size, (args.batch, args.context - args.new), generator=gen
    )
    runs: dict[str, list[dict]] = {"cached": [], "recompute": []}
    for i in range(args.repeats):
        order = ["cached", "recompute"] if i % 2 == 0 else ["recompute", "cached"]
        for name in order:
            runs[name].append(measure(model, prompt, args.new, name == "cached"))
    same = all(
        torch.equal(a["output"], b["output"])
        for a, b in zip(runs["cached"], runs["recompute"], strict=True)
    )
    metrics = ("end_to_end_tokens_per_s", "decode_tokens_per_s")
    med = {
        name: {m: statistics.median(r[m] for r in rs) for m in metrics} for name, rs in runs.items()
    }
    speedup = {m: med["cached"][m] / med["recompute"][m] for m in metrics}
    path = write_result(
        "generate_speed",
        {
            "preset": args.preset,
            "context": args.context,
            "new_tokens": args.new,
            "batch": args.batch,
            "repeats": args.repeats,
            "median": med,
            "speedup_cached_over_recompute": speedup,
            "identical_tokens": same,
            "runs": {n: [{m: r[m] for m in metrics} for r in rs] for n, rs in runs.items()},
        },
    )
    print(
        f"{args.preset}, {args.context} tokens of context, batch {args.batch}, "
        f"median of {args.repeats}"
    )
    print(f"  {'':<10} {'end-to-end tok/s':>17} {'decode tok/s':>13}")
    for name, m in med.items():
        print(f"  {name:<10} {m[metrics[0]]:>17.2f} {m[metrics[1]]:>13.2f}")
    print(f"  speed-up   {speedup[metrics[0]]:>16.1f}x {speedup[metrics[1]]:>12.1f}x")
    print(f"  identical greedy tokens: {same}")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
