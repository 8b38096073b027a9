"""The project's one atomic write: every file it writes appears whole or not at all.

A writer writes to a temporary file next to the target (``.NAME.XXXXXXXX.tmp``, in the same
directory so that the rename stays on one file system; `atomic_path` adds the target's
suffix), which is flushed, fsynced, given mode 0o644 and renamed over the target; the
directory is fsynced after the rename. When the writer fails, the temporary file is removed
and an existing target is left as it was. A missing parent directory is created (with its
parents), as ``mkdir -p`` would.

    with atomic_write("metrics.csv") as fh:
        fh.write(...)
    with atomic_path("model.safetensors") as tmp:
        safetensors.torch.save_file(tensors, tmp)
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

MODE = 0o644  # what a plain open() gives under the usual umask; mkstemp gives 0o600
WRITE_MODES = ("w", "wt", "wb")


@contextlib.contextmanager
def atomic_write(
    path: str | os.PathLike, mode: str = "w", encoding: str | None = "utf-8"
) -> Iterator[IO]:
    """Write `path` all or nothing: yield a file object on a temporary file in the same
    directory; on success flush, fsync, chmod 0o644 (mkstemp makes 0600) and os.replace it
    over `path` (then fsync the directory); on any exception remove the temporary and
    re-raise, leaving an existing `path` untouched. A binary mode ("wb") ignores `encoding`."""
    if mode not in WRITE_MODES:
        raise ValueError(f"atomic_write: mode must be one of {WRITE_MODES}, not {mode!r}")
    path = Path(path)
    tmp = _temporary(path, "")
    try:
        with open(tmp, mode, encoding=None if "b" in mode else encoding) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        _replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """For writers that insist on a file name (torch.save to a name, safetensors.save_file,
    matplotlib savefig): yield a temporary path in the same directory (with the same suffix
    as `path`, so format detection by extension still works); on success fsync it and rename
    it over `path`; on failure remove it."""
    path = Path(path)
    tmp = _temporary(path, path.suffix)
    try:
        yield tmp
        _fsync(tmp)
        _replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write `text` to `path` (UTF-8) atomically; return the path."""
    with atomic_write(path) as fh:
        fh.write(text)
    return Path(path)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write `data` to `path` atomically; return the path."""
    with atomic_write(path, "wb") as fh:
        fh.write(data)
    return Path(path)


def atomic_write_json(path: str | os.PathLike, data: Any) -> Path:
    """Write `data` to `path` as JSON (indent 2, newline at the end) atomically; return the
    path. Nothing is written when `data` does not serialize."""
    return atomic_write_text(path, json.dumps(data, indent=2) + "\n")


def _temporary(path: Path, suffix: str) -> Path:
    """A new empty file ``.NAME.XXXXXXXX.tmpSUFFIX`` next to `path` (its directory made if
    missing)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f".tmp{suffix}", dir=path.parent)
    os.close(fd)
    return Path(name)


def _replace(tmp: Path, path: Path) -> None:
    """Give `tmp` the usual file mode, rename it over `path` and make the rename durable."""
    os.chmod(tmp, MODE)
    os.replace(tmp, path)
    with contextlib.suppress(OSError):  # a directory some file systems cannot open or fsync
        _fsync(path.parent)


def _fsync(path: Path) -> None:
    """fsync the file or directory at `path`."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
