"""`attractor data puzzles`: generate a seeded Sudoku or maze split and save it.

    attractor data puzzles --kind sudoku --box 2x3 --out data/sudoku6 [--minimal]
    attractor data puzzles --kind maze --size 12 --out data/maze12
    attractor data puzzles --kind sudoku --train-csv train.csv --test-csv test.csv \
        --out data/sudoku-extreme            # 1000 seeded from a public file, all its tests
        [--select reference]                 # the paper's 1000 rows instead

The split (train.csv, test.csv, split.json; `attractor.data.puzzles.save_split`) is built in
a hidden folder beside --out and moved into place when complete, so a failed or interrupted
run leaves nothing behind. An --out that already holds a different split is refused unless
--force. Bad input is one line on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from attractor.data import puzzles, sudoku
from attractor.data.staging import publish, staging

PREFIX = "attractor data: "
_SUDOKU_ONLY = ("box", "minimal", "max_givens", "min_backtracks", "max_backtracks", "workers")
_MAZE_ONLY = ("size", "min_path", "loops")


# ----------------------------------------------------------------------------- arguments


def parse_box(text: str) -> tuple[int, int]:
    """'2x3' -> (2, 3); only the shapes a grid string's length identifies (2x2, 2x3, 3x3)."""
    match = re.fullmatch(r"\s*(\d+)\s*[xX]\s*(\d+)\s*", text)
    if match is None:
        raise ValueError(f"--box: expected ROWSxCOLS like 2x3, got {text!r}")
    box = (int(match[1]), int(match[2]))
    if box not in {(s.box_rows, s.box_cols) for s in sudoku.SHAPES.values()}:
        raise ValueError(f"--box: {text} is not supported; use 2x2 (4x4), 2x3 (6x6) or 3x3 (9x9)")
    return box


def _given(args: argparse.Namespace, names: tuple[str, ...]) -> list[str]:
    return ["--" + n.replace("_", "-") for n in names if getattr(args, n) not in (None, False)]


