"""The benchmarks' `--resume`: a run continues from the checkpoint in its run directory
instead of starting over, and logs each step once."""

import csv
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parents[2] / "benchmarks"))

from common import train_in_subprocess  # noqa: E402


def tiny_run(out_dir: Path, steps: int) -> list[str]:
    return [
        "model.preset=gpt-cpu",
        "model.overrides={'vocab_size': 257, 'dim': 32, 'n_heads': 2, 'n_layers': 1}",
        "data.seq_len=16",
        "data.batch_size=4",
        f"train.steps={steps}",
        "train.eval_every=0",
        "train.log_every=1",
        "train.progress=false",
        "train.device=cpu",
        f"train.out_dir={out_dir}",
        "optim.name=muon-ns",
    ]


def logged_steps(out_dir: Path) -> list[int]:
    with (out_dir / "metrics.csv").open(newline="") as fh:
        return [int(row["step"]) for row in csv.DictReader(fh)]


def test_resume_continues_the_run_in_its_directory_and_a_fresh_start_empties_it(tmp_path):
    first = train_in_subprocess(None, tiny_run(tmp_path, steps=4), threads=1, resume=True)
    assert not first["resumed"] and logged_steps(tmp_path) == [1, 2, 3, 4]
    longer = train_in_subprocess(None, tiny_run(tmp_path, steps=7), threads=1, resume=True)
    assert longer["resumed"]
    assert [int(r["step"]) for r in longer["metrics"]] == list(range(1, 8))
    again = train_in_subprocess(None, tiny_run(tmp_path, steps=3), threads=1)
    assert not again["resumed"] and logged_steps(tmp_path) == [1, 2, 3]
