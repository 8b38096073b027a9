"""The logits' memory: one training step with materialised logits against the chunked loss.

One training step (forward and backward of the next-token loss, float32, CPU) of
attractor-140m and gpt-140m (and looped-140m, for the GPU check's micro-batch) at seq 2048,
micro-batch 2 (32768-token vocabulary), random
weights from a fixed seed, each in a fresh child process after a warm-up step on 1 x 16
tokens (so the gradient buffers exist and the high-water mark stays at the resting level).
"before" decodes the logits and takes `F.cross_entropy` (``return_logits=True``), "after"
is the trainer's path, `linear_cross_entropy` over chunks (``return_logits=False``).

- saved bytes: what autograd saves in the forward (`attractor.train.memory.SavedTensors`,
  parameters excluded), counted apart for the model's body (everything up to the final
  state h) and for the output (final norm, decode, loss): the logits' share.
- peak: ru_maxrss after each phase minus ru_maxrss before the step: after the body's
  forward, after the output, after the backward (the step's peak). The logits' share of
  the peak is what the chunked loss removes: peak(before) - peak(after).

The largest micro-batch on one 141 GB GPU, worked out from these figures (the formula is
also in the JSON):

    B_max = floor((0.9 * 141e9 - 18 P) / m_seq),   m_seq = peak_step / B

P parameters: 4 bytes of float32 weights, 4 of gradients, 8 of optimizer state (AdamW's
two moments; Muon keeps one, so this is an upper bound) and 2 of the bf16 weight copies
autocast caches: 18 P, resident across steps. m_seq is the step's working set above them
per sequence of 2048 tokens, measured here in float32 (bf16 autocast saves many activations
in 2 bytes, so on the GPU it is at most this); the 0.9 leaves 10 % to the allocator's
fragmentation and the CUDA context.

    python benchmarks/logits_memory.py                    # the README table
    python benchmarks/logits_memory.py --models looped-140m --name logits_memory_looped
    python benchmarks/logits_memory.py --batch 1          # if micro-batch 2 does not fit
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import write_result  # noqa: E402

from attractor.models import LanguageModel, build_model  # noqa: E402
from attractor.train.memory import SavedTensors, peak_rss_bytes  # noqa: E402

GB = 1e9
MIB = 2**20
GPU_BYTES = 141e9
USABLE = 0.9  # of the GPU's memory: the rest for fragmentation and the CUDA context
STATIC_BYTES_PER_PARAM = 18  # weights 4 + gradients 4 + optimizer 8 + bf16 weight copies 2
MODELS = ("attractor-140m", "gpt-140m", "looped-140m")
VARIANTS = {"before": True, "after": False}  # variant -> return_logits


def body(model: LanguageModel, ids: torch.Tensor) -> torch.Tensor:
    """The final state h (B, T, C) before the output layer: the solved y* for the attractor,
    the last block's residual stream for the GPT, the coda's after T = mean_depth
    recurrences (gradients through the last backprop_depth) for the looped model."""
    if model.kind == "attractor":
        return model.equilibrium(model.proposal(ids))[0]
    if model.kind == "looped":
        depth = round(model.config.mean_depth)
        return model.hidden(ids, depth, max(0, depth - model.config.backprop_depth))
    return model.hidden(ids)


def step(model: LanguageModel, ids: torch.Tensor, return_logits: bool) -> dict:
    """One forward and backward; saved bytes per part and the peak after each phase."""
    x, labels = ids[:, :-1], ids[:, 1:]
    start_peak = peak_rss_bytes()
    start = time.perf_counter()
    params = list(model.parameters())
    with SavedTensors(exclude=params) as saved_body:
        h = body(model, x)
    peak_body = peak_rss_bytes()
    with SavedTensors(exclude=params) as saved_output:
        _, loss = model.output(h, labels, return_logits)
    peak_output = peak_rss_bytes()
    loss.backward()
    peak_backward = peak_rss_bytes()
    return {
        "loss": float(loss.detach()),
        "step_s": time.perf_counter() - start,
        "saved_body_bytes": saved_body.bytes,
        "saved_logits_bytes": saved_output.bytes,
        "peak_after_body_bytes": peak_body - start_peak,
        "peak_after_output_bytes": peak_output - start_peak,
        "peak_step_bytes": peak_backward - start_peak,
    }


def measure_one(preset: str, variant: str, batch: int, seq_len: int) -> dict:
    """Build, warm up on 1 x 16 tokens, then measure one step (in a fresh process)."""
    torch.manual_seed(0)
    model = build_model(preset).train()
    vocab = model.config.vocab_size
    ids = torch.randint(vocab, (batch, seq_len + 1), generator=torch.Generator().manual_seed(0))
    step(model, ids[:1, :17], VARIANTS[variant])
    return {"params": model.num_params(), **step(model, ids, VARIANTS[variant])}


def run_child(preset: str, variant: str, args: argparse.Namespace) -> dict:
    """measure_one in a fresh interpreter, so that its peak memory is its own."""
    cmd = [sys.executable, __file__, "--one", f"{preset}:{variant}", "--batch", str(args.batch),
           "--seq-len", str(args.seq_len)]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"logits_memory: {' '.join(cmd)} failed:\n{proc.stderr.strip()}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def largest_batch(params: int, peak_step: float, batch: int) -> int:
    """B_max = floor((USABLE * GPU_BYTES - 18 P) / (peak_step / batch))."""
    return math.floor((USABLE * GPU_BYTES - STATIC_BYTES_PER_PARAM * params) / (peak_step / batch))


def parse_one(spec: str) -> tuple[str, str]:
    """'PRESET:VARIANT' -> (PRESET, VARIANT), with a clear error for anything else."""
    preset, _, variant = spec.rpartition(":")
    if preset not in MODELS or variant not in VARIANTS:
        raise argparse.ArgumentTypeError(
            f"expected PRESET:VARIANT with PRESET in {', '.join(MODELS)} and VARIANT in "
            f"{', '.join(VARIANTS)}, got {spec!r}"
        )
    return preset, variant


def print_table(rows: dict[str, dict[str, dict]]) -> None:
    """One line per model and variant: saved GB (logits / rest), peak GB, B_max."""
    print(f"{'model':<16} {'variant':<7} {'saved logits':>12} {'saved rest':>10} "
          f"{'peak':>7} {'B_max':>6}")  # fmt: skip
    for preset, variants in rows.items():
        for variant, r in variants.items():
            print(
                f"{preset:<16} {variant:<7} {r['saved_logits_bytes'] / GB:>10.2f}GB "
                f"{r['saved_body_bytes'] / GB:>8.2f}GB {r['peak_step_bytes'] / GB:>5.2f}GB "
                f"{r['largest_micro_batch']:>6}"
            )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--seq-len", type=int, default=2048)
    ap.add_argument("--models", default="attractor-140m,gpt-140m", help=f"of {MODELS}")
    ap.add_argument("--name", default="logits_memory")
    ap.add_argument("--one", type=parse_one, help="measure PRESET:VARIANT here, print JSON")
    args = ap.parse_args()
    if args.one:
        print(json.dumps(measure_one(*args.one, args.batch, args.seq_len)))
        return
    rows: dict[str, dict[str, dict]] = {}
    for preset in args.models.split(","):
        rows[preset] = {}
        for variant in VARIANTS:
            r = run_child(preset, variant, args)
            r["largest_micro_batch"] = largest_batch(r["params"], r["peak_step_bytes"], args.batch)
            rows[preset][variant] = r
            print(f"{preset} {variant}: {r['step_s']:.0f} s", file=sys.stderr, flush=True)
        before, after = rows[preset]["before"], rows[preset]["after"]
        rows[preset]["peak_logits_share_bytes"] = (
            before["peak_step_bytes"] - after["peak_step_bytes"]
        )
    result = {
        "result": "logits_memory",
        "batch": args.batch,
        "seq_len": args.seq_len,
        "threads": torch.get_num_threads(),
        "dtype": "float32 (CPU)",
        "formula": "B_max = floor((0.9 * 141e9 - 18 P) / (peak_step_bytes / batch)); 18 bytes "
        "a parameter: float32 weights 4 + gradients 4 + optimizer state 8 (AdamW's two "
        "moments, an upper bound for Muon) + bf16 weight copies 2; peak_step_bytes: the "
        "step's ru_maxrss increase above model, gradients and batch, measured in float32",
        "saved": "SavedTensors in the forward, parameters excluded: saved_body_bytes up to "
        "the final state h, saved_logits_bytes the output layer and loss",
        "peak": "ru_maxrss after each phase minus ru_maxrss before the step, in a fresh "
        "process after a warm-up step on 1 x 16 tokens",
        "models": rows,
    }
    print_table({p: {v: rows[p][v] for v in VARIANTS} for p in rows})
    print(f"wrote {write_result(args.name, result)}")


if __name__ == "__main__":
    main()
