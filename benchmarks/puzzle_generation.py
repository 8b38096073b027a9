"""Time to generate puzzle datasets with our exact generators (issue: puzzles).

Sudoku: unique-solution puzzles with at least one backtrack (9 x 9 by default, the
issue's target is 1000 in <= 60 s on 2 cores). Maze: hard mazes (shortest path above
`attractor.data.maze.hard_threshold`) at 12 x 12 and 30 x 30. One run each.

    python benchmarks/puzzle_generation.py
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import write_result  # noqa: E402

from attractor.data import maze, sudoku, sudoku_generate  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    results = {}
    t = time.perf_counter()
    puzzles = sudoku_generate.generate_many(
        args.n, sudoku.SHAPES[81], seed=args.seed, workers=args.workers, min_backtracks=1
    )
    seconds = time.perf_counter() - t
    ratings = [rating for _, _, rating in puzzles]
    results["sudoku9_min1backtrack"] = {
        "n": args.n,
        "seconds": seconds,
        "min_rating": min(ratings),
        "median_rating": statistics.median(ratings),
    }
    for size in (12, 30):
        t = time.perf_counter()
        mazes = maze.generate_many(args.n, size, seed=args.seed)
        results[f"maze{size}_hard"] = {
            "n": args.n,
            "seconds": time.perf_counter() - t,
            "threshold": maze.hard_threshold(size),
            "min_path": min(m.rating for m in mazes),
            "median_path": statistics.median(m.rating for m in mazes),
        }
    path = write_result("puzzle_generation", {"workers": args.workers, "results": results})
    for name, r in results.items():
        print(f"{name:<24} {r['n']} in {r['seconds']:.1f} s")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
