"""Grid-puzzle datasets with augmentation, and seeded, recorded train/test splits.

`PuzzleDataset` serves Sudoku (`sudoku.Puzzle`) or maze (`maze.Maze`) examples as token
tensors: ``inputs`` the flattened question, ``labels`` the flattened answer. With
``augment=True`` example i of epoch e is transformed by a validity-preserving augmentation
(`sudoku_generate.augment`, `maze.augment`) drawn from ``np.random.default_rng([seed, e,
i])``, so the same (seed, epoch, index) always gives the same grid, and a new epoch gives a
new one. With ``pool=N`` each puzzle instead has a fixed pool of N augmented versions plus
the original, and each epoch draws one of those N + 1 (the paper's data: TRM's builders
store 1000 Sudoku shuffles plus the original, and a maze's 8 dihedral versions, and its
sampler takes one version of each puzzle an epoch).

Splits: `make_split` draws disjoint train and test sets from a numpy permutation of the
distinct questions, and returns a record (seed, counts, chosen indices, a hash of each
chosen question). `split_from_csv` reads the public files; ``select="reference"`` keeps
exactly the training rows the paper's data builders keep (TRM's build_sudoku_dataset.py
and build_maze_dataset.py, which the paper's puzzle code uses: ``numpy.random.seed(0)``,
then ``numpy.random.choice(N, 1000, replace=False)`` over the N rows of the training CSV,
every row when N <= 1000; `reference_rows`). `save_split` writes train.csv, test.csv and
split.json atomically, the JSON also holding each CSV's sha256; `load_split` reads them back
and refuses files that changed since.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from attractor.core.atomic import atomic_write_json
from attractor.data import maze, sudoku, sudoku_generate

KINDS = ("sudoku", "maze")
SELECTIONS = ("seeded", "reference")  # `split_from_csv`
MAZE_SYMMETRIES = 7  # a maze's dihedral versions besides itself: the largest maze pool
Example = sudoku.Puzzle | maze.Maze

# ----------------------------------------------------------------------------- per-kind helpers


def _check_kind(kind: str) -> str:
    if kind not in KINDS:
        raise ValueError(f"puzzles: unknown kind {kind!r}; use one of {', '.join(KINDS)}")
    return kind


def kind_of(example: Example) -> str:
    """'sudoku' for a `sudoku.Puzzle`, 'maze' for a `maze.Maze`."""
    if isinstance(example, sudoku.Puzzle):
        return "sudoku"
    if isinstance(example, maze.Maze):
        return "maze"
    raise TypeError(f"puzzles: expected sudoku.Puzzle or maze.Maze, got {type(example).__name__}")


def question_text(example: Example) -> str:
    """The question as its one-line CSV string."""
    if isinstance(example, sudoku.Puzzle):
        return sudoku.format_grid(example.question)
    return maze.format_maze(example.question)


def question_hash(example: Example) -> str:
    """First 16 hex digits of the sha256 of ``kind:question``: the identity used by splits."""
    text = f"{kind_of(example)}:{question_text(example)}"
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def read_examples(path: str | os.PathLike, kind: str) -> list[Example]:
    """Read a ``source,question,answer,rating`` CSV of the given kind."""
    return sudoku.read_csv(path) if _check_kind(kind) == "sudoku" else maze.read_csv(path)


def write_examples(path: str | os.PathLike, examples: list[Example], kind: str) -> None:
    """Write examples of the given kind as CSV, atomically."""
    if _check_kind(kind) == "sudoku":
        sudoku.write_csv(path, examples)
    else:
        maze.write_csv(path, examples)


# ----------------------------------------------------------------------------- dataset


class PuzzleDataset(torch.utils.data.Dataset):
    """Puzzles as token tensors, freshly augmented per (seed, epoch, index) when asked.

    ``__getitem__(i)`` -> ``dict(inputs=LongTensor (L,), labels=LongTensor (L,), index=i)``
    where L = cells of the grid (81 for 9x9 Sudoku, N*N for an N x N maze).
    """

    def __init__(
        self,
        examples: list[Example],
        kind: str,
        augment: bool = True,
        seed: int = 0,
        pool: int = 0,
    ) -> None:
        self.kind = _check_kind(kind)
        for ex in examples[:1]:
            if kind_of(ex) != kind:
                raise ValueError(f"puzzles: kind {kind!r} but the examples are {kind_of(ex)!r}")
        if pool < 0 or (kind == "maze" and pool > MAZE_SYMMETRIES):
            allowed = f"in 0..{MAZE_SYMMETRIES} for mazes" if kind == "maze" else ">= 0"
            raise ValueError(
                f"puzzles: pool must be {allowed}, got {pool}; 0 draws a fresh augmentation "
                f"every epoch, {MAZE_SYMMETRIES} gives a maze all 8 dihedral versions"
            )
        self.examples = list(examples)
        self.augment = augment
        self.seed = seed
        self.pool = pool
        self.epoch = 0

    @classmethod
    def from_csv(cls, path: str | os.PathLike, kind: str, **kwargs: Any) -> PuzzleDataset:
        """A dataset over the rows of a Sudoku-Extreme or Maze-Hard style CSV file."""
        return cls(read_examples(path, kind), kind, **kwargs)

    def set_epoch(self, epoch: int) -> None:
        """Choose the augmentations of this epoch (call once per epoch, like DistributedSampler)."""
        self.epoch = int(epoch)

    @property
    def vocab_size(self) -> int:
        """Token ids used, pad included: N + 2 for N x N Sudoku, 6 for mazes."""
        if self.kind == "maze":
            return len(maze.CHARSET) + 1
        cells = self.examples[0].question.size if self.examples else 81
        return sudoku.shape_for_length(cells).n + 2

    @property
    def side(self) -> int:
        """The side N of the dataset's N x N grids."""
        question = self.examples[0].question
        return (
            question.shape[0] if self.kind == "maze" else sudoku.shape_for_length(question.size).n
        )

    def geometry(self) -> dict[str, int]:
        """The grid fields a model needs for these puzzles: vocabulary, side and boxes (0 x 0
        for mazes): the one puzzle-geometry helper of the package."""
        if self.kind == "maze":
            return {"vocab_size": self.vocab_size, "side": self.side, "box_rows": 0, "box_cols": 0}
        shape = sudoku.shape_for_length(self.examples[0].question.size)
        return {
            "vocab_size": self.vocab_size,
            "side": shape.n,
            "box_rows": shape.box_rows,
            "box_cols": shape.box_cols,
        }

    def batches(
        self, indices: list[int], batch_size: int, device: torch.device | str = "cpu"
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """(inputs, labels), each (B, L) on `device`, over data[indices] in batches."""
        for i in range(0, len(indices), batch_size):
            items = [self[j] for j in indices[i : i + batch_size]]
            inputs = torch.stack([it["inputs"] for it in items]).to(device)
            yield inputs, torch.stack([it["labels"] for it in items]).to(device)

    def __len__(self) -> int:
        return len(self.examples)

    def grids(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """The (question, answer) grids of example ``index`` after this epoch's augmentation:
        a fresh one, or (``pool``) version v of its pool, v drawn uniformly from 0..pool."""
        ex = self.examples[index]
        if not self.augment:
            return ex.question, ex.answer
        rng = np.random.default_rng([self.seed, self.epoch, index])
        if not self.pool:
            aug = sudoku_generate.augment if self.kind == "sudoku" else maze.augment
            return aug(ex.question, ex.answer, rng)
        return self.pool_version(index, int(rng.integers(self.pool + 1)))

    def pool_version(self, index: int, version: int) -> tuple[np.ndarray, np.ndarray]:
        """Version 0..pool of example ``index``'s fixed pool: 0 the original; a maze's v its
        v-th dihedral transform; a Sudoku's v the augmentation drawn from the seed sequence
        (seed, spawn key (index, v)), the same every epoch."""
        ex = self.examples[index]
        if version == 0:
            return ex.question, ex.answer
        if self.kind == "maze":
            return maze.dihedral(ex.question, version), maze.dihedral(ex.answer, version)
        seq = np.random.SeedSequence(self.seed, spawn_key=(index, version))
        return sudoku_generate.augment(ex.question, ex.answer, np.random.default_rng(seq))

    def __getitem__(self, index: int) -> dict[str, Any]:
        if not -len(self) <= index < len(self):
            raise IndexError(f"puzzles: index {index} out of range for {len(self)} examples")
        index = index % len(self)
        question, answer = self.grids(index)
        to_tokens = sudoku.to_tokens if self.kind == "sudoku" else maze.to_tokens
        return {
            "inputs": torch.from_numpy(to_tokens(question).reshape(-1)),  # (L,)
            "labels": torch.from_numpy(to_tokens(answer).reshape(-1)),  # (L,)
            "index": index,
        }


# ----------------------------------------------------------------------------- splits


def make_split(
    examples: list[Example], n_train: int, n_test: int, seed: int
) -> tuple[list[Example], list[Example], dict[str, Any]]:
    """Disjoint train and test sets drawn by a seeded permutation: (train, test, record).

    Repeated questions count once (the first occurrence), so no test question is also a
    training question. ``record`` holds the seed, the counts, the chosen indices into
    ``examples`` and the `question_hash` of each chosen example.
    """
    if n_train < 0 or n_test < 0:
        raise ValueError(f"puzzles: n_train and n_test must be >= 0, got {n_train}, {n_test}")
    hashes = [question_hash(ex) for ex in examples]
    first: dict[str, int] = {}
    for i, h in enumerate(hashes):
        first.setdefault(h, i)
    distinct = np.array(sorted(first.values()), dtype=np.int64)
    if n_train + n_test > len(distinct):
        raise ValueError(
            f"puzzles: asked for {n_train} train + {n_test} test but only {len(distinct)} "
            f"distinct questions among {len(examples)} examples; generate more or ask for fewer"
        )
    order = distinct[np.random.default_rng(seed).permutation(len(distinct))]
    train_idx = order[:n_train].tolist()
    test_idx = order[n_train : n_train + n_test].tolist()
    record = {
        "kind": kind_of(examples[0]) if examples else None,
        "seed": int(seed),
        "n_examples": len(examples),
        "n_distinct": len(distinct),
        "n_train": n_train,
        "n_test": n_test,
        "train_indices": train_idx,
        "test_indices": test_idx,
        "train_hashes": [hashes[i] for i in train_idx],
        "test_hashes": [hashes[i] for i in test_idx],
    }
    return [examples[i] for i in train_idx], [examples[i] for i in test_idx], record


def _file_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def save_split(
    out_dir: str | os.PathLike,
    train: list[Example],
    test: list[Example],
    record: dict[str, Any],
) -> Path:
    """Write train.csv, test.csv and split.json (the record plus each CSV's sha256) atomically.

    split.json is written last, so a directory with a split.json holds a complete split.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    kind = record.get("kind") or kind_of((train + test)[0])
    files = {}
    for name, examples in (("train", train), ("test", test)):
        path = out / f"{name}.csv"
        write_examples(path, examples, kind)
        files[name] = {"file": path.name, "sha256": _file_sha256(path)}
    atomic_write_json(out / "split.json", {**record, "kind": kind, "files": files})
    return out


def load_split(out_dir: str | os.PathLike) -> tuple[list[Example], list[Example], dict[str, Any]]:
    """Read a split saved by `save_split` and check it against its record: (train, test, record).

    Raises ValueError when a CSV's sha256 or a question's hash differs from split.json.
    """
    out = Path(out_dir)
    meta = out / "split.json"
    if not meta.is_file():
        raise FileNotFoundError(
            f"puzzles: no split.json in {out}; build one with build_sudoku_split / build_maze_split"
        )
    record = json.loads(meta.read_text())
    kind = _check_kind(record.get("kind"))
    loaded = {}
    for name in ("train", "test"):
        entry = record["files"][name]
        path = out / entry["file"]
        if not path.is_file():
            raise FileNotFoundError(f"puzzles: {path} is missing; rebuild the split")
        if _file_sha256(path) != entry["sha256"]:
            raise ValueError(
                f"puzzles: {path} changed since the split was saved (sha256 differs from "
                f"{meta.name}); rebuild the split rather than editing it"
            )
        examples = read_examples(path, kind)
        if [question_hash(ex) for ex in examples] != record[f"{name}_hashes"]:
            raise ValueError(
                f"puzzles: the questions in {path} do not match the hashes in {meta.name}; "
                "rebuild the split"
            )
        loaded[name] = examples
    return loaded["train"], loaded["test"], record


# ----------------------------------------------------------------------------- builders


def _distinct_sudoku(
    n: int, shape: sudoku.SudokuShape, seed: int, workers: int, kwargs: dict[str, Any]
) -> list[sudoku.Puzzle]:
    """At least ``n`` generated puzzles with distinct questions (extra rounds if repeats)."""
    source = f"gen{shape.box_rows}x{shape.box_cols}-s{seed}"
    puzzles: list[sudoku.Puzzle] = []
    seen: set[str] = set()
    for round_ in range(20):
        entropy = seed if round_ == 0 else [seed, round_]
        missing = n - len(puzzles)
        for q, a, rating in sudoku_generate.generate_many(
            missing, shape, entropy, workers, **kwargs
        ):
            p = sudoku.Puzzle(source, q, a, rating)
            if question_hash(p) not in seen:
                seen.add(question_hash(p))
                puzzles.append(p)
        if len(puzzles) >= n:
            return puzzles
    raise ValueError(
        f"puzzles: could only make {len(puzzles)} distinct {shape.n}x{shape.n} puzzles of "
        f"{n}; ask for fewer or widen the band"
    )


def build_sudoku_split(
    out_dir: str | os.PathLike,
    box: tuple[int, int] = (2, 3),
    n_train: int = 1000,
    n_test: int = 1000,
    seed: int = 0,
    workers: int = 1,
    **generate_kwargs: Any,
) -> dict[str, Any]:
    """Generate distinct Sudoku puzzles (`sudoku_generate.generate_many`), split them and
    save; the record.

    ``generate_kwargs`` go to `sudoku_generate.generate` (min_backtracks, max_givens,
    minimal, ...).
    """
    shape = sudoku.SudokuShape(*box)
    puzzles = _distinct_sudoku(n_train + n_test, shape, seed, workers, generate_kwargs)
    train, test, record = make_split(puzzles, n_train, n_test, seed)
    record["generator"] = {"box": list(box), "seed": seed, **generate_kwargs}
    save_split(out_dir, train, test, record)
    return record


def build_maze_split(
    out_dir: str | os.PathLike,
    size: int = 12,
    n_train: int = 1000,
    n_test: int = 1000,
    seed: int = 0,
    **generate_kwargs: Any,
) -> dict[str, Any]:
    """Generate hard mazes (`maze.generate_many`), split them and save; the record.

    ``generate_kwargs`` go to `maze.generate_many` (min_path, loops).
    """
    n = n_train + n_test
    mazes = maze.generate_many(n + max(8, n // 20), size, seed, **generate_kwargs)
    train, test, record = make_split(mazes, n_train, n_test, seed)
    record["generator"] = {"size": size, "seed": seed, **generate_kwargs}
    save_split(out_dir, train, test, record)
    return record


def reference_rows(n_rows: int, n_train: int, seed: int = 0) -> list[int]:
    """The training rows the paper's data builders keep from a CSV of ``n_rows`` rows:
    ``numpy.random.seed(seed)`` (0 there), then ``numpy.random.choice(n_rows, n_train,
    replace=False)`` when n_train < n_rows, else every row in file order (TRM's
    build_sudoku_dataset.py / build_maze_dataset.py)."""
    if n_train > n_rows:
        raise ValueError(
            f"puzzles: asked for {n_train} training puzzles but the file has {n_rows} rows; "
            "ask for fewer"
        )
    if n_train == n_rows:
        return list(range(n_rows))
    legacy = np.random.RandomState(seed)  # the generator numpy.random.seed seeds
    return legacy.choice(n_rows, n_train, replace=False).tolist()


def split_from_csv(
    out_dir: str | os.PathLike,
    train_csv: str | os.PathLike,
    test_csv: str | os.PathLike,
    kind: str,
    n_train: int = 1000,
    n_test: int | None = None,
    seed: int = 0,
    select: str = "seeded",
) -> dict[str, Any]:
    """A recorded split from public CSV files (Sudoku-Extreme, Maze-Hard): ``n_train``
    training questions, and the first ``n_test`` (default: all) of test_csv; saved like a
    generated split. Returns the record.

    ``select="seeded"`` draws the distinct questions by a seeded permutation (`make_split`);
    ``"reference"`` keeps the rows the paper's builders keep (`reference_rows`, repeats and
    all)."""
    if select not in SELECTIONS:
        raise ValueError(f"puzzles: select {select!r} is not one of {', '.join(SELECTIONS)}")
    examples = read_examples(train_csv, kind)
    if select == "seeded":
        train, _, record = make_split(examples, n_train, 0, seed)
    else:
        rows = reference_rows(len(examples), n_train, seed)
        train = [examples[i] for i in rows]
        record = {
            "kind": kind,
            "seed": int(seed),
            "n_examples": len(examples),
            "n_train": len(train),
            "train_indices": rows,
            "train_hashes": [question_hash(ex) for ex in train],
        }
    test = read_examples(test_csv, kind)
    test = test[: len(test) if n_test is None else n_test]
    record.update(
        select=select,
        n_test=len(test),
        test_indices=list(range(len(test))),
        test_hashes=[question_hash(ex) for ex in test],
        source={"train": str(train_csv), "test": str(test_csv)},
    )
    save_split(out_dir, train, test, record)
    return record


def split_geometry(directory: str | os.PathLike) -> dict[str, int]:
    """The grid fields a model needs for the split in `directory` (`PuzzleDataset.geometry`);
    a directory without a split is an error that says how to make one."""
    try:
        train, test, record = load_split(directory)
    except FileNotFoundError:
        raise ValueError(
            f"data.source: {str(directory)!r} holds no puzzle split (split.json); make one "
            "with `attractor data puzzles --kind sudoku --out DIR`"
        ) from None
    return PuzzleDataset((train + test)[:1], record["kind"], augment=False).geometry()
