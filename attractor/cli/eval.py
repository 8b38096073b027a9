"""`attractor eval CHECKPOINT`: a language model's loss, perplexity and bits per byte on
the pydoc validation split or a prepared shard directory (`--sweep`: against the depth T
and the tolerance, as JSON and a PNG); a grid model's exact and cell accuracy on a puzzle
split (`--depths` / `--sweep`: against T). Bad input is one line on stderr, exit code 2.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from attractor.eval.depth_sweep import depth_sweep, sweep_depths
from attractor.eval.lm_metrics import evaluate_lm
from attractor.eval.loading import (
    check_text_fits,
    default_device,
    is_grid_checkpoint,
    lm_tokenizer,
    load_grid_model_and_puzzles,
    load_lm,
    load_text,
    synthetic_text,
    training_record,
)
from attractor.eval.puzzle_metrics import evaluate_puzzles, puzzle_depth_sweep
from attractor.eval.results import model_summary, write_result
from attractor.models.grid_metrics import supervision_steps


def _format_puzzles(row: dict[str, Any], halt: bool = True) -> str:
    parts = [
        f"exact {100 * row['exact_acc']:.2f}%",
        f"cells {100 * row['cell_acc']:.2f}% of the blanks",
        f"{100 * row['cell_acc_all']:.2f}% of all cells",
    ]
    if halt:
        parts.append(
            f"halt step {row['halt_step']:.2f} (exact there {100 * row['halt_exact_acc']:.2f}%)"
        )
    if "solver_iters" in row:
        parts.append(f"solver iters {row['solver_iters']:.2f}/step")
    return ", ".join(parts)


def weights_label(record: dict[str, Any]) -> str:
    """Which weights an exported model holds, from its training.json: "EMA weights (decay
    d)", "raw weights" (trained without EMA), or "weights as saved" (no record)."""
    if "ema_decay" not in record:
        return "weights as saved"
    decay = record["ema_decay"]
    return f"EMA weights (decay {decay:g})" if decay else "raw weights"


def _run_puzzle_eval(args: argparse.Namespace) -> dict[str, Any]:
    """`attractor eval` of a grid model: accuracy on a puzzle split at the model's own depth
    ("full"), at --depth ("default"), and with every solve cut to each T ("depth" rows):
    the "puzzle_depth" result of `attractor.eval.puzzle_metrics.puzzle_depth_sweep`."""
    model, data, record = load_grid_model_and_puzzles(
        args.checkpoint, args.data, args.split, args.device or default_device()
    )
    side = data.side
    batch_size = 100 if args.batch_size is None else args.batch_size
    if batch_size < 1:
        raise ValueError(f"--batch-size must be at least 1, got {batch_size}")
    t_max = model.max_depth() if args.sweep or args.depths else None  # fails before any work
    depths = [] if t_max is None else sorted(set(args.depths or sweep_depths(t_max)))
    limit = None if args.batches is None else args.batches * batch_size
    result = puzzle_depth_sweep(model, data, depths, batch_size, limit)
    default = result["full"]
    if args.depth is not None:
        default = evaluate_puzzles(model, data, batch_size, args.depth, limit)
    split = "train" if args.split == "train" else "test"
    n_sup = supervision_steps(model)
    at = "" if args.depth is None else f", T={args.depth}"
    weights = weights_label(training_record(args.checkpoint))
    print(
        f"{args.data} {split} ({default['puzzles']} {side}x{side} {data.kind}, {n_sup} "
        f"supervision steps{at}, eval mode, {weights}): {_format_puzzles(default)}"
    )
    for row in result["depth"]:
        print(f"T={row['T']:<4d} {_format_puzzles(row, halt=False)}")
    info = {"source": args.data, "split": split, "kind": data.kind, "side": side}
    info.update(seed=record.get("seed"), generator=record.get("generator"))
    return {
        **result,
        "default": default,
        "fixed_depth": args.depth,
        "T_max": t_max,
        "n_sup": n_sup,
        "weights": weights,
        "data": info,
        "model": model_summary(model, args.checkpoint),
    }


