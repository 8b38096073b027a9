"""`attractor presets`: every preset with its parameter counts and layout."""

from __future__ import annotations

import argparse

import torch

from attractor.models import list_presets, preset_config
from attractor.models.presets import model_from_config


def _count(n: int) -> str:
    """143_100_000 -> "143.1M", 1_330_000_000 -> "1.33B"."""
    if n >= 1e9:
        return f"{n / 1e9:.2f}B"
    if n >= 1e6:
        return f"{n / 1e6:.1f}M"
    return f"{n / 1e3:.1f}K"


def preset_row(name: str) -> list[str]:
    """name, parameters, non-embedding parameters, layout; built on the meta device (no
    memory, no initialisation cost)."""
    with torch.device("meta"):
        model = model_from_config(preset_config(name))
    return [
        name,
        _count(model.num_params()),
        _count(model.num_params(non_embedding=True)),
        model.layout(),
    ]


def run(args: argparse.Namespace) -> int:
    """`attractor presets`: print the table; exit 1 when a preset cannot be built."""
    rows, failed = [["preset", "params", "non-embed", "layout"]], 0
    for name in list_presets():
        try:
            rows.append(preset_row(name))
        except (ValueError, TypeError, RuntimeError, NotImplementedError) as e:
            rows.append([name, "?", "?", f"cannot build: {e}"])
            failed += 1
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    for row in rows:
        cells = [row[0].ljust(widths[0]), row[1].rjust(widths[1]), row[2].rjust(widths[2])]
        print("  ".join([*cells, row[3]]))
    return 1 if failed else 0
