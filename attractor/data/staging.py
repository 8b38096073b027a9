"""Writing a dataset folder so that a failure leaves nothing behind.

`staging(out)` yields a hidden folder beside `out` to build into; if the body raises, that
folder goes, and so do any parent folders the call had to create. `publish(tmp, out, marker)`
then moves the finished folder into place: a rename when `out` is new, else file by file
with the `marker` file (the one that says "complete": meta.json, split.json) removed first
and written last, so a reader never sees a half-replaced folder as complete.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path


def _missing_ancestors(path: Path) -> list[Path]:
    """path and its parents that do not exist yet, outermost first."""
    missing = []
    while not path.exists():
        missing.append(path)
        path = path.parent
    return missing[::-1]


@contextlib.contextmanager
def staging(out: str | os.PathLike) -> Iterator[Path]:
    """A fresh hidden folder beside `out` (created, mode 0755, not mkdtemp's private 0700)."""
    target = Path(out).resolve()
    created = _missing_ancestors(target.parent)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.parent / f".{target.name}.{os.getpid()}-{secrets.token_hex(4)}.tmp"
    tmp.mkdir()
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        for directory in reversed(created):  # deepest first; only if still empty
            with contextlib.suppress(OSError):
                directory.rmdir()
        raise


def publish(tmp: Path, out: str | os.PathLike, marker: str, stale: tuple[str, ...] = ()) -> None:
    """Move the finished `tmp` to `out`: a rename, or (out exists) remove out/marker and the
    files matching the `stale` globs, move every file over, the marker last."""
    out = Path(out).resolve()
    if not out.exists():
        tmp.rename(out)
        return
    (out / marker).unlink(missing_ok=True)
    for pattern in stale:
        for old in out.glob(pattern):
            old.unlink()
    for new in sorted(tmp.iterdir(), key=lambda p: p.name == marker):
        os.replace(new, out / new.name)
    tmp.rmdir()
