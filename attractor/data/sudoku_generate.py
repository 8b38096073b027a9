"""Sudoku puzzles made here: random full grids, unique puzzles in a difficulty band, and
the validity-preserving augmentations (digits, bands and rows, stacks and columns,
transposition) that training draws from.

Difficulty is the solver's rating (`attractor.data.sudoku.rate`): the backtracks of an
exhaustive search. Every puzzle made here has exactly one solution.
"""

from __future__ import annotations

import multiprocessing

import numpy as np

from attractor.data.sudoku import Search, SudokuShape, candidate_masks, rate, shape_of

# ----------------------------------------------------------------------------- generator


def random_solution(shape: SudokuShape, rng: np.random.Generator) -> np.ndarray:
    """A uniformly shuffled full grid: the solver run on an empty grid with random digit order."""
    search = Search(shape, 1, rng)
    search.start([search.full] * shape.cells)
    return search.grids()[0]


def _still_unique(search_shape: SudokuShape, puzzle: np.ndarray, cell: int, digit: int) -> bool:
    """Whether ``puzzle`` with ``cell`` blanked has only its old solution: no grid has another
    digit at ``cell``."""
    search = Search(search_shape, 1)
    cands = candidate_masks(puzzle, search.full)
    cands[cell] = search.full & ~(1 << (digit - 1))
    search.start(cands)
    return not search.solutions


def _carve(
    shape: SudokuShape,
    solution: np.ndarray,
    rng: np.random.Generator,
    band: tuple[int, int | None],
    max_givens: int | None,
    minimal: bool,
) -> tuple[np.ndarray, int] | None:
    """Remove givens in random order keeping uniqueness; the puzzle and rating, or None."""
    lo, hi = band
    puzzle = solution.copy()
    givens = shape.cells
    for cell in rng.permutation(shape.cells).tolist():
        digit = int(puzzle[cell])
        puzzle[cell] = 0
        if not _still_unique(shape, puzzle, cell, digit):
            puzzle[cell] = digit
            continue
        givens -= 1
        if not minimal and max_givens is not None and givens <= max_givens:
            rating = rate(puzzle)
            if rating >= lo and (hi is None or rating <= hi):
                return puzzle, rating
    if max_givens is not None and givens > max_givens:
        return None
    rating = rate(puzzle)
    if rating < lo or (hi is not None and rating > hi):
        return None
    return puzzle, rating


def generate(
    shape: SudokuShape,
    rng: np.random.Generator | int,
    min_backtracks: int = 0,
    max_backtracks: int | None = None,
    max_givens: int | None = None,
    minimal: bool = False,
    max_tries: int = 10_000,
) -> tuple[np.ndarray, np.ndarray, int]:
    """A unique-solution puzzle in the band: returns (puzzle, solution, rating).

    A random full grid is made, then givens are removed in random order, each removal kept only
    when the puzzle stays unique. One such pass already ends at a minimal puzzle (removing a
    given never restores uniqueness), so ``minimal=True`` means: always finish the pass. With
    ``minimal=False`` and ``max_givens`` set, the pass stops at the first puzzle with at most
    ``max_givens`` givens whose rating is in ``[min_backtracks, max_backtracks]``. A puzzle
    outside the band is thrown away and a new grid tried, up to ``max_tries`` times.
    """
    rng = np.random.default_rng(rng)
    for _ in range(max_tries):
        solution = random_solution(shape, rng)
        found = _carve(shape, solution, rng, (min_backtracks, max_backtracks), max_givens, minimal)
        if found is not None:
            return found[0], solution, found[1]
    raise RuntimeError(
        f"sudoku: no {shape.n}x{shape.n} puzzle with rating in "
        f"[{min_backtracks}, {max_backtracks}] and <= {max_givens} givens after {max_tries} "
        "tries; widen the band"
    )


def _generate_seeded(args: tuple) -> tuple[np.ndarray, np.ndarray, int]:
    seed, shape, kwargs = args
    return generate(shape, np.random.default_rng(seed), **kwargs)


def generate_many(
    n: int,
    shape: SudokuShape,
    seed: int = 0,
    workers: int = 1,
    **kwargs,
) -> list[tuple[np.ndarray, np.ndarray, int]]:
    """``n`` puzzles from :func:`generate`, each with its own child seed of ``seed``.

    The result depends only on (n, shape, seed, kwargs), not on ``workers``: puzzle i always
    comes from ``SeedSequence(seed).spawn(n)[i]``.
    """
    seeds = np.random.SeedSequence(seed).spawn(n)
    jobs = [(s, shape, kwargs) for s in seeds]
    if workers <= 1 or n < 2:
        return [_generate_seeded(job) for job in jobs]
    methods = multiprocessing.get_all_start_methods()
    ctx = multiprocessing.get_context("fork" if "fork" in methods else None)
    with ctx.Pool(workers) as pool:
        return pool.map(_generate_seeded, jobs, chunksize=max(1, n // (workers * 8)))


# ----------------------------------------------------------------------------- augmentation


def _line_order(groups: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """A permutation of groups * size lines that shuffles the groups and lines within each."""
    return np.concatenate([g * size + rng.permutation(size) for g in rng.permutation(groups)])


def augment(
    puzzle: np.ndarray,
    solution: np.ndarray,
    rng: np.random.Generator,
    shape: SudokuShape | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Apply one random validity-preserving transform to both grids (docs/method.md section 4.3).

    Digits are permuted; bands (groups of box_rows rows) and the rows within each band are
    permuted; stacks and the columns within each stack are permuted; and, for square boxes
    only, the grid is transposed with probability 1/2.
    """
    puzzle, solution = np.asarray(puzzle), np.asarray(solution)
    flat_shape = puzzle.shape
    shape = shape_of(puzzle.reshape(-1), shape)
    n = shape.n
    digits = np.concatenate([[0], 1 + rng.permutation(n)]).astype(puzzle.dtype)
    rows = _line_order(n // shape.box_rows, shape.box_rows, rng)
    cols = _line_order(n // shape.box_cols, shape.box_cols, rng)
    transpose = shape.box_rows == shape.box_cols and bool(rng.integers(2))

    def apply(grid: np.ndarray) -> np.ndarray:
        g = digits[grid.reshape(n, n)][rows][:, cols]
        return (g.T if transpose else g).copy().reshape(flat_shape)

    return apply(puzzle), apply(solution)
