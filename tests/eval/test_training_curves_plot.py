"""The "training_curves" plot (benchmarks/reasoning_cpu.py results): one run a model inline
(results written before --seeds) and several seeds under "runs", both drawn; malformed
input refused with plot_results' ValueError."""

from __future__ import annotations

import pytest

from attractor.eval.plots import PLOTTERS, plot_results, plot_training_curves


def _run(seed: int, top: float) -> dict:
    curve = [
        {"elapsed_s": 60.0 * i, "exact_acc": top * i / 4, "cell_acc": 0.5 + top * i / 8}
        for i in range(5)
    ]
    return {"seed": seed, "params": 400_000, "final": {"exact_acc": top}, "curve": curve}


def _result(models: dict) -> dict:
    return {"result": "training_curves", "date": "2026-01-01 00:00 UTC", "minutes": 4.0,
            "tasks": {"sudoku6-cpu": models}}  # fmt: skip


def test_training_curves_is_a_known_kind():
    assert PLOTTERS["training_curves"] is plot_training_curves


def test_draws_one_run_a_model_inline(tmp_path):
    result = _result({"reasoner-joint-cpu": _run(0, 0.9), "trm-cpu": _run(0, 0.8)})
    out = plot_results(result, tmp_path / "sub" / "curves.png")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_draws_several_seeds_a_model(tmp_path):
    seeds = {"params": 400_000, "final": {"exact_acc": 0.85}}
    models = {
        "reasoner-joint-cpu": {**seeds, "runs": [_run(0, 0.9), _run(1, 0.8)]},
        "trm-cpu": {**seeds, "runs": [_run(0, 0.7), _run(1, 0.6)]},
    }
    assert plot_results(_result(models), tmp_path / "a.png").is_file()


@pytest.mark.parametrize(
    "models",
    [
        None,
        {"trm-cpu": {"params": 1}},
        {"trm-cpu": {"params": 1, "runs": [{"curve": [{}]}]}},
        {"trm-cpu": {"params": 1, "runs": [{"curve": [{"elapsed_s": 0.0, "exact_acc": 0.0}]}]}},
    ],
)
def test_malformed_raises_value_error(tmp_path, models):
    with pytest.raises(ValueError, match="training_curves result is malformed"):
        plot_results(_result(models), tmp_path / "a.png")
