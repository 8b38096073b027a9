"""Start-up time of the command line: how long `attractor --help` takes (target: under 0.5 s).

Timed, each in a fresh process: `python -m attractor --help`, the installed `attractor --help`
script when there is one, and `python -c pass`, the interpreter's own start-up, as the floor.
Every command runs once untimed (to warm the file cache), then ``--repeats`` rounds run each
command in turn; the figures are the min / median / max wall seconds per command. Exits 1 if
a run fails, or if the median of an `attractor --help` command is 0.5 s or more.

    python benchmarks/cli_startup.py
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import write_result  # noqa: E402

TARGET_S = 0.5
FLOOR = "python -c pass"
RUN_TIMEOUT_S = 60


def commands() -> dict[str, list[str]]:
    """The commands to time, by name: the attractor ones, then the interpreter's floor."""
    found = {"python -m attractor --help": [sys.executable, "-m", "attractor", "--help"]}
    script = _attractor_script()
    if script:
        found["attractor --help"] = [script, "--help"]
    found[FLOOR] = [sys.executable, "-c", "pass"]
    return found


def _attractor_script() -> str | None:
    """The installed `attractor` script: the one next to this interpreter, else on PATH."""
    beside = Path(sys.executable).parent / "attractor"
    return str(beside) if beside.is_file() else shutil.which("attractor")


def run_once(cmd: list[str]) -> float:
    """Wall seconds of one run of `cmd`; a failed run stops the benchmark with its error."""
    start = time.perf_counter()
    try:
        done = subprocess.run(
            cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, timeout=RUN_TIMEOUT_S
        )
    except (OSError, subprocess.TimeoutExpired) as err:
        sys.exit(f"cli_startup: {' '.join(cmd)} did not run: {err}")
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        sys.exit(
            f"cli_startup: {' '.join(cmd)} failed (exit {done.returncode}):\n"
            + done.stderr.strip()[-2000:]
        )
    return seconds


def time_commands(cmds: dict[str, list[str]], repeats: int) -> dict[str, list[float]]:
    """Seconds of `repeats` runs of each command, after one warm-up run of each."""
    for cmd in cmds.values():
        run_once(cmd)
    runs: dict[str, list[float]] = {name: [] for name in cmds}
    for _ in range(repeats):
        for name, cmd in cmds.items():
            runs[name].append(run_once(cmd))
    return runs


def summary(seconds: list[float]) -> dict[str, float | list[float]]:
    """Min, median and max of `seconds`, and the runs themselves."""
    return {
        "min_s": min(seconds),
        "median_s": statistics.median(seconds),
        "max_s": max(seconds),
        "runs_s": seconds,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=20, help="timed runs of each command")
    ap.add_argument("--name", default="cli_startup", help="results/NAME.json")
    args = ap.parse_args()
    if args.repeats < 1:
        ap.error("--repeats must be at least 1")
    cmds = commands()
    results = {name: summary(s) for name, s in time_commands(cmds, args.repeats).items()}
    for name, r in results.items():
        print(
            f"{name:<28} min {r['min_s']:.3f} s  median {r['median_s']:.3f} s  "
            f"max {r['max_s']:.3f} s"
        )
    numbers = {"target_s": TARGET_S, "repeats": args.repeats, "commands": results}
    print(f"wrote {write_result(args.name, numbers)}")
    slow = [n for n, r in results.items() if n != FLOOR and r["median_s"] >= TARGET_S]
    if slow:
        sys.exit(
            "cli_startup: over the target: "
            + ", ".join(f"{n} median {results[n]['median_s']:.3f} s" for n in slow)
            + f" (target: under {TARGET_S} s)"
        )


if __name__ == "__main__":
    main()
