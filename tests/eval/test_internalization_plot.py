"""The "internalization" plotter (benchmarks/internalization.py) on a small synthetic result."""

from __future__ import annotations

import copy
import math
from pathlib import Path
from typing import Any

import pytest

from attractor.eval.plots import plot_results

DEPTHS = [0, 1, 2, 4, 8, 16]


def _model(ppl0: float, default_t: float) -> dict[str, Any]:
    rows = [{"T": t, "loss": math.log(ppl0 / (1 + t)), "ppl": ppl0 / (1 + t)} for t in DEPTHS]
    default = {"T": default_t, "ppl": ppl0 / (1 + default_t), "what": "default"}
    return {"params": 1000, "depth": rows, "default": default}


def _trajectory(n: int, rate: float) -> dict[str, Any]:
    points = [[rate**t, (-1) ** t * rate**t / 2] for t in range(n)]
    return {"state": "synthetic", "pca": points, "explained": [0.8, 0.15], "relative_step": []}


def _result() -> dict[str, Any]:
    solver = {"method": "anderson", "tol": 1e-3, "min_iter": 2, "max_iter": 16}
    curve = [{"step": s, "solver_iters": 3 + s / 10} for s in range(0, 50, 10)]
    return {
        "result": "internalization",
        "date": "2026-01-01",
        "eval_windows": 8,
        "depths": DEPTHS,
        "depth": {"attractor": _model(50.0, 6.5), "looped": _model(80.0, 8)},
        "solver_iters": {
            "attractor": {"steps": 40, "solver": solver, "curve": curve},
            "deq": {"steps": 40, "schedule": "shortened", "solver": solver, "curve": curve},
            "common": [],
        },
        "trajectory": {
            "window": 0,
            "position": 255,
            "T": list(range(17)),
            "models": {"attractor": _trajectory(17, 0.5), "looped": _trajectory(17, 0.9)},
        },
    }


def test_draws_png(tmp_path: Path) -> None:
    out = plot_results(_result(), tmp_path / "internalization.png")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("damage", ["no_trajectory", "short_pca", "no_deq"])
def test_rejects_malformed(tmp_path: Path, damage: str) -> None:
    result = copy.deepcopy(_result())
    if damage == "no_trajectory":
        del result["trajectory"]
    elif damage == "short_pca":
        result["trajectory"]["models"]["looped"]["pca"].pop()
    else:
        del result["solver_iters"]["deq"]
    with pytest.raises(ValueError, match="internalization result is malformed"):
        plot_results(result, tmp_path / "bad.png")
