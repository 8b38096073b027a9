"""`attractor solve sudoku "<grid>"` and `attractor solve maze FILE`: the exact solvers, or
with `--model DIR` a trained grid model (`attractor.models.grid`).

With a model the puzzle runs through every supervision step (`grid_metrics.supervise`)
and the answer is the argmax of the last step's logits, shown as predicted (givens included:
a model that overwrites a given is shown doing so). It is valid when it is a solution that
keeps the givens (Sudoku), or paints a shortest S -> G path and changes nothing else (maze).
`--trace` shows the grid after each solver iteration of the first supervision step (the
model run with depth = 0, 1, ..., T_max) and after each supervision step, `*` marking the
cells that changed since the line before.

Bad input (a wrong length, a wrong character, conflicting givens, an unsolvable grid, a
missing file, a maze without a path, a model for another puzzle size) gets one line on
stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from attractor.data import maze, sudoku
from attractor.eval.loading import check_grid_fits, default_device, load_model
from attractor.models.grid import GridModel, GridOutput
from attractor.models.grid_metrics import supervise

# ----------------------------------------------------------------------------- the model


def load_grid_model(directory: str, kind: str, side: int) -> GridModel:
    """The checkpoint in `directory`, in eval mode, checked to fit side x side puzzles."""
    model = load_model(directory, default_device())
    check_grid_fits(model, kind, side, "the puzzle")
    return model


def _inputs(model: GridModel, tokens: np.ndarray) -> torch.Tensor:
    device = next(model.parameters()).device
    return torch.from_numpy(np.asarray(tokens, dtype=np.int64).reshape(1, -1)).to(device)


def _argmax(out: GridOutput) -> np.ndarray:
    """The predicted tokens of the first (only) puzzle, (L,)."""
    return out.logits[0].argmax(dim=-1).cpu().numpy()


@dataclass
class Board:
    """How one puzzle is shown: tokens -> grid, a drawing with changes marked, the answer."""

    decode: Callable[[np.ndarray], np.ndarray]
    draw: Callable[[np.ndarray, np.ndarray | None], list[str]]
    solution: np.ndarray


def sudoku_from_prediction(tokens: np.ndarray) -> np.ndarray:
    """Predicted tokens -> a flat grid, as predicted: a pad or blank token is 0 (no digit)."""
    tokens = np.asarray(tokens).reshape(-1)
    return np.where(tokens == sudoku.PAD, 0, tokens - 1).astype(np.int8)


def maze_from_prediction(tokens: np.ndarray, n: int) -> np.ndarray:
    """Predicted tokens -> an (n, n) character grid; '?' for a token that is no maze cell."""
    tokens = np.asarray(tokens).reshape(n, n)
    chars = np.array(["?", *maze.CHARSET], dtype="<U1")
    return chars[np.where(tokens <= len(maze.CHARSET), tokens, 0)]


def draw_sudoku(grid: np.ndarray, prev: np.ndarray | None) -> list[str]:
    """Rows of digits ('.' none), boxes split by '|', '*' after a cell that changed."""
    shape = sudoku.shape_for_length(grid.size)
    n, bc = shape.n, shape.box_cols
    lines = []
    for r in range(n):
        chunks = []
        for c0 in range(0, n, bc):
            cells = []
            for i in range(r * n + c0, r * n + c0 + bc):
                mark = "*" if prev is not None and grid[i] != prev[i] else " "
                cells.append((str(int(grid[i])) if grid[i] else ".") + mark)
            chunks.append("".join(cells))
        lines.append("| ".join(chunks).rstrip())
    return lines


def draw_maze(grid: np.ndarray, prev: np.ndarray | None) -> list[str]:
    """The grid's rows; a cell newly painted 'o' shows '*', a cell no longer painted '.'."""
    shown = np.array(grid, copy=True)
    if prev is not None:
        shown[(grid == maze.PATH) & (prev != maze.PATH)] = "*"
        shown[(grid != maze.PATH) & (prev == maze.PATH)] = "."
    return maze.pretty(shown).splitlines()


