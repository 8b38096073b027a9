"""The package's layers: every module lies in one, imports only its own or lower layers and
modules that exist, and no modules import each other in a circle.

Layers, bottom to top: core, engine (solvers, implicit gradients), nn (layers, the attractor
head), models, data, train, eval, cli; `attractor.<layer>.<...>` belongs to <layer>. The
facade `attractor/__init__.py` and `attractor/__main__.py` may import anything; nothing else
may import the package root itself (`from attractor import X`), only its modules. Every
import counts, lazy ones inside functions and those under `if TYPE_CHECKING:` included.
"""

from __future__ import annotations

import ast
import functools
import importlib.util
from collections.abc import Iterator
from pathlib import Path

LAYERS = ("core", "engine", "nn", "models", "data", "train", "eval", "cli")
FACADE = ("", "__main__")  # the package root and __main__: exempt as importers


def import_graph(package_dir: Path, package: str) -> dict[str, set[str]]:
    """Each module of the package at `package_dir` (named `package`) and what it imports of
    the package: `from a.b import c` is a.b.c if that is a module, else a.b (which, for a
    broken import, may be no module at all)."""
    modules = _modules(package_dir, package)
    graph: dict[str, set[str]] = {}
    for module, path in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        named = {_pick(c, modules) for c in _imported(tree, module, path.name == "__init__.py")}
        graph[module] = {t for t in named if _inside(t, package) and t != module}
    return graph


def missing_modules(graph: dict[str, set[str]]) -> list[str]:
    """Every import of a module the package does not have (one moved away, say)."""
    return [
        f"{importer} -> {imported} (no such module)"
        for importer in sorted(graph)
        for imported in sorted(graph[importer])
        if imported not in graph
    ]


def unlayered(graph: dict[str, set[str]], package: str) -> list[str]:
    """The modules that lie in no layer (and are not the facade)."""
    return [m for m in sorted(graph) if _relative(m, package) not in FACADE and not _layer(m)]


def upward_imports(graph: dict[str, set[str]], package: str) -> list[str]:
    """Every import of a higher layer, or of the facade, by a module in a layer."""
    found = []
    for importer in sorted(graph):
        below = _layer(importer)  # None for the facade: it may import anything
        if not below:
            continue
        for imported in sorted(graph[importer]):
            above = _layer(imported)
            if _relative(imported, package) in FACADE:
                found.append(f"{importer} -> {imported} (layer {below} imports the facade)")
            elif above and LAYERS.index(above) > LAYERS.index(below):
                found.append(f"{importer} -> {imported} (layer {below} imports layer {above})")
    return found


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The groups of modules that import each other in a circle (a module importing a
    package above it, other than the root, does not count: that is its own __init__)."""
    edges = {m: {t for t in ts if not _is_parent(t, m)} for m, ts in graph.items()}
    return sorted(sorted(c) for c in _strongly_connected(edges) if len(c) > 1)


def _modules(package_dir: Path, package: str) -> dict[str, Path]:
    """The dotted name of every .py file under `package_dir`, and its path."""
    modules = {}
    for path in sorted(package_dir.rglob("*.py")):
        parts = [package, *path.relative_to(package_dir).with_suffix("").parts]
        modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return modules


def _imported(tree: ast.AST, module: str, is_package: bool) -> Iterator[tuple[str, ...]]:
    """For everything imported anywhere in `tree`, the absolute names it may be: the module
    named and, after `from M import x`, first M.x then M."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from ((alias.name,) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            source = _absolute(node, module, is_package)
            yield from ((f"{source}.{alias.name}", source) for alias in node.names)


def _absolute(node: ast.ImportFrom, module: str, is_package: bool) -> str:
    """The module `from ... import` names, relative imports resolved against `module`."""
    if not node.level:
        return node.module or ""
    package = module.split(".") if is_package else module.split(".")[:-1]
    base = package[: len(package) - node.level + 1]
    return ".".join(base + ([node.module] if node.module else []))


def _pick(candidates: tuple[str, ...], modules: dict[str, Path]) -> str:
    """The first of `candidates` that is a module, else the last."""
    return next((c for c in candidates if c in modules), candidates[-1])


def _inside(name: str, package: str) -> bool:
    """Whether dotted `name` is `package` or below it."""
    return name == package or name.startswith(package + ".")


