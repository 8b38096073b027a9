"""Evaluation of language models: validation loss, perplexity, bits per byte, and the
solver-depth sweep over the inference knobs of DESIGN.md section 2.1 (a fixed T, tol).

    loss = -(1/N) sum_t log p(y_t | x_<=t)      (nats per target token)
    ppl  = exp(loss)
    bpb  = loss * N / (bytes * ln 2) = loss / (ln 2 * bytes_per_token)

`attractor eval CHECKPOINT` runs these on the pydoc validation split or on a prepared
shard directory; `--sweep` adds the depth sweep and writes JSON plus a plot.

A grid-puzzle checkpoint (`attractor.models.grid.GridModel`) is evaluated instead on the
test set of a split from `attractor data puzzles` (`attractor.puzzle_eval`): exact and cell
accuracy, the supervision step the halting head would stop at, solver iterations, and with
--depths / --sweep the same with every solve cut to T iterations (TRM: T cycles).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import math
import platform
import subprocess
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol

import torch
import torch.nn.functional as F
from torch import Tensor

from attractor import presets
from attractor.data import maze, sudoku
from attractor.data.puzzles import PuzzleDataset, load_split
from attractor.data.tokenizer import Tokenizer, load_tokenizer
from attractor.models.base import IGNORE_INDEX, LanguageModel
from attractor.models.grid import GridModel
from attractor.pretrained import CONFIG_NAME, load_pretrained
from attractor.puzzle_eval import evaluate_puzzles, puzzle_depth_sweep, supervision_steps
from attractor.solvers import SolverStats

LN2 = math.log(2.0)
TOLERANCES = (1e-2, 3e-3, 1e-3, 3e-4, 1e-4)


class WindowSource(Protocol):
    """Anything that serves (x, y) token windows: `Windows`, `ShardWindows`."""

    def __len__(self) -> int: ...

    def batch(self, indices: list[int]) -> tuple[Tensor, Tensor]: ...


# -----------------------------------------------------------------------------
# Checkpoints


def load_checkpoint(
    directory: str | Path, device: str | torch.device = "cpu"
) -> tuple[LanguageModel, Tokenizer]:
    """The model (in eval mode) and tokenizer of a checkpoint directory: what
    `save_pretrained` writes plus `tokenizer.json`. Bad directories raise ValueError."""
    model = load_pretrained(directory, map_location=device).eval()
    if not (Path(directory) / "tokenizer.json").is_file():
        raise ValueError(
            f"{directory} has no tokenizer.json; save the tokenizer next to the model "
            "with tokenizer.save(directory)"
        )
    tokenizer = load_tokenizer(directory)
    if tokenizer.vocab_size > model.config.vocab_size:
        raise ValueError(
            f"{directory}: the tokenizer has {tokenizer.vocab_size} tokens but the model only "
            f"{model.config.vocab_size}; the two do not belong together"
        )
    return model, tokenizer


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


# -----------------------------------------------------------------------------
# Loss, perplexity, bits per byte


def token_nll(logits: Tensor, labels: Tensor) -> Tensor:
    """-log softmax(logits)[label] per position, (B, T) float32; 0 where labels is -100."""
    nll = F.cross_entropy(
        logits.float().flatten(0, 1),
        labels.flatten(),
        ignore_index=IGNORE_INDEX,
        reduction="none",
    )
    return nll.view(labels.shape)


def _iteration_counts(stats: SolverStats, batch: int) -> Tensor:
    """Solver iterations per position, (B, T) (per sequence, (B, 1), for solvers that see
    whole sequences as one sample)."""
    per_sample = stats.sample_iters
    if per_sample is None:
        per_sample = torch.full((batch,), stats.iters)
    return per_sample.view(batch, -1).float()


def _forward(model: LanguageModel, x: Tensor, steps: int | None):
    return model(x) if steps is None else model(x, steps=steps)


@torch.no_grad()
def evaluate_lm(
    model: LanguageModel,
    windows: WindowSource,
    batch_size: int = 8,
    max_batches: int | None = None,
    steps: int | None = None,
    bytes_per_token: float | None = None,
    progress: bool = False,
    max_windows: int | None = None,
) -> dict[str, float | int]:
    """Mean next-token loss over windows[0 : min(batch_size * max_batches, max_windows)],
    its perplexity and, given bytes_per_token, bits per byte; for solver models also the
    mean iterations per position (`iters_mean`) and the mean over sequences of their
    deepest position (`iters_max_mean`). `steps` is the model's fixed depth T (None: its
    own default)."""
    n = len(windows)
    if n == 0 or batch_size < 1:
        raise ValueError(f"evaluate: need windows and batch_size >= 1, got {n} and {batch_size}")
    if max_windows is not None:
        if max_windows < 1:
            raise ValueError(f"evaluate: max_windows must be >= 1, got {max_windows}")
        n = min(n, max_windows)
    n_batches = math.ceil(n / batch_size)
    if max_batches is not None:
        n_batches = min(n_batches, max_batches)
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    nll_sum, tokens, sequences = 0.0, 0, 0
    iter_sum, iter_positions, iter_max_sum = 0.0, 0, 0.0
    batches = range(n_batches)
    if progress:
        from tqdm import tqdm

        batches = tqdm(batches, desc="eval", unit="batch", leave=False, disable=None)
    try:
        for b in batches:
            x, y = windows.batch(list(range(b * batch_size, min(n, (b + 1) * batch_size))))
            x, y = x.to(device), y.to(device)
            out = _forward(model, x, steps)
            nll_sum += float(token_nll(out.logits, y).sum(dtype=torch.float64))
            tokens += int((y != IGNORE_INDEX).sum())
            sequences += x.size(0)
            if out.solver is not None:
                counts = _iteration_counts(out.solver, x.size(0))  # (B, T) or (B, 1)
                iter_sum += float(counts.sum())
                iter_positions += counts.numel()
                iter_max_sum += float(counts.max(dim=1).values.sum())
    finally:
        model.train(was_training)
    loss = nll_sum / max(tokens, 1)
    result: dict[str, float | int] = {
        "loss": loss,
        "ppl": math.exp(loss) if loss < 700 else math.inf,
        "tokens": tokens,
        "windows": sequences,
    }
    if bytes_per_token:
        result["bpb"] = loss / (LN2 * bytes_per_token)
    if iter_positions:
        result["iters_mean"] = iter_sum / iter_positions
        result["iters_max_mean"] = iter_max_sum / sequences
    return result


# -----------------------------------------------------------------------------
# Depth sweep


def max_depth(model: LanguageModel) -> int:
    """T_max: the eval solver's max_iter (attractor, deq, reasoner, grid_attractor), the
    looped model's eval_depth or TRM's cycles H."""
    config = model.config
    if model.kind == "looped":
        return config.eval_depth
    if model.kind == "trm":
        return config.cycles
    solver = getattr(config, "eval_solver", None)
    if solver is None:
        raise ValueError(
            f"depth sweep: a {model.kind} model has no solver depth to sweep; "
            "use an attractor, looped, deq, reasoner, trm or grid_attractor checkpoint"
        )
    return solver.max_iter


def sweep_depths(t_max: int) -> list[int]:
    """0, 1, 2, 4, 8, ... below t_max, then t_max."""
    depths, t = [0], 1
    while t < t_max:
        depths.append(t)
        t *= 2
    return depths + [t_max] if t_max > 0 else depths


@contextmanager
def eval_tolerance(model: LanguageModel, tol: float) -> Iterator[None]:
    """The model's eval solver with tol replaced, restored on exit."""
    base = model.config.eval_solver
    model.config.eval_solver = dataclasses.replace(base, tol=tol)
    try:
        yield
    finally:
        model.config.eval_solver = base