def _print_frames(title: str, frames: list[tuple[str, np.ndarray, str]], board: Board) -> None:
    """Each frame's header (cells right, cells changed, a note) and its grid when it changed."""
    print(title)
    prev = None
    for label, grid, note in frames:
        head = f"{label}: {int((grid == board.solution).sum())}/{grid.size} right"
        changed = None if prev is None else int((grid != prev).sum())
        if changed is not None:
            head += ", no change" if changed == 0 else f", {changed} changed"
        print(head + (f", {note}" if note else ""))
        if changed != 0:
            print("\n".join("  " + line for line in board.draw(grid, prev)))
        prev = grid


def trace_solver(model: GridModel, inputs: torch.Tensor, board: Board) -> None:
    """The first supervision step cut to 0, 1, ..., T_max solver iterations (TRM: cycles)."""
    if model.depth_unit is None:
        print(f"(a {model.kind} model has no solver iterations to trace)")
        return
    t_max = model.max_depth()
    unit = "cycle" if model.depth_unit == "cycles" else "iter"
    frames = []
    with torch.no_grad():
        for t in range(t_max + 1):
            out = model(inputs, depth=t)
            note = ""
            if out.solver is not None and out.solver.trace:
                note = f"residual {out.solver.trace[-1]:.2e}"
            frames.append((f"{unit} {t}/{t_max}", board.decode(_argmax(out)), note))
    _print_frames(f"supervision step 1, by solver {unit} (* changed):", frames, board)


def trace_steps(outs: list[GridOutput], board: Board) -> None:
    """The answer after each supervision step, with its halting logit."""
    frames = []
    for k, out in enumerate(outs):
        note = f"halt logit {float(out.halt_logits[0]):+.2f}"
        if out.solver is not None:
            note += f", {out.solver.iters} iters"
        frames.append((f"step {k + 1}/{len(outs)}", board.decode(_argmax(out)), note))
    _print_frames("supervision steps (* changed):", frames, board)


def run_model(
    model: GridModel, tokens: np.ndarray, board: Board, directory: str, trace: bool
) -> np.ndarray:
    """Print the model line (and the trace); the decoded answer of the last supervision step."""
    inputs = _inputs(model, tokens)
    outs = supervise(model, inputs)
    layout = model.layout()
    steps = f"{len(outs)} supervision step{'s' if len(outs) > 1 else ''}"
    print(f"model: {layout} ({directory}), {steps}")
    if trace:
        trace_solver(model, inputs, board)
        trace_steps(outs, board)
    halts = [k for k, out in enumerate(outs) if float(out.halt_logits[0]) > 0]
    if halts:
        print(f"halting: step {halts[0] + 1} of {len(outs)} (halting logit > 0)")
    else:
        print(f"halting: never (halting logit <= 0 at every one of {len(outs)} steps)")
    return board.decode(_argmax(outs[-1]))


# ----------------------------------------------------------------------------- Sudoku


def _cell_names(cells: np.ndarray, n: int) -> str:
    return ", ".join(f"r{c // n + 1}c{c % n + 1}" for c in cells.tolist())


def _sudoku_model_report(answer: np.ndarray, grid: np.ndarray, solution: np.ndarray) -> None:
    n = sudoku.shape_for_length(grid.size).n
    givens = np.flatnonzero(grid)
    changed = givens[answer[givens] != grid[givens]]
    if len(changed):
        shown = ", ".join(f"r{c // n + 1}c{c % n + 1} {grid[c]}->{answer[c]}" for c in changed)
        print(f"givens changed by the model: {len(changed)} of {len(givens)} ({shown})")
    else:
        print(f"givens kept: {len(givens)} of {len(givens)}")
    empty = np.flatnonzero((answer < 1) | (answer > n))
    if len(empty):
        print(f"cells without a digit 1-{n}: {len(empty)} ({_cell_names(empty, n)})")
    print(f"cells matching the exact solution: {int((answer == solution).sum())} of {grid.size}")


