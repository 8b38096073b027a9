"""`benchmarks/table.py`: README rows from lm_pareto and ablations results, computed by hand
here from the numbers the results hold."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).parents[2] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

from table import row, runs_of  # noqa: E402

RUN = {
    "params": 5_771_008,
    "val_ppl": 22.5,
    "train_flops": 1.619e14,
    "solver_iters_mean": 10.26,
    "curve": [
        {"step": 0, "val_ppl": 4800.0},
        {"step": 91, "val_ppl": 104.81},
        {"step": 728, "val_ppl": 22.6},
        {"step": 733, "val_ppl": 22.5},
    ],
}


def test_a_row_holds_the_chosen_evaluations_the_change_and_the_cost():
    assert row("init", RUN, 27.0, {91, 733}) == (
        "| init | 5.77M | 104.81 / **22.50** | -4.50 (-16.7 %) | 161.9 T | 10.3 |"
    )


def test_every_evaluation_after_step_0_and_dashes_for_what_an_older_result_lacks():
    old = {k: v for k, v in RUN.items() if k not in ("train_flops", "solver_iters_mean")}
    assert row("x", old, None, None) == "| x | 5.77M | 104.81 / 22.60 / **22.50** | - | - | - |"


def test_a_run_with_one_evaluation_has_no_separator():
    one = {**RUN, "curve": [{"step": 0, "val_ppl": 4800.0}, {"step": 4, "val_ppl": 2694.9}]}
    assert row("b", one, None, None).startswith("| b | 5.77M | **2694.90** |")


def test_the_runs_of_both_kinds_of_result_and_a_clear_error_for_another():
    assert runs_of({"models": {"gpt-cpu": RUN}}) == {"gpt-cpu": RUN}
    assert runs_of({"variants": {"jfb": RUN}}) == {"jfb": RUN}
    with pytest.raises(SystemExit, match="'internalization' result has no 'models'"):
        runs_of({"result": "internalization"})


def test_the_command_prints_one_row_a_run(tmp_path):
    path = tmp_path / "r.json"
    path.write_text(json.dumps({"variants": {"a": RUN, "b": {**RUN, "val_ppl": 27.0}}}))
    out = subprocess.run(
        [sys.executable, str(BENCHMARKS / "table.py"), str(path), "--baseline", "27"],
        capture_output=True, text=True, check=True,
    ).stdout.splitlines()  # fmt: skip
    assert [line.split(" | ")[0] for line in out] == ["| a", "| b"]
    assert "+0.00 (+0.0 %)" in out[1]
