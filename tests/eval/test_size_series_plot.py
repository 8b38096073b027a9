"""The "lm_size_series" plot (benchmarks/lm_size_series.py results): drawn from a small
synthetic result, and malformed input refused with plot_results' ValueError."""

from __future__ import annotations

import pytest

from attractor.eval.plots import PLOTTERS, plot_lm_size_series, plot_results


def _run(params: float, flops: float, ppl: float) -> dict:
    return {"params": params, "train_flops": flops, "val_ppl": ppl}


def _result() -> dict:
    return {
        "result": "lm_size_series",
        "date": "2026-01-01 00:00 UTC",
        "tokens_per_param": 0.284,
        "sizes": [
            {"width": w, "attractor": _run(p, 2.3 * f, a), "gpt": _run(0.95 * p, f, g)}
            for w, p, f, a, g in [(128, 1.7e6, 1e13, 80.0, 75.0), (256, 5.8e6, 1e14, 37, 35)]
        ],
    }


def test_lm_size_series_is_a_known_kind():
    assert PLOTTERS["lm_size_series"] is plot_lm_size_series


def test_draws_a_png(tmp_path):
    out = plot_results(_result(), tmp_path / "sub" / "series.png")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize(
    "sizes",
    [None, [], [{"width": 64, "attractor": _run(1, 1, 1)}], [{"width": 64, "gpt": {}}]],
)
def test_malformed_raises_value_error(tmp_path, sizes):
    result = _result()
    result["sizes"] = sizes
    with pytest.raises(ValueError, match="lm_size_series result is malformed"):
        plot_results(result, tmp_path / "a.png")
