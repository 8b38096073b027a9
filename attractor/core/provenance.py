"""The one provenance record that goes with every result the project writes.

Cheap to import: torch is imported only when a record is made, and only if it is installed.
"""

from __future__ import annotations

import datetime
import os
import platform
import subprocess
import sys
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent.parent
GIT_TIMEOUT_S = 5


def provenance(command: list[str] | None = None, source: Path | None = None) -> dict[str, str]:
    """{"command", "commit", "machine", "date"}: the command line (default: sys.argv with the
    program name), the git commit of `source` (default: the package's source tree; a
    benchmark passes its own folder, so that an installed package still records the
    checkout it ran from) with "+dirty" when tracked files are modified and "unknown"
    outside a git checkout, the machine (CPU model from
    /proc/cpuinfo, core count, architecture, torch version and threads, and the CUDA device
    name when one is available), and the UTC date "YYYY-MM-DD HH:MM UTC"."""
    return {
        "command": " ".join(_command_line() if command is None else command),
        "commit": _git_commit(source or PACKAGE_DIR),
        "machine": _machine(),
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    }


def _command_line() -> list[str]:
    """This process's command: `attractor ARGS` from an installed script, else as the
    interpreter was called (`python -m attractor ARGS`, `python benchmarks/x.py ARGS`)."""
    program = Path(sys.argv[0])
    if program.suffix != ".py" and program.name not in ("", "-c", "-m"):
        return [program.name, *sys.argv[1:]]
    return [Path(sys.orig_argv[0]).name, *sys.orig_argv[1:]]


def _git_commit(directory: Path) -> str:
    """HEAD of the checkout that holds `directory`, "+dirty" if a tracked file is modified."""
    head = _git(directory, "rev-parse", "HEAD")
    if not head:
        return "unknown"
    dirty = _git(directory, "status", "--porcelain", "--untracked-files=no")
    return head + ("+dirty" if dirty else "")


def _git(directory: Path, *args: str) -> str | None:
    """The output of `git ARGS` run in `directory`; None if git fails or is absent."""
    try:
        done = subprocess.run(
            ["git", *args],
            cwd=directory,
            capture_output=True,
            text=True,
            timeout=GIT_TIMEOUT_S,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip()


def _machine() -> str:
    """CPU model, cores, architecture, and torch (version, threads, CUDA device) if present."""
    parts = [_cpu_name(), f"{os.cpu_count()} cores", platform.machine()]
    try:
        import torch
    except ImportError:
        return ", ".join(parts)
    parts += [f"torch {torch.__version__}", f"{torch.get_num_threads()} threads"]
    if torch.cuda.is_available():
        parts.append(torch.cuda.get_device_name())
    return ", ".join(parts)


def _cpu_name() -> str:
    """The CPU model from /proc/cpuinfo, else what `platform` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"
