import json
import re

import pytest

from attractor.cli import main
from attractor.data import puzzles
from attractor.eval.puzzle_metrics import evaluate_puzzles
from attractor.models.pretrained import load_pretrained

METRICS = {"exact_acc", "cell_acc", "cell_acc_all", "halt_step", "halt_exact_acc"} | {
    "solver_iters",
    "puzzles",
}


@pytest.fixture(scope="module")
def files(tiny_reasoner, tmp_path_factory):
    root = tmp_path_factory.mktemp("puzzle_eval")
    tiny_reasoner().save_pretrained(root / "reasoner")
    puzzles.build_sudoku_split(root / "sudoku6", (2, 3), n_train=4, n_test=8, minimal=True)
    puzzles.build_sudoku_split(root / "sudoku4", (2, 2), n_train=2, n_test=2, minimal=True)
    return root


def _eval(files, *extra):
    argv = ["eval", "--model", str(files / "reasoner"), "--data", str(files / "sudoku6")]
    return main([*argv, "--device", "cpu", *extra])


def test_eval_prints_metrics_and_depth_rows_and_writes_json_and_plot(files, tmp_path, capsys):
    out = tmp_path / "result.json"
    assert _eval(files, "--depths", "0,1,2", "--out", str(out)) == 0
    text = capsys.readouterr().out
    head = text.splitlines()[0]
    for label in ("exact", "cells", "halt step", "solver iters"):
        assert label in head
    rows = re.findall(
        r"^T=(\d+)\s+exact [\d.]+%, cells [\d.]+% of the blanks, [\d.]+% of all cells",
        text,
        flags=re.M,
    )
    assert rows == ["0", "1", "2"]
    result = json.loads(out.read_text())
    assert result["result"] == "puzzle_depth" and result["kind"] == "reasoner"
    assert set(result["full"]) == METRICS and result["full"]["puzzles"] == 8
    assert result["default"] == result["full"]  # no --depth: the model's own depth
    assert out.with_suffix(".png").stat().st_size > 0
    assert [row["T"] for row in result["depth"]] == [0, 1, 2]
    assert all({"exact_acc", "cell_acc"} <= set(row) for row in result["depth"])
    assert {"command", "commit", "machine", "date"} <= set(result)
    # the numbers are evaluate_puzzles' on the split's test set, as printed
    _, test, _ = puzzles.load_split(files / "sudoku6")
    model = load_pretrained(files / "reasoner").eval()
    data = puzzles.PuzzleDataset(test, "sudoku", augment=False)
    direct = evaluate_puzzles(model, data, batch_size=100)
    assert result["full"] == pytest.approx(direct)
    assert f"cells {100 * direct['cell_acc']:.2f}% of the blanks" in head
    assert f"{100 * direct['cell_acc_all']:.2f}% of all cells" in head
    assert "2 supervision steps, eval mode, weights as saved)" in head  # a hand-saved model
    at_one = evaluate_puzzles(model, data, batch_size=100, depth=1)
    assert result["depth"][1]["cell_acc"] == pytest.approx(at_one["cell_acc"])


def test_sweep_without_depths_runs_0_to_t_max(files, tmp_path, capsys):
    out = tmp_path / "sweep.json"
    argv = ["--sweep", "--batches", "1", "--batch-size", "4", "--depth", "1", "--out", str(out)]
    assert _eval(files, *argv) == 0
    text = capsys.readouterr().out
    assert (
        "(4 6x6 sudoku, 2 supervision steps, T=1, eval mode, weights as saved)" in text
    )  # --batches 1 of 4 puzzles
    assert re.findall(r"^T=(\d+)", text, flags=re.M) == ["0", "1", "2", "3"]
    result = json.loads(out.read_text())
    assert result["fixed_depth"] == 1 and result["T_max"] == 3
    assert {k: v for k, v in result["depth"][1].items() if k != "T"} == result["default"]


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--data", "SUDOKU4"], "is 4x4 sudoku but the reasoner model was built for 6x6 sudoku"),
        (["--data", "pydoc"], "evaluated on a puzzle split, not the default pydoc"),
        (["--data", "NOWHERE"], "not a directory"),
        (["--split", "dev"], "--split: a puzzle split has test"),
    ],
)
def test_bad_input_is_one_line(files, capsys, extra, message):
    paths = {"SUDOKU4": str(files / "sudoku4"), "NOWHERE": str(files / "nowhere")}
    assert _eval(files, *[paths.get(a, a) for a in extra]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("attractor eval: ")
    assert message in lines[0]
