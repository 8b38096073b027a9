"""Results on disk: every evaluation result is a JSON record with what made it.

A result holds its numbers, a description of the model (`model_summary`) and the
provenance (command, commit, machine, date: `attractor.core.provenance`); `write_result`
writes it atomically. `attractor plot` draws any result by its "result" field.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from attractor.core.atomic import atomic_write_json
from attractor.core.provenance import provenance
from attractor.models import Model


def model_summary(model: Model, checkpoint: str | Path) -> dict[str, Any]:
    """Where the model came from, its family, layout, size and full config."""
    return {
        "checkpoint": str(checkpoint),
        "kind": model.kind,
        "layout": model.layout(),
        "params": model.num_params(),
        "config": model.config_dict(),
    }


def write_result(path: str | Path, result: dict[str, Any]) -> Path:
    """Write `result` with the provenance of this run as JSON to `path`, atomically."""
    return atomic_write_json(path, {**result, **provenance()})
