"""The `attractor` program: every subcommand is listed and answers --help, `python -m
attractor` works, `--help` imports no torch, packaged configs are named without a path,
and `attractor demo` reads nothing from the working directory but its --data and --out."""

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from attractor.cli import main

COMMANDS = ["demo", "presets", "train", "data", "eval", "generate", "convert", "plot", "solve"]
NESTED = {"data": ["text", "puzzles"], "solve": ["sudoku", "maze"]}
REPO = Path(__file__).resolve().parents[2]


def listed_commands(help_text: str) -> list[str]:
    """The names in the COMMAND block of `attractor --help`, in order."""
    block = help_text.split("\n  COMMAND\n", 1)[1].split("\n\n", 1)[0]
    return re.findall(r"^    (\S+)", block, flags=re.M)


def help_of(capsys, argv: list[str]) -> str:
    with pytest.raises(SystemExit) as exit_info:
        main([*argv, "--help"])
    assert exit_info.value.code == 0
    return capsys.readouterr().out


def test_help_lists_every_subcommand(capsys):
    assert listed_commands(help_of(capsys, [])) == COMMANDS


@pytest.mark.parametrize(
    "argv", [[c] for c in COMMANDS] + [[c, k] for c, kinds in NESTED.items() for k in kinds]
)
def test_each_subcommand_answers_help(capsys, argv):
    out = help_of(capsys, argv)
    assert out.startswith(f"usage: attractor {' '.join(argv)}")
    for kind in NESTED.get(argv[0], []) if len(argv) == 1 else []:
        assert re.search(rf"^    {kind}\s", out, flags=re.M), f"{kind} not listed"


def run_python(code: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True, timeout=120
    )


def test_python_dash_m_attractor_help_lists_every_subcommand(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "attractor", "--help"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("usage: attractor ")
    assert listed_commands(done.stdout) == COMMANDS


def test_import_and_help_do_not_import_torch(tmp_path):
    code = (
        "import sys\n"
        "import attractor\n"
        "from attractor.cli import main\n"
        "after_import = 'torch' in sys.modules\n"
        "try:\n"
        "    main(['--help'])\n"
        "except SystemExit as e:\n"
        "    assert e.code == 0\n"
        "after_help = 'torch' in sys.modules\n"
        "attractor.SolverConfig  # the lazy facade still gives the public names\n"
        "print(after_import, after_help, 'torch' in sys.modules, file=sys.stderr)\n"
    )
    done = run_python(code, tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stderr.split() == ["False", "False", "True"]


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


# ----------------------------------------------------------------------------- packaged configs


def test_packaged_configs_are_named_without_a_path(tmp_path, monkeypatch):
    """From a directory without configs/, every shipped YAML loads by its name and gives
    the same config as its file."""
    from attractor.train.config import load_config, named_configs

    packaged = sorted((REPO / "attractor" / "configs").glob("*.yaml"))
    monkeypatch.chdir(tmp_path)
    assert named_configs() == sorted(p.stem for p in packaged)
    assert "sudoku6-cpu" in named_configs()
    for path in packaged:
        assert load_config(path.stem) == load_config(path)
        assert load_config(path.name) == load_config(path)


def test_an_unknown_config_name_is_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["train", "sudoku7-cpu"]) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("attractor train: config: sudoku7-cpu")
    assert "sudoku6-cpu" in lines[0]  # names the packaged configs


@pytest.fixture(scope="module")
def sudoku6(tmp_path_factory):
    """A small 6x6 split (4 training, 4 test puzzles) outside any working directory."""
    from attractor.data.puzzles import build_sudoku_split

    directory = tmp_path_factory.mktemp("sudoku6") / "split"
    build_sudoku_split(directory, box=(2, 3), n_train=4, n_test=4, seed=0, minimal=True)
    return directory


def test_train_runs_a_packaged_config_by_name_from_an_empty_directory(
    sudoku6, tmp_path, monkeypatch, capsys
):
    monkeypatch.chdir(tmp_path)
    sets = [f"data.source={sudoku6}", "train.out_dir=run", "train.steps=1", "data.batch_size=4"]
    sets += ["train.eval_every=0", "train.progress=false", "train.device=cpu"]
    sets += ["model.overrides={dim: 32, n_heads: 2, n_layers: 1, n_sup: 2}"]  # a quick step
    assert main(["train", "sudoku6-cpu", *[a for s in sets for a in ("--set", s)]]) == 0
    assert "done at step 1" in capsys.readouterr().out
    config = json.loads((tmp_path / "run" / "model" / "config.json").read_text())
    assert (config["kind"], config["side"], config["dim"]) == ("reasoner_nested", 6, 32)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]


def test_demo_config_is_the_packaged_one_from_any_directory(tmp_path, monkeypatch):
    """The demo's run config comes from the package, not from ./configs, even where a
    ./configs/sudoku6-cpu.yaml says otherwise; only --data, --out and --minutes change it."""
    from attractor.cli.demo import demo_config
    from attractor.train.config import load_config

    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "sudoku6-cpu.yaml").write_text("model:\n  preset: trm-cpu\n")
    monkeypatch.chdir(tmp_path)
    cfg = demo_config("mine", "out", 2.5)
    assert cfg.model.preset == "reasoner-cpu"
    assert (cfg.data.source, cfg.train.out_dir, cfg.train.time_budget_s) == ("mine", "out", 150)
    packaged = load_config(REPO / "attractor" / "configs" / "sudoku6-cpu.yaml")
    packaged.data.source, packaged.train.out_dir, packaged.train.time_budget_s = "mine", "out", 150
    assert cfg == packaged


@pytest.mark.slow
def test_demo_reads_only_its_data_and_writes_only_its_out(sudoku6, tmp_path, monkeypatch, capsys):
    """`attractor demo` from an empty directory, on a ready split: the packaged config, a
    moment of training, then the held-out evaluation; the working directory gains --out and
    nothing else (about 10 s of CPU: slow)."""
    import shutil

    work = tmp_path / "work"
    shutil.copytree(sudoku6, work / "mine")
    monkeypatch.chdir(work)
    argv = ["demo", "--minutes", "0.0001", "--data", "mine", "--out", "out"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "generating" not in out  # the split in --data was used, not made again
    assert "held-out puzzles: 4" in out
    assert sorted(p.name for p in work.iterdir()) == ["mine", "out"]
    result = json.loads((work / "out" / "depth.json").read_text())
    assert result["result"] == "puzzle_depth" and result["full"]["puzzles"] == 4
    assert [row["T"] for row in result["depth"]] == [0, 1, 2, 4, 6]
