"""README.md's layout picture lists every module of the package, and nothing else."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "attractor"


def readme_modules(text: str) -> set[str]:
    """Module paths ("engine/solve.py", "__init__.py") named in the README's layout block:
    the code block after "## Layout and data flow", under its "attractor/" line. A
    subpackage's header line ("  engine/   ...") stands for its __init__.py."""
    section = text.split("## Layout and data flow", 1)[1]
    block = section.split("```\n", 2)[1]
    found: set[str] = set()
    directory = ""
    for line in block.splitlines()[1:]:  # after "attractor/"
        if line and not line.startswith(" "):
            break  # the next top-level entry: the package ends here
        header = re.match(r"^  (\w+)/(\s|$)", line)
        if header:
            directory = header.group(1) + "/"
            found.add(directory + "__init__.py")
            continue
        prefix = "" if re.match(r"^  \S", line) else directory
        found |= {prefix + name for name in re.findall(r"\b\w+\.py\b", line)}
    return found


def package_modules() -> set[str]:
    return {str(p.relative_to(PACKAGE)) for p in PACKAGE.rglob("*.py")}


def test_the_layout_picture_lists_every_module_and_no_other():
    listed = readme_modules((ROOT / "README.md").read_text(encoding="utf-8"))
    actual = package_modules()
    assert not actual - listed, f"modules missing from README's layout: {sorted(actual - listed)}"
    assert not listed - actual, f"README lists modules that do not exist: {sorted(listed - actual)}"


def test_the_parser_reads_directories_and_the_package_root():
    text = (
        "## Layout and data flow\n\n```\nattractor/\n  __init__.py  the facade\n"
        "  configs/*.yaml  data, not a package\n  engine/   the engine\n"
        "    solve.py  anderson.py  what solves\n"
        "             continued.py on a wrapped line\n  cli/\n    main.py\ndocs/  x.py\n```\n"
    )
    assert readme_modules(text) == {
        "__init__.py",
        "engine/__init__.py",
        "engine/solve.py",
        "engine/anderson.py",
        "engine/continued.py",
        "cli/__init__.py",
        "cli/main.py",
    }
