import re

import pytest

from attractor.cli import main


def test_help_lists_subcommands(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    assert "demo" in capsys.readouterr().out


def test_demo_prints_both_traces_and_anderson_is_faster(capsys):
    assert main(["demo", "solver"]) == 0
    out = capsys.readouterr().out
    evals = dict(re.findall(r"^(picard|anderson): (\d+) f-evaluations", out, flags=re.M))
    assert set(evals) == {"picard", "anderson"}
    assert int(evals["anderson"]) < int(evals["picard"])
    finals = re.findall(r"final residual ([0-9.e+-]+)", out)
    assert all(float(r) < 1e-6 for r in finals)


def test_unknown_subcommand_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["frobnicate"])
    assert exit_info.value.code == 2
    assert "invalid choice" in capsys.readouterr().err
