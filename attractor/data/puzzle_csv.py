"""The public puzzle CSV format, `source,question,answer,rating`, read and written once for
Sudoku and mazes (the format of Sudoku-Extreme and Maze-Hard)."""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TypeVar

from attractor.core.atomic import atomic_write

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
    """Write the header and rows atomically (`attractor.core.atomic`), streamed as UTF-8 with
    the csv module's own line endings."""
    with atomic_write(path, "wb") as raw:
        text = io.TextIOWrapper(raw, encoding="utf-8", newline="")
        writer = csv.writer(text)
        writer.writerow(COLUMNS)
        writer.writerows(rows)
        text.flush()
        text.detach()  # leave `raw` open: atomic_write fsyncs and closes it
