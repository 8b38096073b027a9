"""The training log counts the solves that stopped at their noise floor: metrics.csv's
solver_stalled column (the fraction of solver samples, averaged over a step's micro-batches)."""

import csv

import pytest

from attractor.train.config import load_config
from attractor.train.trainer import Trainer

TINY = {"vocab_size": 257, "dim": 32, "n_heads": 2, "max_seq_len": 32, "n_backbone": 1}


def run(out_dir, tol: float) -> list[dict[str, str]]:
    solver = {"tol": tol, "max_iter": 30, "min_iter": 0}
    overrides = TINY | {"fixed_point": {"train_solver": solver}}
    cfg = load_config(None, [
        "model.preset=attractor-cpu", f"model.overrides={overrides!r}", "data.seq_len=16",
        "data.batch_size=2", "train.steps=2", "train.eval_every=0", "train.log_every=1",
        "train.progress=false", f"train.out_dir={out_dir}", "train.device=cpu",
    ])  # fmt: skip
    trainer = Trainer(cfg)
    trainer.fit()
    return list(csv.DictReader((out_dir / "metrics.csv").open()))


@pytest.mark.parametrize(("tol", "stalled"), [(1e-3, False), (1e-12, True)])
def test_solver_stalled_column(tmp_path, tol, stalled):
    # float32 cannot reach 1e-12: every position stalls at float32's floor (about 1e-7),
    # long before the 30 iterations; 1e-3 converges and nothing stalls
    rows = run(tmp_path, tol)
    assert len(rows) == 2
    for row in rows:
        fraction, iters = float(row["solver_stalled"]), float(row["solver_iters"])
        if stalled:
            assert fraction > 0.5 and iters < 30
        else:
            assert fraction == 0.0