def _format(row: dict[str, Any]) -> str:
    parts = [f"loss {row['loss']:.4f}", f"ppl {row['ppl']:.3f}"]
    if "bpb" in row:
        parts.append(f"bpb {row['bpb']:.4f}")
    if "iters_mean" in row:
        parts.append(f"iters {row['iters_mean']:.2f} (max/seq {row['iters_max_mean']:.2f})")
    return ", ".join(parts)


def _run_eval(args: argparse.Namespace) -> dict[str, Any]:
    model = load_lm(args.checkpoint, args.device or default_device())
    if args.sweep:
        model.max_depth()  # a model without depth fails here, before any work
    seq_len = args.seq_len or model.config.max_seq_len
    batch_size = 8 if args.batch_size is None else args.batch_size
    if args.data == "synthetic":  # token ids below the vocabulary: no tokenizer needed
        split = synthetic_text(model, seq_len, batch_size)
    else:
        check_text_fits(args.data, model)
        tokenizer = lm_tokenizer(args.checkpoint, model, args.tokenizer)
        split = load_text(args.data, seq_len, tokenizer, training_record(args.checkpoint))
    windows, bytes_per_token = split.windows(args.split), split.bytes_per_token[args.split]
    kwargs = dict(batch_size=batch_size, max_batches=args.batches, progress=True)
    kwargs["bytes_per_token"] = bytes_per_token
    default = evaluate_lm(model, windows, depth=args.depth, **kwargs)
    print(f"{args.data} {args.split}: {_format(default)} ({default['tokens']} tokens)")
    result: dict[str, Any] = {"result": "eval", "kind": model.kind}
    if args.sweep:
        result = depth_sweep(model, windows, args.depths, **kwargs)
        for row in result["depth"]:
            print(f"T={row['T']:<4d} {_format(row)}")
        for row in result["tolerance"]:
            print(f"tol={row['tol']:<8g} {_format(row)}")
    data = {
        "source": args.data,
        "split": args.split,
        "seq_len": seq_len,
        "bytes_per_token": bytes_per_token,
    }
    return {
        **result,
        "default": default,
        "fixed_depth": args.depth,
        "data": data,
        "model": model_summary(model, args.checkpoint),
    }


def _checkpoint_dir(args: argparse.Namespace) -> str:
    """CHECKPOINT or --model DIR (the same thing; one of them, once)."""
    if args.model and args.checkpoint and Path(args.model) != Path(args.checkpoint):
        raise ValueError(
            f"two checkpoints given ({args.checkpoint} and --model {args.model}); give one"
        )
    directory = args.model or args.checkpoint
    if not directory:
        raise ValueError("no checkpoint: give attractor eval CHECKPOINT or --model DIR")
    return directory


def _results_dir(checkpoint: str) -> Path:
    """Where a sweep's results go by default: the checkpoint's directory (a hub id's is the
    read-only cache: the working directory then)."""
    return Path(".") if checkpoint.startswith("hf:") else Path(checkpoint)


def run(args: argparse.Namespace) -> int:
    """`attractor eval`: print loss, ppl and bpb; with --sweep write JSON and a PNG. A grid
    model: exact and cell accuracy on a puzzle split; with --depths or --sweep against T,
    written as JSON and a PNG (CHECKPOINT/puzzle_depth.json unless --out)."""
    grid = False
    try:
        args.checkpoint = _checkpoint_dir(args)
        grid = is_grid_checkpoint(args.checkpoint)
        result = _run_puzzle_eval(args) if grid else _run_eval(args)
    except (ValueError, OSError) as err:
        print(f"attractor eval: {err}", file=sys.stderr)
        return 2
    sweep = args.sweep or bool(grid and args.depths)
    name = "puzzle_depth.json" if grid else "depth_sweep.json"
    out = args.out or (_results_dir(args.checkpoint) / name if sweep else None)
    if out is not None:
        path = write_result(out, result)
        print(f"wrote {path}")
        if sweep:
            from attractor.eval.plots import plot_results

            print(f"wrote {plot_results(result, path.with_suffix('.png'))}")
    return 0
