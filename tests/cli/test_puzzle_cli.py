import hashlib

import numpy as np
import pytest

from attractor.cli import main
from attractor.data import maze, puzzles, sudoku, sudoku_generate

SMALL = ["--n-train", "20", "--n-test", "20"]


def _sudoku_args(out, *extra):
    argv = ["data", "puzzles", "--kind", "sudoku", "--box", "2x3", "--out", str(out)]
    return [*argv, *SMALL, "--workers", "1", *extra]


def _digests(directory):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in directory.iterdir()}


def _one_error_line(capsys, message):
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("attractor data: "), lines
    assert message in lines[0]


def test_data_help_names_puzzle_splits(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    assert "text corpora or puzzle splits" in capsys.readouterr().out


def test_builds_a_6x6_sudoku_split_that_load_split_reads_back(tmp_path, capsys):
    out = tmp_path / "sudoku6"
    assert main(_sudoku_args(out, "--minimal")) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 1
    assert "6x6 sudoku: 20 train + 20 test" in lines[0] and "mean givens" in lines[0]
    train, test, record = puzzles.load_split(out)
    assert (len(train), len(test), record["kind"]) == (20, 20, "sudoku")
    assert record["generator"] == {"box": [2, 3], "seed": 0, "minimal": True}
    assert all(p.question.size == 36 and sudoku.is_solution(p.answer, p.question) for p in test)
    mean_givens = sum(int((p.question != 0).sum()) for p in train) / 20
    assert f"mean givens {mean_givens:.1f} train" in lines[0]


def test_builds_a_maze_split_that_load_split_reads_back(tmp_path, capsys):
    out = tmp_path / "maze9"
    argv = ["data", "puzzles", "--kind", "maze", "--size", "9", "--out", str(out)]
    assert main([*argv, "--n-train", "5", "--n-test", "4", "--seed", "3"]) == 0
    line = capsys.readouterr().out.strip()
    assert "9x9 maze: 5 train + 4 test" in line and "mean path length" in line
    train, test, record = puzzles.load_split(out)
    assert (len(train), len(test), record["seed"]) == (5, 4, 3)
    assert all(m.size == 9 and m.rating == len(maze.shortest_path(m.question)) - 1 for m in train)


def test_same_split_again_is_rebuilt_identically(tmp_path, capsys):
    out = tmp_path / "s"
    assert main(_sudoku_args(out)) == 0
    before = _digests(out)
    assert main(_sudoku_args(out)) == 0
    assert _digests(out) == before


def test_a_different_split_in_out_is_refused_unless_force(tmp_path, capsys):
    out = tmp_path / "s"
    assert main(_sudoku_args(out)) == 0
    before = _digests(out)
    capsys.readouterr()
    assert main(_sudoku_args(out, "--seed", "1")) == 2
    _one_error_line(capsys, "holds a different split")
    assert _digests(out) == before
    assert main(_sudoku_args(out, "--seed", "1", "--force")) == 0
    assert puzzles.load_split(out)[2]["seed"] == 1


def test_a_folder_of_other_files_is_refused(tmp_path, capsys):
    out = tmp_path / "busy"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    assert main(_sudoku_args(out)) == 2
    _one_error_line(capsys, "holds no puzzle split")
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--kind", "kakuro"], "unknown puzzle kind 'kakuro'"),
        (["--box", "2x5"], "--box: 2x5 is not supported"),
        (["--box", "two"], "expected ROWSxCOLS"),
        (["--n-train", "0"], "--n-train must be at least 1, got 0"),
        (["--minimal", "--max-givens", "12"], "exclude each other"),
        (["--kind", "maze", "--size", "4"], "--size must be at least 5"),
        (["--kind", "maze", "--box", "2x3"], "--box: sudoku options"),
        (["--kind", "maze", "--workers", "2"], "--workers: sudoku options"),
        (["--kind", "maze", "--size", "7", "--min-path", "99"], "out of reach"),  # in the builder
        (["--max-backtracks", "1", "--min-backtracks", "2"], "below --min-backtracks"),
    ],
)
def test_bad_input_is_one_line_exit_2_and_leaves_no_files(tmp_path, capsys, extra, message):
    out = tmp_path / "new" / "split"
    argv = ["data", "puzzles", "--kind", "sudoku", "--out", str(out), *SMALL, *extra]
    assert main(argv) == 2
    _one_error_line(capsys, message)
    assert list(tmp_path.iterdir()) == []


def _public_files(tmp_path):
    """A public-format train and test file (Sudoku-Extreme's columns) of 4x4 puzzles."""
    shape = sudoku.SudokuShape(2, 2)
    made = [
        sudoku.Puzzle("pub", q, a, r)
        for q, a, r in sudoku_generate.generate_many(30, shape, seed=3)
    ]
    sudoku.write_csv(tmp_path / "pub_train.csv", made[:20])
    sudoku.write_csv(tmp_path / "pub_test.csv", made[20:])
    return made