def depth_sweep(
    model: LanguageModel,
    windows: WindowSource,
    depths: Sequence[int] | None = None,
    tolerances: Sequence[float] = TOLERANCES,
    batch_size: int = 8,
    max_batches: int | None = None,
    bytes_per_token: float | None = None,
    progress: bool = False,
    max_windows: int | None = None,
) -> dict[str, Any]:
    """Quality at fixed depths T (default 0, 1, 2, 4, ... T_max) and, for models with an eval
    solver, at each tolerance with the iterations the solver actually used there."""
    t_max = max_depth(model)
    depths = sweep_depths(t_max) if depths is None else sorted(set(depths))
    kwargs = dict(batch_size=batch_size, max_batches=max_batches, progress=progress)
    kwargs.update(bytes_per_token=bytes_per_token, max_windows=max_windows)
    rows = [{"T": t, **evaluate_lm(model, windows, steps=t, **kwargs)} for t in depths]
    tol_rows = []
    if getattr(model.config, "eval_solver", None) is not None:
        for tol in tolerances:
            with eval_tolerance(model, tol):
                tol_rows.append({"tol": tol, **evaluate_lm(model, windows, **kwargs)})
    return {
        "result": "depth_sweep",
        "kind": model.kind,
        "T_max": t_max,
        "depth": rows,
        "tolerance": tol_rows,
    }


