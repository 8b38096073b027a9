"""The public puzzle CSV format, `source,question,answer,rating`, read and written once for
Sudoku and mazes (the format of Sudoku-Extreme and Maze-Hard)."""

from __future__ import annotations

import csv
import os
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TypeVar

COLUMNS = ("source", "question", "answer", "rating")
T = TypeVar("T")


def read_rows(
    path: str | Path, kind: str, parse: Callable[[dict[str, str]], T], hint: str
) -> list[T]:
    """parse(row) for every row; one clear error naming the file and line on bad input."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{kind}: no such file {path}; {hint}")
    out = []
    with path.open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        missing = [c for c in COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise ValueError(
                f"{kind}: {path} lacks column(s) {', '.join(missing)}; "
                f"expected header {','.join(COLUMNS)}"
            )
        for row in reader:
            try:
                out.append(parse(row))
            except (ValueError, TypeError) as err:
                msg = str(err).removeprefix(f"{kind}: ")
                raise ValueError(f"{kind}: {path}, line {reader.line_num}: {msg}") from None
    return out


def write_rows(path: str | Path, rows: Iterable[tuple[str, str, str, int]]) -> None:
    """Write the header and rows atomically (a temp file in the same folder, then a rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f)
            writer.writerow(COLUMNS)
            writer.writerows(rows)
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; data files are as readable as any
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
