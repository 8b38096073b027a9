"""The `attractor` program's arguments: every subcommand and option, in one place.

This module imports only the standard library, so that `attractor --help` answers at
once. Each subcommand names its handler as "module:function"; `attractor.cli.main` imports
the module only when that subcommand runs.
"""

from __future__ import annotations

import argparse


def _handler(p: argparse.ArgumentParser, target: str) -> None:
    p.set_defaults(handler=f"attractor.cli.{target}")


def _depth_list(text: str) -> list[int]:
    try:
        depths = [int(t) for t in text.split(",")]
    except ValueError:
        depths = [-1]
    if min(depths) < 0:
        raise argparse.ArgumentTypeError(f"expected depths like 0,1,2,4, got {text!r}")
    return depths


def _demo(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo", help="learn 6x6 Sudoku on CPU (default), or `demo solver`: Picard vs Anderson"
    )
    p.add_argument("which", nargs="?", choices=("sudoku", "solver"), default="sudoku")
    p.add_argument("--minutes", type=float, default=10.0, help="training budget (default 10)")
    p.add_argument("--data", default="data/sudoku6", help="where the puzzle split goes")
    p.add_argument("--out", default="runs/demo-sudoku6", help="run directory")
    _handler(p, "demo:run")


def _train(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train a model from a YAML config (torchrun for many GPUs)")
    p.add_argument(
        "config",
        nargs="?",
        help="a YAML file, or the name of a packaged config (attractor train sudoku6-cpu); "
        "defaults if omitted",
    )
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config key, e.g. --set train.steps=200 (repeatable)",
    )
    _handler(p, "train:run")


