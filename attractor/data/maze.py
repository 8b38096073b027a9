"""Mazes: the Maze-Hard text format, a seeded generator of hard mazes, BFS, CSV, augmentation.

Format (docs/method.md section 4.3). A maze is an N x N grid of characters, kept as a numpy
array of dtype `<U1` with shape (N, N):
  '#' wall   ' ' open   'S' start   'G' goal   'o' a path cell (answers only)
The question holds exactly one S and one G; its answer is the question with every cell of
the shortest S -> G path strictly between S and G set to 'o' (S and G keep their letters).
As text a grid is its N*N characters row by row (900 for the public 30 x 30 Maze-Hard files);
`pretty` prints it as N lines.

Path length (the CSV `rating`, and what the hard filter compares) is the number of moves of
the shortest path: the number of 'o' cells plus one.

Generator (`generate`). The grid's outer ring is wall. Inside it, "rooms" sit on a lattice at
odd offsets: room (i, j) is grid cell (o_r + 2i + 1, o_c + 2j + 1), with k = (N - 1) // 2 rooms
a side and the even grid cells between two rooms acting as the doors. An odd N fills the
interior exactly. An even N (30, 12) leaves one spare row and one spare column of wall; the
offsets o_r, o_c in {0, 1} are drawn at random, so the spare wall lands on either side (the
8 dihedral augmentations move it anyway). The rooms are carved into a perfect maze by
randomised depth-first search (long winding corridors, so path length grows with the area).
Then a fraction `loops` (default 0.02, at least one door) of the doors that DFS left shut is
opened, so the maze has cycles and the shortest path is not the only path; a few doors are
enough, since each shortcut in a DFS maze cuts paths a lot (at 30 x 30, loops = 0.1 halves
the mean path and almost no pair passes the hard filter). S and G are two distinct open
cells drawn uniformly; the pair is kept when the shortest path is longer than `min_path` and
is the only shortest path (so the answer is well defined and commutes with the
augmentations); otherwise a new pair is drawn, and after `pairs_per_maze` failed pairs a new
maze is carved (up to `max_mazes`, then a ValueError: the threshold is out of reach).

Hard threshold. Maze-Hard keeps 30 x 30 mazes with a shortest path longer than 110. In a
DFS maze the S -> G path follows long corridors and its length grows with the number of open
cells, that is with the interior area (N - 2)^2, not with the side N. So the threshold is
scaled by interior area: `hard_threshold(N) = round(110 * ((N - 2) / 28) ** 2)` (8 -> 5,
12 -> 14, 16 -> 28, 20 -> 45, 30 -> 110). Measured on 400 random (S, G) pairs of perfect
mazes, the fraction that passes stays level across sizes (0.43, 0.44, 0.39, 0.37, 0.31 at
8, 12, 16, 20, 30), while scaling by the side (110 N / 30) lets none pass below 16 x 16.
With the default loops the pass rate is 0.47 .. 0.17. `benchmarks/puzzle_generation.py`
times the generator (1000 mazes in 0.8 s at 12 x 12 and 11 s at 30 x 30, one CPU core of
the development machine).

Tokens (the HRM / Maze-Hard table): 0 pad, 1 '#', 2 ' ', 3 'S', 4 'G', 5 'o'.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from attractor.data import puzzle_csv

CHARSET = "# SGo"
WALL, OPEN, START, GOAL, PATH = CHARSET
PAD_TOKEN = 0
TOKENS = {ch: i + 1 for i, ch in enumerate(CHARSET)}  # '#' 1, ' ' 2, 'S' 3, 'G' 4, 'o' 5
CSV_COLUMNS = ("source", "question", "answer", "rating")
HARD_PATH_30 = 110  # Maze-Hard: shortest path longer than 110 moves at 30 x 30
DEFAULT_LOOPS = 0.02
_STEPS = ((-1, 0), (1, 0), (0, -1), (0, 1))

Grid = np.ndarray  # (N, N) of dtype <U1


@dataclass
class Maze:
    """One maze: question and answer grids (N, N) of characters, rating = path length."""

    source: str
    question: np.ndarray
    answer: np.ndarray
    rating: int

    @property
    def size(self) -> int:
        """The side N of the grid."""
        return int(self.question.shape[0])


# ----------------------------------------------------------------------------- text format


def parse_maze(text: str, size: int | None = None) -> Grid:
    """Read an N*N-character maze string (newlines ignored) into an (N, N) grid; N inferred."""
    flat = text.replace("\r", "").replace("\n", "")
    n = len(flat)
    if size is None:
        size = math.isqrt(n)
        if size * size != n or size < 2:
            raise ValueError(
                f"maze: expected N*N characters for an N x N grid (900 for 30 x 30), got {n}"
            )
    elif n != size * size:
        raise ValueError(f"maze: expected {size * size} characters for {size} x {size}, got {n}")
    for i, ch in enumerate(flat):
        if ch not in CHARSET:
            raise ValueError(
                f"maze: bad character {ch!r} at position {i} (row {i // size}, column "
                f"{i % size}); use '#' wall, ' ' open, 'S' start, 'G' goal, 'o' path"
            )
    for mark, name in ((START, "start"), (GOAL, "goal")):
        count = flat.count(mark)
        if count != 1:
            raise ValueError(f"maze: expected exactly one {mark!r} ({name}), found {count}")
    return np.array(list(flat), dtype="<U1").reshape(size, size)


def format_maze(grid: Grid) -> str:
    """The grid as one N*N-character string, row by row (the CSV form)."""
    return "".join(np.asarray(grid).reshape(-1).tolist())


def pretty(grid: Grid) -> str:
    """The grid as N lines of N characters."""
    return "\n".join("".join(row) for row in np.asarray(grid).tolist())


def _find(grid: Grid, mark: str) -> tuple[int, int]:
    where = np.argwhere(grid == mark)
    if len(where) != 1:
        raise ValueError(f"maze: expected exactly one {mark!r}, found {len(where)}")
    return int(where[0, 0]), int(where[0, 1])


# ----------------------------------------------------------------------------- shortest path


def _bfs(open_: np.ndarray, start: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """BFS from start over open cells: (distance, number of shortest paths capped at 2); -1 far."""
    n_rows, n_cols = open_.shape
    dist = np.full(open_.shape, -1, dtype=np.int64)
    ways = np.zeros(open_.shape, dtype=np.int64)
    dist_l, ways_l, ok = dist.tolist(), ways.tolist(), open_.tolist()
    r0, c0 = start
    dist_l[r0][c0], ways_l[r0][c0] = 0, 1
    queue = deque([start])
    while queue:
        r, c = queue.popleft()
        d, w = dist_l[r][c] + 1, ways_l[r][c]
        for dr, dc in _STEPS:
            rr, cc = r + dr, c + dc
            if 0 <= rr < n_rows and 0 <= cc < n_cols and ok[rr][cc]:
                if dist_l[rr][cc] < 0:
                    dist_l[rr][cc], ways_l[rr][cc] = d, w
                    queue.append((rr, cc))
                elif dist_l[rr][cc] == d:
                    ways_l[rr][cc] = min(2, ways_l[rr][cc] + w)
    return np.array(dist_l, dtype=np.int64), np.array(ways_l, dtype=np.int64)


def _walk_back(dist: np.ndarray, goal: tuple[int, int]) -> list[tuple[int, int]]:
    """A shortest path start -> goal read back from BFS distances (first neighbour in _STEPS)."""
    path = [goal]
    r, c = goal
    while dist[r, c] > 0:
        for dr, dc in _STEPS:
            rr, cc = r + dr, c + dc
            inside = 0 <= rr < dist.shape[0] and 0 <= cc < dist.shape[1]
            if inside and dist[rr, cc] == dist[r, c] - 1:
                r, c = rr, cc
                break
        path.append((r, c))
    return path[::-1]


def shortest_path(question: Grid) -> list[tuple[int, int]] | None:
    """A shortest S -> G path (BFS, 4-neighbour, '#' blocks) as [(row, col)], S first; None."""
    grid = np.asarray(question)
    start, goal = _find(grid, START), _find(grid, GOAL)
    dist, _ = _bfs(grid != WALL, start)
    if dist[goal] < 0:
        return None
    return _walk_back(dist, goal)


def _paint(question: Grid, path: list[tuple[int, int]]) -> Grid:
    answer = np.array(question, copy=True)
    for r, c in path[1:-1]:
        answer[r, c] = PATH
    return answer


def answer_for(question: Grid) -> Grid:
    """The question with the cells of a shortest S -> G path (S, G excluded) set to 'o'."""
    path = shortest_path(question)
    if path is None:
        raise ValueError("maze: no path from 'S' to 'G'; the goal is walled off")
    return _paint(question, path)


# ----------------------------------------------------------------------------- generator


def hard_threshold(size: int) -> int:
    """Maze-Hard's rule (path > 110 at 30 x 30) scaled by interior area: 110 ((N-2)/28)^2."""
    return round(HARD_PATH_30 * ((size - 2) / 28) ** 2)