# -----------------------------------------------------------------------------
# Results on disk


def _git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=Path(__file__).parent,
            capture_output=True,
            text=True,
            timeout=5,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def provenance() -> dict[str, Any]:
    """The command, commit, machine and date that go with every written result."""
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else platform.processor()
    return {
        "command": " ".join(["attractor", *sys.argv[1:]]),
        "commit": _git_commit(),
        "machine": f"{platform.node()} {platform.machine()} {device}".strip(),
        "torch": torch.__version__,
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
    }


def model_summary(model: LanguageModel, checkpoint: str | Path) -> dict[str, Any]:
    from attractor.cli import _describe

    return {
        "checkpoint": str(checkpoint),
        "kind": model.kind,
        "layout": _describe(model.kind, model.config),
        "params": model.num_params(),
        "config": model.config_dict(),
    }


def write_json(path: str | Path, result: dict[str, Any]) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    return path


# -----------------------------------------------------------------------------
# Command line


def load_eval_data(
    data: str, split: str, seq_len: int, tokenizer: Tokenizer
) -> tuple[WindowSource, float | None]:
    """Windows and bytes per token of `data`: "pydoc" (the stdlib help topics, split by
    document as the trainer splits them) or a directory from `attractor data text`."""
    if data == "pydoc":
        from attractor.data.lm import Windows, pydoc_documents, split_documents, token_stream

        train, val = split_documents(pydoc_documents(), 0.1, 0)
        if split not in ("train", "val"):
            raise ValueError(f"--split: pydoc has the splits train and val, not {split!r}")
        docs = val if split == "val" else train
        tokens = token_stream(docs, tokenizer)
        n_bytes = sum(len(d.encode("utf-8")) for d in docs)
        return Windows(tokens, seq_len), n_bytes / tokens.numel()
    if not Path(data).is_dir():
        raise ValueError(
            f"--data: {data} is not a directory; pass 'pydoc' or a directory prepared by "
            "`attractor data text`"
        )
    from attractor.data.text import ShardWindows

    windows = ShardWindows(data, split, seq_len=seq_len)
    if windows.tokenizer.vocab_size != tokenizer.vocab_size:
        raise ValueError(
            f"--data: {data} was tokenized with {windows.tokenizer.vocab_size} tokens, the "
            f"checkpoint's tokenizer has {tokenizer.vocab_size}; evaluate on data prepared "
            "with the checkpoint's tokenizer"
        )
    return windows, windows.bytes_per_token


# -----------------------------------------------------------------------------
# Grid puzzles