def _data(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("data", help="prepare datasets: text corpora or puzzle splits")
    kinds = p.add_subparsers(dest="data_command", metavar="KIND", required=True)
    t = kinds.add_parser(
        "text",
        help="train a BPE tokenizer and tokenize a corpus into .bin shards",
        description="Train a tokenizer on a text corpus and write train/val token shards "
        "(uint16/uint32 .bin files, tokenizer.json and meta.json) to --out.",
    )
    t.add_argument(
        "--source",
        required=True,
        help="a .txt/.jsonl/.parquet file or a directory of them, pydoc, python-docs, "
        "or hf:NAME[:CONFIG] (Hugging Face datasets, streaming)",
    )
    t.add_argument("--out", required=True, help="the directory to write")
    t.add_argument("--vocab-size", type=int, help="BPE vocabulary (default 32768)")
    t.add_argument(
        "--tokenizer", default="bpe", help="bpe (train one), bytes, or a directory to reuse"
    )
    t.add_argument("--column", default="text", help="the text column of .jsonl/.parquet/hf")
    t.add_argument("--split", default="train", help="the split of an hf: dataset")
    t.add_argument("--data-files", nargs="+", help="local files for hf:parquet, hf:json, ...")
    t.add_argument("--val-fraction", type=float, default=0.01)
    t.add_argument("--seed", type=int, default=0, help="seed of the train/val split")
    t.add_argument(
        "--workers", type=int, default=None, help="processes (default: 1 under 64 MB, else all)"
    )
    t.add_argument("--shard-tokens", type=int, default=100_000_000)
    t.add_argument(
        "--tokenizer-chars",
        type=int,
        default=2_000_000_000,
        help="train the BPE on the first this many characters of the training documents",
    )
    t.add_argument("--overwrite", action="store_true", help="replace a prepared --out")
    t.add_argument("--no-progress", action="store_true")
    _handler(t, "data:run_text")
    _data_puzzles(kinds)


def _data_puzzles(kinds: argparse._SubParsersAction) -> None:
    p = kinds.add_parser(
        "puzzles",
        help="generate a seeded Sudoku or maze train/test split",
        description="Generate distinct puzzles, split them into disjoint train and test sets "
        "by a seeded permutation and write train.csv, test.csv and split.json to --out.",
    )
    p.add_argument("--kind", required=True, help="sudoku or maze")
    p.add_argument("--out", required=True, help="the directory to write")
    p.add_argument("--n-train", type=int, help="training puzzles (default 1000)")
    p.add_argument(
        "--n-test", type=int, help="test puzzles (default 1000; from files: all of them)"
    )
    p.add_argument("--seed", type=int, default=0, help="seed of generation and split")
    p.add_argument("--force", action="store_true", help="replace a different split in --out")
    f = p.add_argument_group("from public files (Sudoku-Extreme, Maze-Hard CSV)")
    f.add_argument("--train-csv", help="draw --n-train puzzles from this file (seeded)")
    f.add_argument("--test-csv", help="the test puzzles: the first --n-test of this file")
    f.add_argument(
        "--select",
        choices=("seeded", "reference"),
        help="training rows: seeded (default; distinct questions, --seed) or reference (the "
        "paper's builders: numpy.random.seed(0), numpy.random.choice(N, 1000, replace=False))",
    )
    s = p.add_argument_group("sudoku")
    s.add_argument("--box", help="box shape: 2x2 (4x4 grid), 2x3 (6x6, default) or 3x3 (9x9)")
    s.add_argument("--minimal", action="store_true", help="remove givens until none can go")
    s.add_argument("--max-givens", type=int, help="stop carving at this many givens or fewer")
    s.add_argument("--min-backtracks", type=int, help="lowest rating kept (solver backtracks)")
    s.add_argument("--max-backtracks", type=int, help="highest rating kept")
    s.add_argument("--workers", type=int, help="generator processes (default 2)")
    m = p.add_argument_group("maze")
    m.add_argument("--size", type=int, help="grid side N (default 12)")
    m.add_argument("--min-path", type=int, help="keep paths longer than this (default: hard)")
    m.add_argument("--loops", type=float, help="fraction of extra doors (default 0.02)")
    _handler(p, "data_puzzles:run")


def _eval(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("eval", help="loss, perplexity, bits per byte; puzzle accuracy; depth sweep")
    p.add_argument(
        "checkpoint",
        nargs="?",
        help="a model directory (ours with config.json, model.safetensors and, for language "
        "models, tokenizer.json; or the paper's release format) or hf:OWNER/NAME[@REVISION]",
    )
    p.add_argument("--model", metavar="DIR", help="the checkpoint directory (same as CHECKPOINT)")
    p.add_argument(
        "--data",
        default="pydoc",
        help="'pydoc', 'synthetic' (random token ids below the model's vocabulary, no "
        "tokenizer needed) or a prepared data directory; for a grid model a puzzle split",
    )
    p.add_argument(
        "--tokenizer", metavar="PATH", help="a tokenizer.json (or its directory) for the model"
    )
    p.add_argument(
        "--split", default="val", help="which split to evaluate (default val; puzzles: test)"
    )
    p.add_argument("--seq-len", type=int, help="window length (default: the model's)")
    p.add_argument("--batch-size", type=int, help="windows (default 8) or puzzles (100) a batch")
    p.add_argument("--batches", type=int, help="evaluate only the first N batches")
    p.add_argument("--depth", type=int, help="a fixed depth T for the plain evaluation")
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
    p.add_argument("--device", help="cpu or cuda (default: cuda when available)")
    _handler(p, "eval:run")


def _generate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("generate", help="generate text from a checkpoint (cached head)")
    p.add_argument(
        "checkpoint",
        help="a model directory (ours, the paper's release format) or hf:OWNER/NAME",
    )
    prompt = p.add_mutually_exclusive_group(required=True)
    prompt.add_argument("--prompt", help="the text to continue (needs a tokenizer)")
    prompt.add_argument(
        "--prompt-ids", metavar="IDS", help="token ids to continue, e.g. 1,2,3; prints ids"
    )
    p.add_argument(
        "--tokenizer", metavar="PATH", help="a tokenizer.json (or its directory) for the model"
    )
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.add_argument("--temperature", type=float, default=0.0, help="0 (default) is greedy")
    p.add_argument("--top-k", type=int, help="sample only from the k most likely tokens")
    p.add_argument("--seed", type=int, help="random seed for sampling")
    p.add_argument("--device", help="cpu or cuda (default: cuda when available)")
    _handler(p, "generate:run")


def _convert(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "convert", help="write a model (the paper's release format, hf:OWNER/NAME) as ours"
    )
    p.add_argument(
        "src",
        help="a release directory (config.json with _class_name, model.pt or "
        "model.safetensors), hf:OWNER/NAME[@REVISION], or one of our exports",
    )
    p.add_argument("dst", help="the new directory to write (config.json, model.safetensors)")
    _handler(p, "convert:run")


def _plot(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("plot", help="draw a results JSON (depth sweep, solver trace) as PNG")
    p.add_argument("results", help="a JSON file written by attractor eval --sweep, ...")
    p.add_argument("--out", help="the PNG to write (default: RESULTS with .png)")
    _handler(p, "plot:run")


def _solve(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "solve", help="solve a Sudoku or a maze exactly, or with a trained grid model"
    )
    kinds = p.add_subparsers(dest="puzzle", metavar="PUZZLE", required=True)
    s = kinds.add_parser("sudoku", help='a grid of 16, 36 or 81 characters, "." or "0" blank')
    s.add_argument("grid", help="the puzzle row by row, e.g. 53..7....6..195... (81 for 9x9)")
    m = kinds.add_parser("maze", help="a file holding an N x N maze over '# SG'")
    m.add_argument("file", help="N lines of N characters, or one N*N-character line")
    for q in (s, m):
        q.add_argument(
            "--trace",
            action="store_true",
            help="show intermediate state: the exact solver's, or the model's per solver "
            "iteration and per supervision step",
        )
        q.add_argument("--model", metavar="DIR", help="solve with a trained grid model")
        _handler(q, "solve:run")


def build_parser() -> argparse.ArgumentParser:
    """The parser of every subcommand."""
    parser = argparse.ArgumentParser(
        prog="attractor",
        description="Attractor Models: fixed-point refinement with implicit gradients.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    _demo(sub)
    p = sub.add_parser("presets", help="list the model presets: parameter counts and layout")
    _handler(p, "presets:run")
    _train(sub)
    _data(sub)
    _eval(sub)
    _generate(sub)
    _convert(sub)
    _plot(sub)
    _solve(sub)
    return parser