def _carve(size: int, rng: np.random.Generator, loops: float) -> np.ndarray:
    """Open cells (N, N) bool of a DFS maze on the odd lattice, plus a fraction of extra doors."""
    k = (size - 1) // 2  # rooms a side
    off_r, off_c = (int(x) for x in rng.integers(0, 2 - size % 2, size=2))
    open_ = np.zeros((size, size), dtype=bool)
    seen = [[False] * k for _ in range(k)]
    i, j = int(rng.integers(k)), int(rng.integers(k))
    seen[i][j] = True
    open_[off_r + 2 * i + 1, off_c + 2 * j + 1] = True
    stack = [(i, j)]
    while stack:
        i, j = stack[-1]
        nexts = [
            (i + di, j + dj)
            for di, dj in _STEPS
            if 0 <= i + di < k and 0 <= j + dj < k and not seen[i + di][j + dj]
        ]
        if not nexts:
            stack.pop()
            continue
        ni, nj = nexts[int(rng.integers(len(nexts)))]
        seen[ni][nj] = True
        open_[off_r + 2 * ni + 1, off_c + 2 * nj + 1] = True
        open_[off_r + i + ni + 1, off_c + j + nj + 1] = True  # the door between them
        stack.append((ni, nj))
    if loops > 0:
        _open_doors(open_, k, off_r, off_c, rng, loops)
    return open_


