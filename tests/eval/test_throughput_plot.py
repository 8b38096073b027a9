"""The "throughput" plot (benchmarks/throughput.py results): drawn from a small synthetic
result, and malformed input refused with plot_results' ValueError."""

from __future__ import annotations

import pytest

from attractor.eval.plots import PLOTTERS, plot_results, plot_throughput


def _result() -> dict:
    row = {"tokens_per_s": 5000.0, "achieved_flops": 8e10, "fraction_of_measured_peak": 0.4}
    return {
        "result": "throughput",
        "date": "2026-01-01 00:00 UTC",
        "batch": 8,
        "seq_len": 256,
        "matmul_peak_flops": 2e11,
        "matmul_peak_flops_after": 1.9e11,
        "results": {"gpt-cpu": row, "attractor-cpu": {**row, "tokens_per_s": 1600.0}},
    }


def test_throughput_is_a_known_kind():
    assert PLOTTERS["throughput"] is plot_throughput


def test_draws_a_png(tmp_path):
    out = plot_results(_result(), tmp_path / "sub" / "throughput.png")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_draws_without_a_peak_after(tmp_path):
    result = _result()
    result["matmul_peak_flops_after"] = None
    assert plot_results(result, tmp_path / "a.png").is_file()


@pytest.mark.parametrize(
    "rows",
    [None, {}, {"gpt-cpu": {"tokens_per_s": 1.0}}, {"gpt-cpu": {"achieved_flops": 1.0}}],
)
def test_malformed_raises_value_error(tmp_path, rows):
    result = _result()
    result["results"] = rows
    with pytest.raises(ValueError, match="throughput result is malformed"):
        plot_results(result, tmp_path / "a.png")
