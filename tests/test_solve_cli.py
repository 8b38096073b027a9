import re

import numpy as np
import pytest

from attractor.cli import main
from attractor.data import maze, sudoku

CLASSIC = "53..7....6..195....98....6.8...6...34..8.3..17...2...6.6....28....419..5....8..79"
HARD = "8..........36......7..9.2...5...7.......457.....1...3...1....68..85...1..9....4.."


def _answer(out: str, n: int) -> np.ndarray:
    """The grid printed after 'answer:'."""
    block = out.split("answer:\n", 1)[1].splitlines()
    digits = "".join(ch for line in block[: n + n // 2] for ch in line if ch.isdigit())
    return sudoku.parse_grid(digits[: n * n])


@pytest.mark.parametrize("grid", [CLASSIC, HARD])
def test_solves_9x9(capsys, grid):
    assert main(["solve", "sudoku", grid]) == 0
    out = capsys.readouterr().out
    assert "valid: yes" in out
    assert sudoku.is_solution(_answer(out, 9), sudoku.parse_grid(grid))
    rating = int(re.search(r"backtracks \(rating\): (\d+)", out).group(1))
    assert rating == sudoku.rate(sudoku.parse_grid(grid))


@pytest.mark.parametrize("shape", [sudoku.SudokuShape(2, 3), sudoku.SudokuShape(2, 2)])
def test_solves_6x6_and_4x4_with_zero_blanks(capsys, shape):
    question, _, _ = sudoku.generate(shape, 0)
    text = sudoku.format_grid(question, blank="0")
    assert main(["solve", "sudoku", text, "--trace"]) == 0
    out = capsys.readouterr().out
    assert f"({shape.n}x{shape.n}" in out and "valid: yes" in out
    assert "after propagation" in out and re.search(r"guesses: \d+", out)
    assert sudoku.is_solution(_answer(out, shape.n), question)


def test_trace_counts_guesses_on_a_hard_puzzle(capsys):
    assert main(["solve", "sudoku", HARD, "--trace"]) == 0
    out = capsys.readouterr().out
    assert int(re.search(r"guesses: (\d+)", out).group(1)) > 0


@pytest.fixture
def maze_file(tmp_path):
    m = maze.generate_many(1, 11, seed=0)[0]
    path = tmp_path / "maze.txt"
    path.write_text(maze.pretty(m.question) + "\n")
    return path, m


def test_solves_maze(capsys, maze_file):
    path, m = maze_file
    assert main(["solve", "maze", str(path)]) == 0
    out = capsys.readouterr().out
    assert f"shortest path: {m.rating} moves" in out
    assert maze.pretty(m.answer) in out


def test_maze_as_one_line(capsys, tmp_path, maze_file):
    _, m = maze_file
    path = tmp_path / "flat.txt"
    path.write_text(maze.format_maze(m.question))
    assert main(["solve", "maze", str(path), "--trace"]) == 0
    assert f"shortest path: {m.rating} moves" in capsys.readouterr().out


WALLED = "#####\n#S#G#\n#####\n#####\n#####\n"


@pytest.mark.parametrize(
    "argv, message",
    [
        (["sudoku", CLASSIC[:-1]], "expected 16, 36 or 81 cells, got 80"),
        (["sudoku", CLASSIC[:-1] + "x"], "bad character 'x'"),
        (["sudoku", "7" + CLASSIC[1:]], "conflicting givens"),
        (["sudoku", "12......" + "..3...4."], "no solution"),
        (["sudoku", CLASSIC, "--model", "runs/x"], "not available yet"),
        (["maze", "MISSING"], "no such file"),
        (["maze", "WALLED"], "no path"),
        (["maze", "BADCHAR"], "bad character"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(capsys, tmp_path, argv, message):
    files = {"MISSING": tmp_path / "nope.txt", "WALLED": tmp_path / "w.txt"}
    files["BADCHAR"] = tmp_path / "b.txt"
    files["WALLED"].write_text(WALLED)
    files["BADCHAR"].write_text(WALLED.replace("#S", "xS"))
    argv = [str(files.get(a, a)) for a in argv]
    assert main(["solve", *argv]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("attractor solve: ")
    assert message in lines[0]