def _check_counts(args: argparse.Namespace) -> None:
    for name in ("n_train", "n_test"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            flag = "--" + name.replace("_", "-")
            raise ValueError(f"{flag} must be at least 1, got {getattr(args, name)}")
    if args.seed < 0:
        raise ValueError(f"--seed must be >= 0, got {args.seed}")


def _sudoku_plan(args: argparse.Namespace) -> dict[str, Any]:
    """Keyword arguments of `build_sudoku_split` from the command line (checked)."""
    wrong = _given(args, _MAZE_ONLY)
    if wrong:
        raise ValueError(f"{', '.join(wrong)}: maze options; --kind sudoku takes --box ...")
    box = parse_box(args.box or "2x3")
    cells = sudoku.SudokuShape(*box).cells
    generate: dict[str, Any] = {}
    if args.minimal and args.max_givens is not None:
        raise ValueError("--minimal and --max-givens exclude each other; give one of them")
    if args.minimal:
        generate["minimal"] = True
    if args.max_givens is not None:
        if not 0 < args.max_givens < cells:
            raise ValueError(f"--max-givens must be in 1..{cells - 1}, got {args.max_givens}")
        generate["max_givens"] = args.max_givens
    for name in ("min_backtracks", "max_backtracks"):
        value = getattr(args, name)
        if value is not None:
            if value < 0:
                raise ValueError(f"--{name.replace('_', '-')} must be >= 0, got {value}")
            generate[name] = value
    lo, hi = generate.get("min_backtracks", 0), generate.get("max_backtracks")
    if hi is not None and hi < lo:
        raise ValueError(f"--max-backtracks {hi} is below --min-backtracks {lo}")
    workers = 2 if args.workers is None else args.workers
    if workers < 1:
        raise ValueError(f"--workers must be at least 1, got {workers}")
    return dict(box=box, workers=workers, **generate)


def _maze_plan(args: argparse.Namespace) -> dict[str, Any]:
    """Keyword arguments of `build_maze_split` from the command line (checked)."""
    wrong = _given(args, _SUDOKU_ONLY)
    if wrong:
        raise ValueError(f"{', '.join(wrong)}: sudoku options; --kind maze takes --size ...")
    size = 12 if args.size is None else args.size
    if size < 5:
        raise ValueError(f"--size must be at least 5, got {size}")
    plan: dict[str, Any] = {"size": size}
    if args.min_path is not None:
        if args.min_path < 0:
            raise ValueError(f"--min-path must be >= 0, got {args.min_path}")
        plan["min_path"] = args.min_path
    if args.loops is not None:
        if not 0.0 <= args.loops <= 1.0:
            raise ValueError(f"--loops is a fraction in [0, 1], got {args.loops}")
        plan["loops"] = args.loops
    return plan


def _csv_plan(args: argparse.Namespace) -> dict[str, Any]:
    """Keyword arguments of `split_from_csv` (the public files) from the command line."""
    if (args.train_csv is None) != (args.test_csv is None):
        raise ValueError("--train-csv and --test-csv go together; give both files")
    wrong = _given(args, _SUDOKU_ONLY + _MAZE_ONLY)
    if wrong:
        raise ValueError(
            f"{', '.join(wrong)}: generator options; with --train-csv the puzzles come "
            "from the files"
        )
    select = args.select or "seeded"
    return dict(train_csv=args.train_csv, test_csv=args.test_csv, kind=args.kind, select=select)


def plan_split(args: argparse.Namespace) -> dict[str, Any]:
    """The builder's keyword arguments (without out_dir); ValueError on bad input.

    From files (--train-csv): all of --test-csv unless --n-test; generated: 1000 + 1000."""
    if args.kind not in puzzles.KINDS:
        raise ValueError(f"--kind: unknown puzzle kind {args.kind!r}; use sudoku or maze")
    _check_counts(args)
    n_train = 1000 if args.n_train is None else args.n_train
    if args.select is not None and args.train_csv is None:
        raise ValueError("--select chooses rows of --train-csv; give --train-csv and --test-csv")
    if args.train_csv is not None or args.test_csv is not None:
        return dict(_csv_plan(args), n_train=n_train, n_test=args.n_test, seed=args.seed)
    plan = _sudoku_plan(args) if args.kind == "sudoku" else _maze_plan(args)
    n_test = 1000 if args.n_test is None else args.n_test
    return dict(plan, n_train=n_train, n_test=n_test, seed=args.seed)


def split_identity(kind: str, plan: dict[str, Any]) -> dict[str, Any]:
    """What split.json records about how the split was made, as JSON would read it back."""
    generate = {k: v for k, v in plan.items() if k not in ("n_train", "n_test", "workers")}
    if kind == "sudoku":
        generate["box"] = list(generate["box"])
    seed = plan["seed"]
    identity = dict(kind=kind, seed=seed, n_train=plan["n_train"], n_test=plan["n_test"])
    identity["generator"] = {**generate, "seed": seed}
    return json.loads(json.dumps(identity))


# ----------------------------------------------------------------------------- output folder


def _existing_identity(out: Path) -> dict[str, Any] | None:
    try:
        record = json.loads((out / "split.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict):
        return None
    return {k: record.get(k) for k in ("kind", "seed", "n_train", "n_test", "generator")}


def check_out(out: Path, identity: dict[str, Any] | None, force: bool) -> None:
    """Refuse a file, or a folder holding something other than this very split (no --force).
    identity None (a split read from files): any non-empty folder is refused."""
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out: {out} is a file; pass a directory")
    if not out.is_dir() or force or not any(out.iterdir()):
        return
    existing = _existing_identity(out)
    if identity is None:
        raise ValueError(
            f"--out: {out} is not empty; choose another --out or pass --force to replace it"
        )
    if existing is None:
        raise ValueError(
            f"--out: {out} is not empty and holds no puzzle split; choose another --out "
            "or pass --force to write the split into it"
        )
    if existing != identity:
        counts = f"{existing['n_train']}+{existing['n_test']}"
        raise ValueError(
            f"--out: {out} holds a different split ({existing['kind']} {counts}, seed "
            f"{existing['seed']}, generator {existing['generator']}); "
            "choose another --out or pass --force to replace it"
        )


def build_split(kind: str, plan: dict[str, Any], out_dir: str | Path) -> dict[str, Any]:
    """Build the split in a hidden folder beside out_dir, then move it there; the record.

    Nothing is left behind on failure (nor any parent folder this call created).
    """
    if "train_csv" in plan:
        builder: Any = puzzles.split_from_csv
    elif kind == "sudoku":
        builder = puzzles.build_sudoku_split
    else:
        builder = puzzles.build_maze_split
    with staging(out_dir) as tmp:
        record = builder(tmp, **plan)
        publish(tmp, out_dir, "split.json")
    return record


def summary(kind: str, out: str | Path, seconds: float) -> str:
    """One line: counts, mean givens (Sudoku) or path length (maze), time, where."""
    train, test, record = puzzles.load_split(out)
    if kind == "sudoku":
        n = sudoku.shape_for_length(train[0].question.size).n
        size = f"{n}x{n} sudoku"

        def mean(xs: list) -> float:
            return float(np.mean([int((p.question != 0).sum()) for p in xs]))

        what = "givens"
    else:
        size = f"{train[0].size}x{train[0].size} maze"

        def mean(xs: list) -> float:
            return float(np.mean([m.rating for m in xs]))

        what = "path length"
    rating = float(np.mean([ex.rating for ex in train + test]))
    extra = f", mean rating {rating:.2f} backtracks" if kind == "sudoku" else ""
    return (
        f"{size}: {record['n_train']} train + {record['n_test']} test puzzles (seed "
        f"{record['seed']}), mean {what} {mean(train):.1f} train / {mean(test):.1f} test"
        f"{extra}, in {seconds:.1f} s -> {out}"
    )


# ----------------------------------------------------------------------------- command line


def run(args: argparse.Namespace) -> int:
    """`attractor data puzzles`: plan, check and build a split; one line for bad input."""
    start = time.perf_counter()
    try:
        plan = plan_split(args)
        identity = None if "train_csv" in plan else split_identity(args.kind, plan)
        check_out(Path(args.out), identity, args.force)
        build_split(args.kind, plan, args.out)
        line = summary(args.kind, args.out, time.perf_counter() - start)
    except (ValueError, RuntimeError, OSError) as err:
        print(f"{PREFIX}{err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{PREFIX}interrupted; nothing was written", file=sys.stderr)
        return 130
    print(line)
    return 0