def is_grid_checkpoint(directory: str | Path) -> bool:
    """Whether the checkpoint's config.json names a grid-puzzle model kind (False when it
    cannot be read: the language-model path then says what is wrong with it)."""
    try:
        data = json.loads((Path(directory) / CONFIG_NAME).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return False
    kind = data.get("kind") if isinstance(data, dict) else None
    entry = presets.KINDS.get(kind) if isinstance(kind, str) else None
    return entry is not None and issubclass(entry[0], GridModel)


def check_grid_fits(model: LanguageModel, kind: str, side: int, what: str) -> None:
    """ValueError unless `model` is a grid model built for `side` x `side` puzzles of `kind`
    ("sudoku" or "maze"); `what` names the puzzles: "the puzzle", "the split DIR"."""
    if not isinstance(model, GridModel):
        raise ValueError(
            f"{what} needs a grid-puzzle model, not a {model.kind} model; pass a checkpoint "
            "trained on a puzzle split (reasoner, trm, grid_transformer, grid_attractor)"
        )
    c = model.config
    built = "sudoku" if c.box_rows else "maze"
    if (built, c.side) != (kind, side):
        raise ValueError(
            f"{what} is {side}x{side} {kind} but the {model.kind} model was built for "
            f"{c.side}x{c.side} {built}; use a model trained on {side}x{side} {kind} puzzles"
        )
    needed = side + 2 if kind == "sudoku" else len(maze.CHARSET) + 1
    if c.vocab_size < needed:
        raise ValueError(
            f"{what} is {side}x{side} {kind}, which needs {needed} tokens, but the model has "
            f"{c.vocab_size}; use a model trained on {side}x{side} {kind} puzzles"
        )


def puzzle_side(data: PuzzleDataset) -> int:
    """The side N of the dataset's N x N grids."""
    cells = data.examples[0].question.size
    return int(data.examples[0].size) if data.kind == "maze" else sudoku.shape_for_length(cells).n


def load_puzzle_data(data: str, split: str) -> tuple[PuzzleDataset, dict[str, Any]]:
    """The un-augmented test (or train) set of a split from `attractor data puzzles`, and
    its record; --split val (the default) means the split's test set."""
    if not Path(data).is_dir():
        what = "the default pydoc" if data == "pydoc" else f"{data}, not a directory"
        raise ValueError(
            f"--data: a grid model is evaluated on a puzzle split, not {what}; make one "
            "with `attractor data puzzles --out DIR` and pass --data DIR"
        )
    if split not in ("val", "test", "train"):
        raise ValueError(f"--split: a puzzle split has test (or val) and train, not {split!r}")
    train, test, record = load_split(data)
    examples = train if split == "train" else test
    if not examples:
        raise ValueError(f"--data: the {split} set of {data} is empty; rebuild the split")
    return PuzzleDataset(examples, record["kind"], augment=False), record


def _format_puzzles(row: dict[str, Any], halt: bool = True) -> str:
    parts = [f"exact {100 * row['exact_acc']:.2f}%", f"cells {100 * row['cell_acc']:.2f}%"]
    if halt:
        parts.append(
            f"halt step {row['halt_step']:.2f} (exact there {100 * row['halt_exact_acc']:.2f}%)"
        )
    if "solver_iters" in row:
        parts.append(f"solver iters {row['solver_iters']:.2f}/step")
    return ", ".join(parts)


def _run_puzzle_eval(args: argparse.Namespace) -> dict[str, Any]:
    """`attractor eval` of a grid model: accuracy on a puzzle split at the model's own depth
    ("full"), at --steps ("default"), and with every solve cut to each T ("depth" rows):
    the "puzzle_depth" result of `attractor.puzzle_eval.puzzle_depth_sweep`."""
    model = load_pretrained(args.checkpoint, map_location=args.device).eval()
    data, record = load_puzzle_data(args.data, args.split)
    side = puzzle_side(data)
    check_grid_fits(model, data.kind, side, f"the split {args.data}")
    batch_size = 100 if args.batch_size is None else args.batch_size
    if batch_size < 1:
        raise ValueError(f"--batch-size must be at least 1, got {batch_size}")
    t_max = max_depth(model) if args.sweep or args.depths else None  # fails before any work
    depths = [] if t_max is None else sorted(set(args.depths or sweep_depths(t_max)))
    limit = None if args.batches is None else args.batches * batch_size
    result = puzzle_depth_sweep(model, data, depths, batch_size, limit)
    default = result["full"]
    if args.steps is not None:
        default = evaluate_puzzles(model, data, batch_size, args.steps, limit)
    split = "train" if args.split == "train" else "test"
    n_sup = supervision_steps(model)
    at = "" if args.steps is None else f", T={args.steps}"
    print(
        f"{args.data} {split} ({default['puzzles']} {side}x{side} {data.kind}, {n_sup} "
        f"supervision steps{at}): {_format_puzzles(default)}"
    )
    for row in result["depth"]:
        print(f"T={row['T']:<4d} {_format_puzzles(row, halt=False)}")
    info = {"source": args.data, "split": split, "kind": data.kind, "side": side}
    info.update(seed=record.get("seed"), generator=record.get("generator"))
    return {
        **result,
        "default": default,
        "steps": args.steps,
        "T_max": t_max,
        "n_sup": n_sup,
        "data": info,
        "model": model_summary(model, args.checkpoint),
        **provenance(),
    }


# -----------------------------------------------------------------------------
# Language models on the command line


def _format(row: dict[str, Any]) -> str:
    parts = [f"loss {row['loss']:.4f}", f"ppl {row['ppl']:.3f}"]
    if "bpb" in row:
        parts.append(f"bpb {row['bpb']:.4f}")
    if "iters_mean" in row:
        parts.append(f"iters {row['iters_mean']:.2f} (max/seq {row['iters_max_mean']:.2f})")
    return ", ".join(parts)


def _run_eval(args: argparse.Namespace) -> dict[str, Any]:
    model, tokenizer = load_checkpoint(args.checkpoint, args.device)
    if args.sweep:
        max_depth(model)  # a model without depth fails here, before any work
    seq_len = args.seq_len or model.config.max_seq_len
    windows, bytes_per_token = load_eval_data(args.data, args.split, seq_len, tokenizer)
    batch_size = 8 if args.batch_size is None else args.batch_size
    kwargs = dict(batch_size=batch_size, max_batches=args.batches, progress=True)
    kwargs["bytes_per_token"] = bytes_per_token
    default = evaluate_lm(model, windows, steps=args.steps, **kwargs)
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
        "steps": args.steps,
        "data": data,
        "model": model_summary(model, args.checkpoint),
        **provenance(),
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


def cli_eval(args: argparse.Namespace) -> int:
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
    out = args.out or (Path(args.checkpoint) / name if sweep else None)
    if out is not None:
        path = write_json(out, result)
        print(f"wrote {path}")
        if sweep:
            from attractor.plots import plot_results

            print(f"wrote {plot_results(result, path.with_suffix('.png'))}")
    return 0


def _depth_list(text: str) -> list[int]:
    try:
        depths = [int(t) for t in text.split(",")]
    except ValueError:
        depths = [-1]
    if min(depths) < 0:
        raise argparse.ArgumentTypeError(f"expected depths like 0,1,2,4, got {text!r}")
    return depths


def add_eval_parser(sub: Any) -> None:
    p = sub.add_parser("eval", help="loss, perplexity, bits per byte; puzzle accuracy; depth sweep")
    p.add_argument(
        "checkpoint",
        nargs="?",
        help="a directory with config.json, model.safetensors and (language models) tokenizer.json",
    )
    p.add_argument("--model", metavar="DIR", help="the checkpoint directory (same as CHECKPOINT)")
    p.add_argument(
        "--data",
        default="pydoc",
        help="'pydoc' or a prepared data directory; for a grid model a puzzle split directory",
    )
    p.add_argument(
        "--split", default="val", help="which split to evaluate (default val; puzzles: test)"
    )
    p.add_argument("--seq-len", type=int, help="window length (default: the model's)")
    p.add_argument("--batch-size", type=int, help="windows (default 8) or puzzles (100) a batch")
    p.add_argument("--batches", type=int, help="evaluate only the first N batches")
    p.add_argument("--steps", type=int, help="a fixed depth T for the plain evaluation")
    p.add_argument("--sweep", action="store_true", help="quality against T (and tol)")
    p.add_argument(
        "--depths",
        type=_depth_list,
        help="comma-separated T values (default 0,1,2,4,...,T_max); puzzles: implies --sweep",
    )
    p.add_argument(
        "--out",
        help="results JSON (with --sweep: CHECKPOINT/depth_sweep.json, or puzzle_depth.json)",
    )
    p.add_argument("--device", default=default_device())
    p.set_defaults(run=cli_eval)
