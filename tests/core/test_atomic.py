"""attractor.core.atomic: all-or-nothing writes of text, bytes, JSON and named files."""

import json
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from attractor.core import atomic
from attractor.core.atomic import (
    atomic_path,
    atomic_write,
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_text,
)


def mode(path: Path) -> int:
    """The permission bits of `path`."""
    return stat.S_IMODE(path.stat().st_mode)


def test_writes_the_content(tmp_path):
    path = tmp_path / "out.txt"
    with atomic_write(path) as fh:
        fh.write("héllo\n")
    assert path.read_text(encoding="utf-8") == "héllo\n"
    assert list(tmp_path.iterdir()) == [path]


def test_replaces_an_existing_file(tmp_path):
    path = atomic_write_text(tmp_path / "out.txt", "old")
    assert atomic_write_text(path, "new") == path
    assert path.read_text() == "new"


def test_failure_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    path = atomic_write_text(tmp_path / "out.txt", "old")
    with pytest.raises(RuntimeError, match="boom"), atomic_write(path) as fh:
        fh.write("half")
        raise RuntimeError("boom")
    assert path.read_text() == "old"
    assert list(tmp_path.iterdir()) == [path]


def test_failure_without_an_old_file_leaves_nothing(tmp_path):
    with pytest.raises(RuntimeError), atomic_write(tmp_path / "out.txt"):
        raise RuntimeError
    assert list(tmp_path.iterdir()) == []


def test_temporary_is_hidden_next_to_the_target(tmp_path):
    path = tmp_path / "out.txt"
    with atomic_write(path) as fh:
        tmp = Path(fh.name)
        assert tmp.parent == tmp_path
        assert tmp.name.startswith(".out.txt.") and tmp.name.endswith(".tmp")
    assert not tmp.exists()


def test_file_mode_is_0644(tmp_path):
    assert mode(atomic_write_text(tmp_path / "a.txt", "x")) == 0o644
    with atomic_path(tmp_path / "b.bin") as tmp:
        tmp.write_bytes(b"x")
    assert mode(tmp_path / "b.bin") == 0o644


def test_makes_the_parent_directory(tmp_path):
    path = atomic_write_text(tmp_path / "a" / "b" / "out.txt", "x")
    assert path.read_text() == "x"


def test_binary_mode_ignores_the_text_encoding(tmp_path):
    path = tmp_path / "out.bin"
    with atomic_write(path, "wb") as fh:
        fh.write(b"\x00\xff")
    assert path.read_bytes() == b"\x00\xff"
    assert atomic_write_bytes(path, b"\x01").read_bytes() == b"\x01"


def test_rejects_modes_that_would_not_replace_the_file(tmp_path):
    with pytest.raises(ValueError, match="mode"), atomic_write(tmp_path / "out.txt", "a"):
        pass
    assert list(tmp_path.iterdir()) == []


def test_json(tmp_path):
    path = atomic_write_json(tmp_path / "r.json", {"a": [1, 2]})
    assert path.read_text() == json.dumps({"a": [1, 2]}, indent=2) + "\n"
    assert json.loads(path.read_text()) == {"a": [1, 2]}


def test_json_that_does_not_serialize_writes_nothing(tmp_path):
    path = atomic_write_text(tmp_path / "r.json", "{}\n")
    with pytest.raises(TypeError):
        atomic_write_json(path, {"a": object()})
    assert path.read_text() == "{}\n"
    assert list(tmp_path.iterdir()) == [path]


def test_atomic_path_with_a_writer_that_takes_a_file_name(tmp_path):
    path = tmp_path / "model.safetensors"
    with atomic_path(path) as tmp:
        assert tmp.parent == tmp_path and tmp != path
        assert tmp.suffix == ".safetensors"
        assert tmp.name.startswith(".model.safetensors.")
        tmp.write_bytes(b"weights")
        assert not path.exists()
    assert path.read_bytes() == b"weights"
    assert list(tmp_path.iterdir()) == [path]


def test_atomic_path_failure_keeps_the_old_file(tmp_path):
    path = atomic_write_bytes(tmp_path / "plot.png", b"old")
    with pytest.raises(OSError), atomic_path(path) as tmp:
        tmp.write_bytes(b"half")
        raise OSError("disk full")
    assert path.read_bytes() == b"old"
    assert list(tmp_path.iterdir()) == [path]


def test_module_does_not_import_torch():
    code = (
        "import importlib.util, sys\n"
        f"spec = importlib.util.spec_from_file_location('atomic', {atomic.__file__!r})\n"
        "spec.loader.exec_module(importlib.util.module_from_spec(spec))\n"
        "print('torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
