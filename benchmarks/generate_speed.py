"""Cached-head decoding against full recomputation (issue: language model, fast inference).

`attractor-cpu` with random weights from a fixed seed, float32, CPU. A prompt of
``512 - new`` tokens is extended by ``new`` greedy tokens, so the last tokens see 512
tokens of context. Both paths run alternately, ``--repeats`` times each; the figure is the
ratio of median tokens/s, and the two outputs are checked to be the same tokens.

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

from attractor.presets import build_model  # noqa: E402


def timed_generate(model, prompt, new, use_cache):
    t = time.perf_counter()
    out = model.generate(prompt, max_new_tokens=new, use_cache=use_cache)
    return out, new * prompt.shape[0] / (time.perf_counter() - t)


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
    speeds: dict[str, list[float]] = {"cached": [], "recompute": []}
    outputs = {}
    for i in range(args.repeats):
        order = ["cached", "recompute"] if i % 2 == 0 else ["recompute", "cached"]
        for name in order:
            outputs[name], tps = timed_generate(model, prompt, args.new, name == "cached")
            speeds[name].append(tps)
    same = bool(torch.equal(outputs["cached"], outputs["recompute"]))
    med = {name: statistics.median(v) for name, v in speeds.items()}
    ratio = med["cached"] / med["recompute"]
    path = write_result(
        "generate_speed",
        {
            "preset": args.preset,
            "context": args.context,
            "new_tokens": args.new,
            "batch": args.batch,
            "repeats": args.repeats,
            "tokens_per_s": speeds,
            "median_tokens_per_s": med,
            "speedup_cached_over_recompute": ratio,
            "identical_tokens": same,
        },
    )
    print(f"{args.preset}, {args.context} tokens of context, batch {args.batch}")
    for name, tps in med.items():
        print(f"  {name:<10} {tps:8.2f} tokens/s (median of {args.repeats})")
    print(f"  speed-up {ratio:.1f}x, identical greedy tokens: {same}")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