def test_a_split_from_public_csv_files_draws_train_and_keeps_every_test(tmp_path, capsys):
    made = _public_files(tmp_path)
    out = tmp_path / "split"
    argv = ["data", "puzzles", "--kind", "sudoku", "--out", str(out), "--n-train", "8",
            "--train-csv", str(tmp_path / "pub_train.csv"),
            "--test-csv", str(tmp_path / "pub_test.csv")]  # fmt: skip
    assert main(argv) == 0
    assert "8 train + 10 test" in capsys.readouterr().out
    train, test, record = puzzles.load_split(out)
    assert len(train) == 8 and len(test) == 10
    public_train = {puzzles.question_hash(p) for p in made[:20]}
    assert {puzzles.question_hash(p) for p in train} <= public_train
    assert [puzzles.question_hash(p) for p in test] == [puzzles.question_hash(p) for p in made[20:]]
    assert main(argv) == 2  # the folder now holds a split
    _one_error_line(capsys, "not empty")
    assert main([*argv, "--force"]) == 0


@pytest.mark.parametrize(
    "train, test, extra, message",
    [
        ("pub_train.csv", "pub_test.csv", ["--box", "2x2"], "--box: generator options"),
        ("pub_train.csv", None, [], "go together"),
        ("missing.csv", "pub_test.csv", [], "no such file"),
    ],
)
def test_bad_csv_input_is_one_line_exit_2_and_leaves_no_files(
    tmp_path, capsys, train, test, extra, message
):
    _public_files(tmp_path)
    argv = ["data", "puzzles", "--kind", "sudoku", "--out", str(tmp_path / "new" / "split")]
    argv += ["--train-csv", str(tmp_path / train), *extra]
    argv += [] if test is None else ["--test-csv", str(tmp_path / test)]
    assert main(argv) == 2
    _one_error_line(capsys, message)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pub_test.csv", "pub_train.csv"]


def _numbered_rows(path, n_rows: int, seed: int = 4) -> None:
    """A public-format file of n_rows 4x4 puzzles whose source column is its row number
    (the rows may repeat a question: the reference's selection keeps repeats)."""
    shape = sudoku.SudokuShape(2, 2)
    made = list(sudoku_generate.generate_many(10, shape, seed=seed))
    rows = [sudoku.Puzzle(f"row{i}", *made[i % len(made)]) for i in range(n_rows)]
    sudoku.write_csv(path, rows)


@pytest.mark.parametrize("n_rows", [1500, 1000])
def test_select_reference_keeps_the_rows_the_papers_builders_keep(tmp_path, capsys, n_rows):
    """TRM's build_sudoku_dataset.py (the paper's data): numpy.random.seed(0), then
    numpy.random.choice(N, 1000, replace=False) over the N training rows when 1000 < N,
    every row in order otherwise; the whole test file is kept."""
    _numbered_rows(tmp_path / "train.csv", n_rows)
    _numbered_rows(tmp_path / "test.csv", 7, seed=5)
    out = tmp_path / "split"
    argv = ["data", "puzzles", "--kind", "sudoku", "--out", str(out), "--select", "reference",
            "--train-csv", str(tmp_path / "train.csv"),
            "--test-csv", str(tmp_path / "test.csv")]  # fmt: skip
    assert main(argv) == 0
    assert "1000 train + 7 test" in capsys.readouterr().out
    if n_rows > 1000:
        np.random.seed(0)
        want = np.random.choice(n_rows, 1000, replace=False).tolist()
    else:
        want = list(range(n_rows))
    train, test, record = puzzles.load_split(out)
    assert [p.source for p in train] == [f"row{i}" for i in want]
    assert record["train_indices"] == want and record["select"] == "reference"
    assert [p.source for p in test] == [f"row{i}" for i in range(7)]


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--n-train", "50"], "asked for 50 training puzzles but the file has 20 rows"),
        (["--select", "best"], None),  # argparse's own error, exit 2
    ],
)
def test_select_reference_bad_input_is_one_line(tmp_path, capsys, extra, message):
    _public_files(tmp_path)
    argv = ["data", "puzzles", "--kind", "sudoku", "--out", str(tmp_path / "new"),
            "--train-csv", str(tmp_path / "pub_train.csv"),
            "--test-csv", str(tmp_path / "pub_test.csv"),
            "--select", "reference", *extra]  # fmt: skip
    if message is None:
        with pytest.raises(SystemExit) as err:
            main(argv)
        assert err.value.code == 2 and "invalid choice: 'best'" in capsys.readouterr().err
        return
    assert main(argv) == 2
    _one_error_line(capsys, message)
    assert not (tmp_path / "new").exists()


def test_select_needs_a_training_file(tmp_path, capsys):
    argv = ["data", "puzzles", "--kind", "sudoku", "--out", str(tmp_path / "s"), "--select",
            "reference"]  # fmt: skip
    assert main(argv) == 2
    _one_error_line(capsys, "--select chooses rows of --train-csv")