def _solve_sudoku(args: argparse.Namespace) -> int:
    grid = sudoku.parse_grid(args.grid)
    result = sudoku.solve(grid, limit=2)
    if not result.solutions:
        raise ValueError("sudoku: no solution: the givens contradict each other; check the grid")
    answer = result.solutions[0]
    n = sudoku.shape_for_length(grid.size).n
    model = None if args.model is None else load_grid_model(args.model, "sudoku", n)
    print(f"puzzle ({n}x{n}, {int((grid != 0).sum())} givens):")
    print(sudoku.pretty(grid))
    if model is not None:
        board = Board(sudoku_from_prediction, draw_sudoku, answer)
        answer = run_model(model, sudoku.to_tokens(grid), board, args.model, args.trace)
    elif args.trace:
        propagated = sudoku.propagated(grid)
        print(f"after propagation ({int((propagated == 0).sum())} cells open):")
        print(sudoku.pretty(propagated))
        print(f"guesses: {result.guesses}")
    print("answer:")
    print(sudoku.pretty(answer))
    if model is not None:
        _sudoku_model_report(answer, grid, result.solutions[0])
    else:
        print(f"backtracks (rating): {result.backtracks}")
    if not result.unique:
        print("solutions: more than one (the exact answer is the first found)")
    print(f"valid: {'yes' if sudoku.is_solution(answer, grid) else 'no'}")
    return 0


# ----------------------------------------------------------------------------- mazes


def maze_verdict(question: np.ndarray, answer: np.ndarray) -> tuple[bool, str]:
    """Whether `answer` paints a shortest S -> G path of `question` with 'o' and changes no
    other cell: (valid, why)."""
    moves = len(maze.shortest_path(question)) - 1
    painted = answer == maze.PATH
    if not np.array_equal(np.where(painted, maze.OPEN, answer), question):
        wrong = int((np.where(painted, maze.OPEN, answer) != question).sum())
        return False, f"{wrong} cells off the path differ from the maze"
    walkable = painted | (question == maze.START) | (question == maze.GOAL)
    path = maze.shortest_path(np.where(walkable, answer, maze.WALL))
    if path is None:
        return False, f"the {int(painted.sum())} painted cells do not connect S to G"
    if len(path) - 1 != moves:
        return False, f"the painted path has {len(path) - 1} moves, the shortest {moves}"
    extra = int(painted.sum()) - (moves - 1)
    if extra:
        return False, f"a shortest path plus {extra} painted cells off it"
    return True, f"a shortest path, {moves} moves"


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
    model = None if args.model is None else load_grid_model(args.model, "maze", n)
    print(f"maze ({n}x{n}):")
    print(maze.pretty(question))
    if model is not None:
        board = Board(lambda t: maze_from_prediction(t, n), draw_maze, answer)
        answer = run_model(model, maze.to_tokens(question), board, args.model, args.trace)
    elif args.trace:
        print(f"hard threshold at {n}x{n}: path longer than {maze.hard_threshold(n)}")
    print("answer:")
    print(maze.pretty(answer))
    print(f"shortest path: {length} moves")
    if model is not None:
        valid, why = maze_verdict(question, answer)
        print(f"valid: {'yes' if valid else 'no'} ({why})")
    return 0


# ----------------------------------------------------------------------------- command line


def run(args: argparse.Namespace) -> int:
    """Dispatch to the puzzle's solver; bad input is one line on stderr and exit code 2."""
    try:
        return _solve_sudoku(args) if args.puzzle == "sudoku" else _solve_maze(args)
    except (ValueError, OSError) as err:
        print(f"attractor solve: {err}", file=sys.stderr)
        return 2