def _relative(module: str, package: str) -> str:
    """`module`'s name inside `package` ("" for the package itself)."""
    return module.removeprefix(package).removeprefix(".")


def _layer(module: str) -> str | None:
    """The layer `module` lies in: the first name below the package, if that is a layer."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in LAYERS else None


def _is_parent(imported: str, importer: str) -> bool:
    """Whether `imported` is a package above `importer`, other than the package root."""
    return "." in imported and importer.startswith(imported + ".")


def _strongly_connected(edges: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's strongly connected components of the graph `edges`."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    components: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in sorted(edges.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while not component or component[-1] != v:
                component.append(stack.pop())
            components.append(component)

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return components


@functools.cache
def _attractor_graph() -> dict[str, set[str]]:
    """The import graph of the installed attractor package."""
    spec = importlib.util.find_spec("attractor")
    return import_graph(Path(spec.submodule_search_locations[0]), "attractor")


def test_every_module_lies_in_a_layer():
    outside = unlayered(_attractor_graph(), "attractor")
    assert not outside, f"modules in no layer {LAYERS}:\n  " + "\n  ".join(outside)


def test_no_module_imports_a_higher_layer():
    upward = upward_imports(_attractor_graph(), "attractor")
    assert not upward, "imports of a higher layer:\n  " + "\n  ".join(upward)


def test_every_import_names_a_module():
    missing = missing_modules(_attractor_graph())
    assert not missing, "imports of modules that do not exist:\n  " + "\n  ".join(missing)


def test_no_import_circles():
    found = circles(_attractor_graph())
    assert not found, "import circles:\n  " + "\n  ".join(", ".join(c) for c in found)


SYNTHETIC = {
    "__init__.py": "from pkg.models.net import Net\n",
    "__main__.py": "from pkg.cli import main\n",
    "helpers.py": "",
    "core/__init__.py": "",
    "core/util.py": "def lazy():\n    from pkg.nn import head\n",
    "engine/__init__.py": "",
    "engine/solve.py": "import pkg.core.util\nfrom pkg.models.net import Net\n",
    "nn/__init__.py": "from .head import Head\n",
    "nn/head.py": "import typing\nif typing.TYPE_CHECKING:\n    from ..train import loop\n",
    "models/__init__.py": "from pkg.models.net import Net\n",
    "models/net.py": "import pkg.models\nfrom pkg.core import util\nfrom . import other\n",
    "models/other.py": "def f():\n    from .net import Net\n",
    "data/__init__.py": "",
    "data/load.py": "from pkg.core import name\nimport pkg.gone\nfrom pkg.data.old import f\n",
    "train/__init__.py": "",
    "train/loop.py": "import torch\nfrom pkg.data.load import x\n",
    "cli/__init__.py": "from pkg import Net, __main__\n",
}


def test_checks_find_each_kind_of_violation(tmp_path):
    for name, text in SYNTHETIC.items():
        path = tmp_path / "pkg" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    graph = import_graph(tmp_path / "pkg", "pkg")
    assert graph["pkg.core.util"] == {"pkg.nn.head"}  # a lazy import
    assert graph["pkg.nn.head"] == {"pkg.train.loop"}  # under TYPE_CHECKING, relative
    assert graph["pkg.train.loop"] == {"pkg.data.load"}  # a name: the module it is in
    assert graph["pkg.data.load"] == {"pkg.core", "pkg.data.old", "pkg.gone"}
    assert missing_modules(graph) == [
        "pkg.data.load -> pkg.data.old (no such module)",
        "pkg.data.load -> pkg.gone (no such module)",
    ]
    assert unlayered(graph, "pkg") == ["pkg.helpers"]
    assert upward_imports(graph, "pkg") == [
        "pkg.cli -> pkg (layer cli imports the facade)",
        "pkg.cli -> pkg.__main__ (layer cli imports the facade)",
        "pkg.core.util -> pkg.nn.head (layer core imports layer nn)",
        "pkg.engine.solve -> pkg.models.net (layer engine imports layer models)",
        "pkg.nn.head -> pkg.train.loop (layer nn imports layer train)",
    ]
    # pkg.models.net importing its own package pkg.models is no circle
    assert circles(graph) == [["pkg.__main__", "pkg.cli"], ["pkg.models.net", "pkg.models.other"]]