def _open_doors(
    open_: np.ndarray, k: int, off_r: int, off_c: int, rng: np.random.Generator, loops: float
) -> None:
    """Open a fraction `loops` of the shut doors between neighbouring rooms (in place)."""
    doors = [(off_r + 2 * i + 1, off_c + 2 * j + 2) for i in range(k) for j in range(k - 1)]
    doors += [(off_r + 2 * i + 2, off_c + 2 * j + 1) for i in range(k - 1) for j in range(k)]
    shut = [d for d in doors if not open_[d]]
    n_open = min(len(shut), math.ceil(loops * len(shut)))  # at least one door when loops > 0
    if n_open:
        for idx in rng.choice(len(shut), size=n_open, replace=False):
            open_[shut[int(idx)]] = True


def generate(
    size: int,
    rng: np.random.Generator,
    min_path: int | None = None,
    *,
    loops: float = DEFAULT_LOOPS,
    pairs_per_maze: int = 20,
    max_mazes: int = 1000,
) -> tuple[Grid, Grid, int]:
    """One N x N maze whose unique shortest S -> G path is longer than `min_path` moves.

    `min_path` defaults to `hard_threshold(size)`; returns (question, answer, path length).
    Raises ValueError when none of `max_mazes` carved mazes has such a pair (a threshold
    below the longest path can still be out of reach once doors make the paths non-unique).
    """
    if size < 5:
        raise ValueError(f"maze: size must be at least 5, got {size}")
    if not 0.0 <= loops <= 1.0:
        raise ValueError(f"maze: loops is a fraction of shut doors in [0, 1], got {loops}")
    threshold = hard_threshold(size) if min_path is None else int(min_path)
    k = (size - 1) // 2
    longest = 2 * k * k - 2  # a Hamiltonian corridor through every room and door
    if threshold >= longest:
        raise ValueError(
            f"maze: min_path {threshold} is out of reach at {size} x {size} "
            f"(the longest possible path is {longest} moves); lower min_path"
        )
    for _ in range(max_mazes):
        open_ = _carve(size, rng, loops)
        cells = np.argwhere(open_)
        for _ in range(pairs_per_maze):
            a, b = rng.choice(len(cells), size=2, replace=False)
            start = (int(cells[a, 0]), int(cells[a, 1]))
            goal = (int(cells[b, 0]), int(cells[b, 1]))
            dist, ways = _bfs(open_, start)
            if dist[goal] > threshold and ways[goal] == 1:
                question = np.where(open_, OPEN, WALL).astype("<U1")
                question[start], question[goal] = START, GOAL
                answer = _paint(question, _walk_back(dist, goal))
                return question, answer, int(dist[goal])
    raise ValueError(
        f"maze: no S -> G pair with a unique shortest path longer than {threshold} moves in "
        f"{max_mazes} mazes of {size} x {size} (loops {loops}); lower min_path or loops"
    )


