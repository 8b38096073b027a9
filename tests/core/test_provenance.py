"""attractor.core.provenance: the command, commit, machine and date of a result."""

import re
import subprocess
import sys

from attractor.core import provenance as prov
from attractor.core.provenance import provenance


def in_git_checkout() -> bool:
    """Whether the package's source tree is a git checkout (and git is installed)."""
    try:
        done = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=prov.PACKAGE_DIR, capture_output=True, timeout=5
        )
    except OSError:
        return False
    return done.returncode == 0


def test_keys_and_date_format():
    record = provenance()
    assert list(record) == ["command", "commit", "machine", "date"]
    assert all(isinstance(v, str) and v for v in record.values())
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d UTC", record["date"])


def test_machine_names_cores_and_torch():
    import torch

    machine = provenance()["machine"]
    assert f"torch {torch.__version__}" in machine
    assert f"{torch.get_num_threads()} threads" in machine
    assert "cores" in machine


def test_commit_is_the_package_checkout_from_any_working_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # not a git checkout: the commit still comes from the package
    commit = provenance()["commit"]
    if in_git_checkout():
        assert re.fullmatch(r"[0-9a-f]{40}(\+dirty)?", commit), commit
    else:
        assert commit == "unknown"


def test_commit_is_unknown_without_git(monkeypatch):
    def no_git(*args, **kwargs):
        raise FileNotFoundError("git")

    monkeypatch.setattr(subprocess, "run", no_git)
    assert provenance()["commit"] == "unknown"


def test_commit_is_unknown_when_git_hangs(monkeypatch):
    def hang(cmd, **kwargs):
        raise subprocess.TimeoutExpired(cmd, kwargs["timeout"])

    monkeypatch.setattr(subprocess, "run", hang)
    assert provenance()["commit"] == "unknown"


def test_explicit_command_is_kept():
    assert provenance(["attractor", "eval", "run/ckpt"])["command"] == "attractor eval run/ckpt"


def test_default_command_of_an_installed_script(monkeypatch):
    monkeypatch.setattr(sys, "argv", ["/venv/bin/attractor", "train", "cfg.yaml"])
    assert provenance()["command"] == "attractor train cfg.yaml"


def test_default_command_of_a_python_script(monkeypatch):
    monkeypatch.setattr(sys, "argv", ["benchmarks/x.py", "--repeats", "3"])
    monkeypatch.setattr(sys, "orig_argv", ["/venv/bin/python", "benchmarks/x.py", "--repeats", "3"])
    assert provenance()["command"] == "python benchmarks/x.py --repeats 3"


def test_module_does_not_import_torch():
    code = (
        "import importlib.util, sys\n"
        f"spec = importlib.util.spec_from_file_location('provenance', {prov.__file__!r})\n"
        "spec.loader.exec_module(importlib.util.module_from_spec(spec))\n"
        "print('torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_commit_of_another_source_tree(tmp_path):
    """A benchmark passes its own folder: the commit is that checkout's, not the package's."""
    repo = tmp_path / "repo"
    repo.mkdir()
    git = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run([*git[:3], "init", "-q"], check=True)
    (repo / "f.txt").write_text("x")
    subprocess.run([*git, "add", "f.txt"], check=True)
    subprocess.run([*git, "commit", "-qm", "c"], check=True)
    head = subprocess.run([*git[:3], "rev-parse", "HEAD"], capture_output=True, text=True)
    assert prov.provenance(source=repo)["commit"] == head.stdout.strip()
    (repo / "f.txt").write_text("y")
    assert prov.provenance(source=repo)["commit"] == head.stdout.strip() + "+dirty"
    assert prov.provenance(source=tmp_path)["commit"] == "unknown"
