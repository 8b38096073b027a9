import re

import numpy as np
import pytest
import torch

from attractor.cli import main
from attractor.cli.solve import maze_from_prediction, maze_verdict, sudoku_from_prediction
from attractor.data import maze, sudoku, sudoku_generate
from attractor.models.grid_metrics import supervise
from attractor.models.pretrained import load_pretrained

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
    question, _, _ = sudoku_generate.generate(shape, 0)
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


BAD_PUZZLES = [
    (["sudoku", CLASSIC[:-1]], "expected 16, 36 or 81 cells, got 80"),
    (["sudoku", CLASSIC[:-1] + "x"], "bad character 'x'"),
    (["sudoku", "7" + CLASSIC[1:]], "conflicting givens"),
    (["sudoku", "12......" + "..3...4."], "no solution"),
    (["maze", "MISSING"], "no such file"),
    (["maze", "WALLED"], "no path"),
    (["maze", "BADCHAR"], "bad character"),
]


@pytest.mark.parametrize(
    "argv, message, with_model",
    [(*case, False) for case in BAD_PUZZLES]
    + [(*case, True) for case in BAD_PUZZLES]
    + [(["sudoku", CLASSIC, "--model", "NOMODEL"], "does not exist", False)],
)
def test_bad_input_is_one_line_and_exit_2(capsys, tmp_path, models, argv, message, with_model):
    files = {"MISSING": tmp_path / "nope.txt", "WALLED": tmp_path / "w.txt"}
    files["BADCHAR"] = tmp_path / "b.txt"
    files["NOMODEL"] = tmp_path / "no-model"
    files["WALLED"].write_text(WALLED)
    files["BADCHAR"].write_text(WALLED.replace("#S", "xS"))
    argv = [str(files.get(a, a)) for a in argv]
    if with_model:  # the puzzle is checked first, so the model's size does not matter
        argv += ["--model", str(models["sudoku6"])]
    assert main(["solve", *argv]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("attractor solve: ")
    assert message in lines[0]


# ----------------------------------------------------------------------------- with a model

SUDOKU6 = sudoku.format_grid(sudoku_generate.generate(sudoku.SudokuShape(2, 3), 0)[0])


@pytest.fixture(scope="module")
def models(tiny_reasoner, tmp_path_factory):
    root = tmp_path_factory.mktemp("grid_models")
    tiny_reasoner(6, 2, 3, 8).save_pretrained(root / "sudoku6")
    tiny_reasoner(11, 0, 0, 6).save_pretrained(root / "maze11")
    return {"sudoku6": root / "sudoku6", "maze11": root / "maze11"}


def _model_answer(directory, tokens):
    """What the saved model predicts after its last supervision step, (L,) tokens."""
    model = load_pretrained(directory).eval()
    outs = supervise(model, torch.from_numpy(tokens.reshape(1, -1)))
    return outs[-1].logits[0].argmax(dim=-1).numpy()


def _printed_sudoku(out, n):
    """The grid printed after 'answer:', '.' as 0."""
    rows = [line for line in out.split("answer:\n", 1)[1].splitlines() if "-" not in line]
    cells = [0 if t == "." else int(t) for row in rows[:n] for t in row.replace("|", " ").split()]
    return np.array(cells, dtype=np.int8)


def test_model_sudoku_prints_its_answer_and_validity(capsys, models):
    assert main(["solve", "sudoku", SUDOKU6, "--model", str(models["sudoku6"])]) == 0
    out = capsys.readouterr().out
    assert "model: reasoner" in out and "2 supervision steps" in out
    puzzle = sudoku.parse_grid(SUDOKU6)
    tokens = _model_answer(models["sudoku6"], sudoku.to_tokens(puzzle))
    expected = sudoku_from_prediction(tokens)
    assert np.array_equal(_printed_sudoku(out, 6), expected)  # givens as predicted, too
    valid = "yes" if sudoku.is_solution(expected, puzzle) else "no"
    assert re.findall(r"^valid: (yes|no)$", out, flags=re.M) == [valid]
    assert re.search(r"^(givens kept|givens changed by the model): ", out, flags=re.M)


def test_model_maze_prints_its_answer_and_validity(capsys, models, maze_file):
    path, m = maze_file
    assert main(["solve", "maze", str(path), "--model", str(models["maze11"])]) == 0
    out = capsys.readouterr().out
    tokens = _model_answer(models["maze11"], maze.to_tokens(m.question))
    expected = maze_from_prediction(tokens, 11)
    assert out.split("answer:\n", 1)[1].splitlines()[:11] == maze.pretty(expected).splitlines()
    valid, why = maze_verdict(m.question, expected)
    assert f"valid: {'yes' if valid else 'no'} ({why})" in out
    assert f"shortest path: {m.rating} moves" in out


def test_model_trace_shows_each_solver_iteration_and_supervision_step(capsys, models, maze_file):
    assert main(["solve", "sudoku", SUDOKU6, "--model", str(models["sudoku6"]), "--trace"]) == 0
    out = capsys.readouterr().out
    assert re.findall(r"^iter (\d)/3: \d+/36 right", out, flags=re.M) == ["0", "1", "2", "3"]
    assert re.findall(r"^step (\d)/2: \d+/36 right", out, flags=re.M) == ["1", "2"]
    # each frame that changed is drawn: 6 rows of 6 cells
    first = out.split("step 1/2:", 1)[1].splitlines()[1:7]
    assert all(len(row.replace("|", " ").split()) == 6 for row in first)
    path, _ = maze_file
    assert main(["solve", "maze", str(path), "--model", str(models["maze11"]), "--trace"]) == 0
    out = capsys.readouterr().out
    assert len(re.findall(r"^iter \d/3: \d+/121 right", out, flags=re.M)) == 4
    assert len(re.findall(r"^step \d/2: \d+/121 right", out, flags=re.M)) == 2


@pytest.mark.parametrize(
    "puzzle, model, message",
    [
        ("sudoku", "sudoku6", "the puzzle is 9x9 sudoku but the reasoner model was built for 6x6"),
        ("maze", "sudoku6", "the puzzle is 11x11 maze but the reasoner model was built for 6x6"),
        ("sudoku4", "maze11", "the puzzle is 4x4 sudoku but the reasoner model was built for 11"),
    ],
)
def test_model_of_another_size_is_one_clear_line(capsys, models, maze_file, puzzle, model, message):
    grids = {"sudoku": ["sudoku", CLASSIC], "maze": ["maze", str(maze_file[0])]}
    grids["sudoku4"] = ["sudoku", "1..." + "." * 12]
    assert main(["solve", *grids[puzzle], "--model", str(models[model])]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.count("\n") == 1
    assert captured.err.startswith("attractor solve: ") and message in captured.err


OPEN_MAZE = maze.parse_maze("########S   G##     #" + "#" * 28)


def _paint(cells):
    grid = OPEN_MAZE.copy()
    for r, c in cells:
        grid[r, c] = maze.PATH
    return grid


@pytest.mark.parametrize(
    "cells, valid, why",
    [
        ([(1, 2), (1, 3), (1, 4)], True, "a shortest path, 4 moves"),
        ([(1, 2), (2, 3), (1, 4)], False, "do not connect S to G"),
        ([(2, 1), (2, 2), (2, 3), (2, 4), (2, 5)], False, "has 6 moves, the shortest 4"),
        ([(1, 2), (1, 3), (1, 4), (2, 3)], False, "plus 1 painted cells off it"),
        ([(1, 2), (1, 3), (1, 4), (0, 3)], False, "1 cells off the path differ"),
    ],
)
def test_maze_verdict(cells, valid, why):
    ok, reason = maze_verdict(OPEN_MAZE, _paint(cells))
    assert ok == valid and why in reason
