"""`attractor plot RESULTS.json [--out PNG]`: redraw any results JSON."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from attractor.eval.plots import plot_results


def run(args: argparse.Namespace) -> int:
    """`attractor plot RESULTS.json [--out PNG]`."""
    path = Path(args.results)
    try:
        results = json.loads(path.read_text(encoding="utf-8"))
        out = plot_results(results, args.out or path.with_suffix(".png"))
    except FileNotFoundError:
        print(f"attractor plot: {path} does not exist", file=sys.stderr)
        return 2
    except json.JSONDecodeError as err:
        print(
            f"attractor plot: {path} is not valid JSON ({err.msg}, line {err.lineno})",
            file=sys.stderr,
        )
        return 2
    except (OSError, ValueError) as err:
        print(f"attractor plot: {path}: {err}", file=sys.stderr)
        return 2
    print(f"wrote {out}")
    return 0
