"""`attractor solve sudoku "<grid>"` and `attractor solve maze FILE`: the exact solvers.

Bad input (a wrong length, a wrong character, conflicting givens, an unsolvable grid, a
missing file, a maze without a path) gets one line on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from attractor.data import maze, sudoku

NO_MODEL = "--model: not available yet: the puzzle models arrive with the reasoner"


def _solve_sudoku(args: argparse.Namespace) -> int:
    grid = sudoku.parse_grid(args.grid)
    result = sudoku.solve(grid, limit=2)
    if not result.solutions:
        raise ValueError("sudoku: no solution: the givens contradict each other; check the grid")
    answer = result.solutions[0]
    n = sudoku.shape_for_length(grid.size).n
    print(f"puzzle ({n}x{n}, {int((grid != 0).sum())} givens):")
    print(sudoku.pretty(grid))
    if args.trace:
        propagated = sudoku.propagated(grid)
        print(f"after propagation ({int((propagated == 0).sum())} cells open):")
        print(sudoku.pretty(propagated))
        print(f"guesses: {result.guesses}")
    print("answer:")
    print(sudoku.pretty(answer))
    print(f"backtracks (rating): {result.backtracks}")
    if not result.unique:
        print("solutions: more than one (the answer shown is the first found)")
    print(f"valid: {'yes' if sudoku.is_solution(answer, grid) else 'no'}")
    return 0


def _solve_maze(args: argparse.Namespace) -> int:
    path = Path(args.file)
    if not path.is_file():
        raise ValueError(f"maze: no such file {path}; give a file with the maze as N lines")
    text = path.read_text(encoding="utf-8").rstrip("\r\n")
    question = maze.parse_maze(text)
    question = np.where(question == maze.PATH, maze.OPEN, question)  # a solved maze is fine too
    answer = maze.answer_for(question)
    length = int((answer == maze.PATH).sum()) + 1
    n = question.shape[0]
    print(f"maze ({n}x{n}):")
    print(maze.pretty(question))
    if args.trace:
        print(f"hard threshold at {n}x{n}: path longer than {maze.hard_threshold(n)}")
    print("answer:")
    print(maze.pretty(answer))
    print(f"shortest path: {length} moves")
    return 0


def _run(args: argparse.Namespace) -> int:
    """Dispatch to the puzzle's solver; bad input is one line on stderr and exit code 2."""
    try:
        if args.model is not None:
            raise ValueError(NO_MODEL)
        return _solve_sudoku(args) if args.puzzle == "sudoku" else _solve_maze(args)
    except (ValueError, OSError) as err:
        print(f"attractor solve: {err}", file=sys.stderr)
        return 2


def add_solve_parser(sub: argparse._SubParsersAction) -> None:
    """Register `attractor solve sudoku GRID` and `attractor solve maze FILE`."""
    p = sub.add_parser("solve", help="solve a Sudoku or a maze exactly and print the answer")
    kinds = p.add_subparsers(dest="puzzle", metavar="PUZZLE", required=True)
    s = kinds.add_parser("sudoku", help='a grid of 16, 36 or 81 characters, "." or "0" blank')
    s.add_argument("grid", help="the puzzle row by row, e.g. 53..7....6..195... (81 for 9x9)")
    m = kinds.add_parser("maze", help="a file holding an N x N maze over '# SG'")
    m.add_argument("file", help="N lines of N characters, or one N*N-character line")
    for q in (s, m):
        q.add_argument("--trace", action="store_true", help="show intermediate solver state")
        q.add_argument("--model", metavar="DIR", help="solve with a trained model (not yet)")
        q.set_defaults(run=_run)