def generate_many(
    n: int,
    size: int,
    seed: int,
    min_path: int | None = None,
    *,
    loops: float = DEFAULT_LOOPS,
    source: str | None = None,
) -> list[Maze]:
    """`n` hard mazes from one seed (same seed, same mazes); source defaults to 'gen{N}-s{seed}'."""
    rng = np.random.default_rng(seed)
    source = f"gen{size}-s{seed}" if source is None else source
    mazes = []
    for _ in range(n):
        question, answer, length = generate(size, rng, min_path, loops=loops)
        mazes.append(Maze(source, question, answer, length))
    return mazes


# ----------------------------------------------------------------------------- CSV


def write_csv(path: str | Path, mazes: list[Maze]) -> None:
    """Write `source,question,answer,rating` rows atomically (temp file, then rename)."""
    puzzle_csv.write_rows(
        path,
        ((m.source, format_maze(m.question), format_maze(m.answer), int(m.rating)) for m in mazes),
    )


def _check_pair(question: Grid, answer: Grid) -> None:
    if question.shape != answer.shape:
        raise ValueError(f"answer is {answer.shape[0]} x {answer.shape[0]}, question is not")
    if (question == PATH).any():
        raise ValueError("the question holds 'o' path cells; only answers may")
    cleared = np.where(answer == PATH, OPEN, answer)
    if not (cleared == question).all():
        raise ValueError("the answer differs from the question in cells other than 'o' path cells")


def read_csv(path: str | Path) -> list[Maze]:
    """Read a `source,question,answer,rating` CSV (the Maze-Hard format) into Mazes."""
    hint = "write one with write_csv or `generate_many`"
    return puzzle_csv.read_rows(path, "maze", _maze_from_row, hint)


def _maze_from_row(row: dict[str, str]) -> Maze:
    question = parse_maze(row["question"] or "")
    answer = parse_maze(row["answer"] or "", size=question.shape[0])
    _check_pair(question, answer)
    return Maze(row["source"] or "", question, answer, int(float(row["rating"])))


# ----------------------------------------------------------------------------- augmentation


def dihedral(grid: np.ndarray, k: int) -> np.ndarray:
    """The k-th of the 8 symmetries of the square (k in 0..7): rot90 k % 4 times, then
    transpose if k >= 4. Acts on the last two axes, so batches and token grids work too."""
    if not 0 <= k < 8:
        raise ValueError(f"maze: dihedral index must be in 0..7, got {k}")
    out = np.rot90(np.asarray(grid), k % 4, axes=(-2, -1))
    if k >= 4:
        out = np.swapaxes(out, -2, -1)
    return np.ascontiguousarray(out)


def augment(question: Grid, answer: Grid, rng: np.random.Generator) -> tuple[Grid, Grid]:
    """The same random dihedral transform applied to question and answer."""
    k = int(rng.integers(8))
    return dihedral(question, k), dihedral(answer, k)


# ----------------------------------------------------------------------------- tokens


def to_tokens(grid: Grid) -> np.ndarray:
    """Characters to int64 tokens: '#' 1, ' ' 2, 'S' 3, 'G' 4, 'o' 5 (0 is padding)."""
    grid = np.asarray(grid)
    tokens = np.zeros(grid.shape, dtype=np.int64)
    for ch, tok in TOKENS.items():
        tokens[grid == ch] = tok
    if (tokens == PAD_TOKEN).any():
        bad = grid[tokens == PAD_TOKEN][0]
        raise ValueError(f"maze: bad character {str(bad)!r}; expected one of {CHARSET!r}")
    return tokens


def from_tokens(tokens: np.ndarray) -> Grid:
    """Tokens 1..5 back to characters (the inverse of `to_tokens`)."""
    tokens = np.asarray(tokens)
    if tokens.size and (tokens.min() < 1 or tokens.max() > len(CHARSET)):
        bad = tokens[(tokens < 1) | (tokens > len(CHARSET))][0]
        raise ValueError(f"maze: token {int(bad)} is not a maze character (1..{len(CHARSET)})")
    return np.array(list(CHARSET), dtype="<U1")[tokens - 1]
