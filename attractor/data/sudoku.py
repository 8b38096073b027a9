"""Sudoku for any box shape: geometry, parsing, an exact solver, CSV and tokens.

Grids are flat ``np.int8`` arrays of ``shape.cells`` values in row-major order, 0 for a blank
and 1..N for a digit, where N = box_rows * box_cols (2x2 -> 4x4, 2x3 -> 6x6, 3x3 -> 9x9).
The CSV format is that of the public Sudoku-Extreme files (docs/method.md section 4.3):
``source,question,answer,rating`` with ``.`` for a blank and rating = backtracks. The
generator and the augmentations are in `attractor.data.sudoku_generate`.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass, field

import numpy as np

from attractor.data import puzzle_csv

# ----------------------------------------------------------------------------- geometry


@dataclass(frozen=True)
class SudokuShape:
    """A grid of ``box_rows x box_cols`` boxes; its side is n = box_rows * box_cols."""

    box_rows: int = 3
    box_cols: int = 3

    def __post_init__(self) -> None:
        if self.box_rows < 1 or self.box_cols < 1 or self.n > 9:
            raise ValueError(
                f"sudoku: box {self.box_rows}x{self.box_cols} is not supported "
                "(use 2x2, 2x3 or 3x3)"
            )

    @property
    def n(self) -> int:
        """Side of the grid and number of digits."""
        return self.box_rows * self.box_cols

    @property
    def cells(self) -> int:
        """Number of cells, n * n."""
        return self.n * self.n

    @property
    def units(self) -> tuple[tuple[int, ...], ...]:
        """The n rows, then the n columns, then the n boxes, each as a tuple of cell indices."""
        return _geometry(self.box_rows, self.box_cols)[0]

    @property
    def peers(self) -> tuple[tuple[int, ...], ...]:
        """For each cell, the other cells that share its row, column or box."""
        return _geometry(self.box_rows, self.box_cols)[1]

    def box_of(self, cell: int) -> int:
        """Index of the box holding ``cell`` (boxes numbered row-major)."""
        row, col = divmod(cell, self.n)
        return (row // self.box_rows) * (self.n // self.box_cols) + col // self.box_cols


@functools.cache
def _geometry(box_rows: int, box_cols: int) -> tuple[tuple, tuple]:
    n = box_rows * box_cols
    rows = [tuple(r * n + c for c in range(n)) for r in range(n)]
    cols = [tuple(r * n + c for r in range(n)) for c in range(n)]
    boxes = []
    for br in range(0, n, box_rows):
        for bc in range(0, n, box_cols):
            boxes.append(
                tuple((br + i) * n + bc + j for i in range(box_rows) for j in range(box_cols))
            )
    units = tuple(rows + cols + boxes)
    peers = []
    for cell in range(n * n):
        mates = set()
        for unit in units:
            if cell in unit:
                mates.update(unit)
        mates.discard(cell)
        peers.append(tuple(sorted(mates)))
    return units, tuple(peers)


SHAPES = {16: SudokuShape(2, 2), 36: SudokuShape(2, 3), 81: SudokuShape(3, 3)}


def shape_for_length(length: int) -> SudokuShape:
    """The shape whose grid has ``length`` cells: 16 -> 2x2, 36 -> 2x3, 81 -> 3x3."""
    if length not in SHAPES:
        raise ValueError(f"sudoku: expected 16, 36 or 81 cells, got {length}")
    return SHAPES[length]


def shape_of(grid: np.ndarray, shape: SudokuShape | None = None) -> SudokuShape:
    """The shape of flat `grid`: `shape` checked against its size, else the one its size
    implies."""
    if shape is None:
        return shape_for_length(grid.size)
    if grid.size != shape.cells:
        raise ValueError(f"sudoku: expected {shape.cells} cells, got {grid.size}")
    return shape


# ----------------------------------------------------------------------------- parsing


def _cell_name(cell: int, n: int) -> str:
    row, col = divmod(cell, n)
    return f"r{row + 1}c{col + 1}"


def find_conflict(grid: np.ndarray, shape: SudokuShape | None = None) -> tuple[int, int] | None:
    """The first pair of cells (a, b) sharing a unit and holding the same digit, or None."""
    grid = np.asarray(grid).reshape(-1)
    shape = shape_of(grid, shape)
    for unit in shape.units:
        seen: dict[int, int] = {}
        for cell in unit:
            digit = int(grid[cell])
            if digit:
                if digit in seen:
                    return min(seen[digit], cell), max(seen[digit], cell)
                seen[digit] = cell
    return None


def parse_grid(text: str, shape: SudokuShape | None = None) -> np.ndarray:
    """Parse ``'53..7....'`` into a flat int8 grid; '.' or '0' is a blank, the size from length."""
    text = text.strip()
    if shape is None:
        shape = shape_for_length(len(text))
    elif len(text) != shape.cells:
        raise ValueError(f"sudoku: expected {shape.cells} cells, got {len(text)}")
    n = shape.n
    grid = np.zeros(shape.cells, dtype=np.int8)
    for pos, ch in enumerate(text):
        if ch in ".0":
            continue
        if not ("1" <= ch <= str(n)):
            raise ValueError(
                f"sudoku: bad character {ch!r} at position {pos + 1} "
                f"(use digits 1-{n}, '.' or '0' for a blank)"
            )
        grid[pos] = ord(ch) - ord("0")
    conflict = find_conflict(grid, shape)
    if conflict is not None:
        a, b = conflict
        raise ValueError(
            f"sudoku: conflicting givens: {_cell_name(a, n)} and {_cell_name(b, n)} "
            f"are both {grid[a]}"
        )
    return grid


def format_grid(grid: np.ndarray, blank: str = ".") -> str:
    """The one-line string form, e.g. 81 characters for 9x9, ``blank`` for empty cells."""
    return "".join(str(int(d)) if d else blank for d in np.asarray(grid).reshape(-1))


def pretty(grid: np.ndarray, shape: SudokuShape | None = None) -> str:
    """A multi-line picture of the grid with box separators."""
    grid = np.asarray(grid).reshape(-1)
    shape = shape_of(grid, shape)
    n, br, bc = shape.n, shape.box_rows, shape.box_cols
    rule = "+".join(["-" * (2 * bc + 1)] * (n // bc))
    lines = []
    for row in range(n):
        if row and row % br == 0:
            lines.append(rule)
        chunks = []
        for start in range(0, n, bc):
            cells = grid[row * n + start : row * n + start + bc]
            chunks.append(" " + " ".join(str(int(d)) if d else "." for d in cells) + " ")
        lines.append("|".join(chunks))
    return "\n".join(lines)


def is_solution(grid: np.ndarray, puzzle: np.ndarray | None = None) -> bool:
    """True when every row, column and box holds 1..N once and the givens of ``puzzle`` agree."""
    grid = np.asarray(grid).reshape(-1)
    shape = shape_of(grid, None)
    want = np.arange(1, shape.n + 1)
    units = np.asarray(shape.units)
    if not np.array_equal(np.sort(grid[units], axis=1), np.broadcast_to(want, units.shape)):
        return False
    if puzzle is not None:
        puzzle = np.asarray(puzzle).reshape(-1)
        given = puzzle != 0
        return bool(np.array_equal(grid[given], puzzle[given]))
    return True


# ----------------------------------------------------------------------------- solver

_POPCOUNT = [bin(m).count("1") for m in range(1 << 10)]


@dataclass
class SolveResult:
    """Solutions found (at most ``limit``) and the number of backtracks the search made."""

    solutions: list[np.ndarray] = field(default_factory=list)
    backtracks: int = 0
    guesses: int = 0  # branches tried (each is one propagation after the givens')

    @property
    def count(self) -> int:
        """Number of solutions found (capped at the ``limit`` given to :func:`solve`)."""
        return len(self.solutions)

    @property
    def unique(self) -> bool:
        """Exactly one solution (meaningful when solved with limit >= 2)."""
        return len(self.solutions) == 1


class Search:
    """Bitmask search state shared by one solve: candidates are ints, bit d-1 = digit d. With
    `rng`, the digits of each branch are tried in random order (the generator's full grids)."""

    def __init__(self, shape: SudokuShape, limit: int, rng: np.random.Generator | None = None):
        self.units = shape.units
        self.peers = shape.peers
        self.cells = shape.cells
        self.full = (1 << shape.n) - 1
        self.limit = limit
        self.rng = rng
        self.solutions: list[list[int]] = []
        self.backtracks = 0
        self.guesses = 0

    def propagate(self, cands: list[int], done: list[bool], stack: list[int]) -> bool:
        """Naked singles (eliminate a placed digit from peers) and hidden singles, to a fixpoint."""
        peers, full = self.peers, self.full
        while True:
            while stack:
                cell = stack.pop()
                if done[cell]:
                    continue
                done[cell] = True
                m = cands[cell]
                for p in peers[cell]:
                    pm = cands[p]
                    if pm & m:
                        pm ^= m
                        if not pm:
                            return False
                        cands[p] = pm
                        if not pm & (pm - 1):
                            stack.append(p)
            for unit in self.units:
                once = twice = 0
                for c in unit:
                    m = cands[c]
                    twice |= once & m
                    once |= m
                if once != full:
                    return False  # some digit has no place left in this unit
                only = once & ~twice
                if only:
                    for c in unit:
                        m = cands[c]
                        h = m & only
                        if h and h != m:
                            if h & (h - 1):
                                return False  # one cell is the only place for two digits
                            cands[c] = h
                            stack.append(c)
            if not stack:
                return True

    def run(self, cands: list[int], done: list[bool]) -> None:
        """Depth-first search on the cell with fewest candidates; ``cands`` already propagated."""
        best, fewest = -1, 99
        for c in range(self.cells):
            if not done[c]:
                k = _POPCOUNT[cands[c]]
                if k < fewest:
                    best, fewest = c, k
                    if k == 2:
                        break
        if best < 0:
            self.solutions.append(cands)
            return
        m = cands[best]
        bits = [1 << d for d in range(self.full.bit_length()) if m >> d & 1]
        if self.rng is not None:
            bits = [bits[i] for i in self.rng.permutation(len(bits))]
        for bit in bits:
            c2, d2 = cands[:], done[:]
            c2[best] = bit
            self.guesses += 1
            if self.propagate(c2, d2, [best]):
                self.run(c2, d2)
                if len(self.solutions) >= self.limit:
                    return
            else:
                self.backtracks += 1

    def start(self, cands: list[int]) -> None:
        """Propagate the givens (single-bit cells) and search."""
        done = [False] * self.cells
        stack = [c for c, m in enumerate(cands) if m and not m & (m - 1)]
        if all(cands) and self.propagate(cands, done, stack):
            self.run(cands, done)

    def grids(self) -> list[np.ndarray]:
        """The solutions as int8 grids."""
        return [np.array([m.bit_length() for m in s], dtype=np.int8) for s in self.solutions]


def candidate_masks(grid: np.ndarray, full: int) -> list[int]:
    """The candidate bitmask of each cell: its digit's bit for a given, `full` for a blank."""
    return [1 << (d - 1) if d else full for d in grid.tolist()]


def solve(grid: np.ndarray, limit: int = 2, shape: SudokuShape | None = None) -> SolveResult:
    """Find up to ``limit`` solutions exactly, counting backtracks.

    Candidates are bitmasks. After every placement the solver propagates naked singles (a cell
    with one candidate removes it from its peers) and hidden singles (a digit with one place in
    a row, column or box goes there) to a fixpoint, then branches on the open cell with the
    fewest candidates, trying its digits in ascending order.

    ``backtracks`` is the number of dead ends: branches (guesses) whose propagation reached a
    contradiction and were undone. It is 0 exactly when propagation alone solves the puzzle or
    proves it has no solution. With ``limit=2`` on a unique puzzle the whole search tree is
    explored, so the count does not depend on which branch happens to hold the solution;
    that value is the puzzle's rating (:func:`rate`). Conflicting givens give 0 solutions.
    """
    grid = np.asarray(grid).reshape(-1)
    shape = shape_of(grid, shape)
    search = Search(shape, limit)
    search.start(candidate_masks(grid, search.full))
    return SolveResult(search.grids(), search.backtracks, search.guesses)


def propagated(grid: np.ndarray) -> np.ndarray:
    """The grid after propagating its givens (naked and hidden singles) to a fixpoint, with
    0 in the cells propagation leaves open (what the search starts from)."""
    grid = np.asarray(grid).reshape(-1)
    search = Search(shape_of(grid, None), 1)
    cands = candidate_masks(grid, search.full)
    stack = [c for c, m in enumerate(cands) if m and not m & (m - 1)]
    search.propagate(cands, [False] * grid.size, stack)
    return np.array([m.bit_length() if m and not m & (m - 1) else 0 for m in cands], np.int8)


def rate(puzzle: np.ndarray) -> int:
    """The rating of a puzzle: ``solve(puzzle, limit=2).backtracks``."""
    return solve(puzzle, limit=2).backtracks


# ----------------------------------------------------------------------------- CSV


@dataclass
class Puzzle:
    """One row of a Sudoku-Extreme CSV file."""

    source: str
    question: np.ndarray
    answer: np.ndarray
    rating: int


CSV_COLUMNS = ("source", "question", "answer", "rating")


def read_csv(path: str | os.PathLike) -> list[Puzzle]:
    """Read a Sudoku-Extreme CSV (`source,question,answer,rating`); answers are checked."""
    hint = "make one with sudoku.write_csv or download Sudoku-Extreme"
    return puzzle_csv.read_rows(path, "sudoku", _puzzle_from_row, hint)


def _puzzle_from_row(row: dict[str, str]) -> Puzzle:
    question = parse_grid(row["question"] or "")
    answer = parse_grid(row["answer"] or "")
    if answer.size != question.size:
        raise ValueError("sudoku: question and answer differ in size")
    if not is_solution(answer, question):
        raise ValueError("sudoku: answer is not a solution of the question")
    try:
        rating = int(row["rating"] or 0)
    except ValueError:
        raise ValueError(f"sudoku: rating {row['rating']!r} is not an integer") from None
    return Puzzle(row["source"] or "", question, answer, rating)


def write_csv(path: str | os.PathLike, puzzles: list[Puzzle]) -> None:
    """Write puzzles in the Sudoku-Extreme format atomically (a temp file, then a rename)."""
    puzzle_csv.write_rows(
        path,
        (
            (p.source, format_grid(p.question), format_grid(p.answer), int(p.rating))
            for p in puzzles
        ),
    )


# ----------------------------------------------------------------------------- tokens

PAD, BLANK = 0, 1


def to_tokens(grid: np.ndarray) -> np.ndarray:
    """Token ids: 0 pad (never produced here), 1 blank, 2..N+1 the digits 1..N."""
    return np.asarray(grid).astype(np.int64) + 1


def from_tokens(tokens: np.ndarray) -> np.ndarray:
    """Inverse of :func:`to_tokens`; pad tokens are an error."""
    tokens = np.asarray(tokens)
    if (tokens == PAD).any():
        raise ValueError("sudoku: pad token in a grid; strip padding before from_tokens")
    return (tokens - 1).astype(np.int8)
