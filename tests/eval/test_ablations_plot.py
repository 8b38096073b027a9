"""The "ablations" plot (benchmarks/ablations.py results): drawn from a small synthetic
result, and malformed input refused with plot_results' ValueError."""

from __future__ import annotations

import pytest

from attractor.eval.plots import PLOTTERS, plot_ablations, plot_results


def _variant(family: str, ppl: float, step_s: float) -> dict:
    return {"family": family, "val_ppl": ppl, "step_s": step_s, "params": 1000}


def _result() -> dict:
    return {
        "result": "ablations",
        "date": "2026-01-01 00:00 UTC",
        "steps": 4,
        "batch_size": 16,
        "seq_len": 128,
        "variants": {
            "baseline": _variant("baseline", 300.0, 1.5),
            "adjoint": _variant("backward", 295.0, 2.4),
            "phantom": _variant("backward", 298.0, 1.7),
            "concat": _variant("injection", 310.0, 1.6),
            "untied": _variant("head", 305.0, 1.6),
        },
    }


def test_ablations_is_a_known_kind():
    assert PLOTTERS["ablations"] is plot_ablations


def test_draws_a_png(tmp_path):
    out = plot_results(_result(), tmp_path / "sub" / "ablations.png")
    assert out == tmp_path / "sub" / "ablations.png"
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_draws_without_a_baseline(tmp_path):
    result = _result()
    del result["variants"]["baseline"]
    assert plot_results(result, tmp_path / "a.png").is_file()


@pytest.mark.parametrize(
    "variants",
    [
        None,
        {},
        [{"family": "baseline"}],
        {"baseline": {"family": "baseline", "step_s": 1.0}},  # no perplexity
        {"baseline": {"val_ppl": 3.0, "step_s": 1.0}},  # no family
        {"baseline": {"family": "baseline", "val_ppl": None, "step_s": 1.0}},
    ],
)
def test_malformed_raises_value_error(tmp_path, variants):
    result = _result()
    result["variants"] = variants
    with pytest.raises(ValueError, match="ablations result is malformed"):
        plot_results(result, tmp_path / "a.png")


def test_missing_variants_raises_value_error(tmp_path):
    result = _result()
    del result["variants"]
    with pytest.raises(ValueError, match="ablations result is malformed"):
        plot_results(result, tmp_path / "a.png")
