"""Models answer for themselves (issue 14, Build item 2): every registered kind states its
depth unit and maximum depth and reports the depth a forward ran, and no code outside the
registry dispatches on a model's kind string."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import torch

import attractor
from attractor.engine import SolverConfig
from attractor.models import build_model
from attractor.models.grid import GridModel
from attractor.models.registry import KINDS

LM = dict(vocab_size=64, dim=32, n_heads=2, max_seq_len=16)
GRID = dict(vocab_size=8, side=6, box_rows=2, box_cols=3, dim=32, n_heads=2)
SOLVE = dict(eval_solver=SolverConfig("picard", tol=1e-3, max_iter=7))

# kind -> (depth unit, fields that set its maximum depth, that maximum); None: fixed depth
EXPECTED = {
    "gpt": (None, dict(n_layers=2), None),
    "grid_transformer": (None, dict(n_layers=2), None),
    "attractor": ("solver iterations", dict(n_backbone=1, fixed_point=SOLVE), 7),
    "deq": ("solver iterations", dict(n_layers=1, fixed_point=SOLVE), 7),
    "looped": ("recurrences", dict(n_prelude=1, n_recurrent=1, n_coda=1, eval_depth=5), 5),
    "reasoner": ("solver iterations", dict(n_layers=1, fixed_point=SOLVE), 7),
    "reasoner_nested": ("solver iterations", dict(n_layers=1, fixed_point=SOLVE), 7),
    "trm": ("cycles", dict(n_layers=1, cycles=4, inner=2), 4),
    "grid_attractor": (
        "solver iterations",
        dict(n_backbone=1, n_head_layers=1, fixed_point=SOLVE),
        7,
    ),
}


# solves per forward where a kind runs several (its H cycles); one elsewhere
SOLVES = {"reasoner_nested": 3}


def tiny(kind: str):
    """A small seeded model of `kind` in evaluation mode, and an input batch for it."""
    torch.manual_seed(0)
    cls = KINDS[kind][0]
    grid = issubclass(cls, GridModel)
    model = build_model(kind=kind, **(GRID if grid else LM), **EXPECTED[kind][1]).eval()
    ids = torch.randint(1, 8, (2, 36)) if grid else torch.randint(0, 64, (2, 16))
    return model, ids


def test_every_registered_kind_has_an_expectation():
    assert set(EXPECTED) == set(KINDS)


@pytest.mark.parametrize("kind", sorted(EXPECTED))
def test_depth_unit_and_max_depth(kind):
    unit, _, expected = EXPECTED[kind]
    model, ids = tiny(kind)
    assert model.kind == kind and model.depth_unit == unit
    if unit is None:  # a fixed-depth family: no depth to ask for, no depth reported
        with pytest.raises(ValueError, match=f"a {kind} model has a fixed depth") as err:
            model.max_depth()
        assert "\n" not in str(err.value)
        with torch.no_grad():
            assert model(ids).depth is None
            with pytest.raises(ValueError, match="depth"):
                model(ids, depth=2)
        return
    assert model.max_depth() == expected
    with torch.no_grad():
        for d in (0, 1, 3):
            assert model(ids, depth=d).depth == d
        out = model(ids)  # its own depth: the solver's iterations, or the whole schedule
    assert 1 <= out.depth <= expected
    solves = SOLVES.get(kind, 1)
    if unit == "solver iterations":  # depth: the most iterations one of the step's solves ran
        assert out.depth <= out.solver.iters <= solves * out.depth
        with torch.no_grad():
            assert model(ids, depth=3).solver.iters == solves * 3
    else:
        assert out.depth == expected


# -----------------------------------------------------------------------------
# No kind dispatch outside the registry


def _mentions_kind(node: ast.AST) -> bool:
    """`x.kind`, a name `kind`, or a call of kind_of(...)."""
    if isinstance(node, ast.Attribute):
        return node.attr == "kind"
    if isinstance(node, ast.Name):
        return node.id == "kind"
    if isinstance(node, ast.Call):
        return getattr(node.func, "id", getattr(node.func, "attr", None)) == "kind_of"
    return False


def _kind_strings(node: ast.AST) -> set[str]:
    """The model kinds among the string constants of `node` (a constant or a collection)."""
    items = node.elts if isinstance(node, (ast.Tuple, ast.List, ast.Set)) else [node]
    return {i.value for i in items if isinstance(i, ast.Constant) and i.value in KINDS}


def kind_dispatch(source: str) -> list[int]:
    """Lines that compare a kind with model-kind strings (==, !=, in, not in), match on a
    kind, or look a kind up in a literal dict keyed by model kinds."""
    lines = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Compare):
            operands = [node.left, *node.comparators]
            if any(map(_mentions_kind, operands)) and any(map(_kind_strings, operands)):
                lines.append(node.lineno)
        elif isinstance(node, ast.Match) and _mentions_kind(node.subject):
            lines.append(node.lineno)
        elif isinstance(node, ast.Subscript) and isinstance(node.value, ast.Dict):
            keys = [k for k in node.value.keys if k is not None]
            if _mentions_kind(node.slice) and any(map(_kind_strings, keys)):
                lines.append(node.lineno)
    return lines


def test_the_scan_finds_kind_dispatch():
    source = (
        'if model.kind == "gpt":\n    pass\n'
        'ok = kind in ("deq", "attractor")\n'
        'x = {"trm": 1, "looped": 2}[config.kind]\n'
        'if kind_of(config) != "reasoner":\n    pass\n'
        'if cfg.kind == "cosine" or puzzles.kind == "maze":\n    pass\n'  # not model kinds
    )
    assert kind_dispatch(source) == [1, 3, 4, 5]


def test_no_kind_dispatch_outside_the_registry():
    package = Path(attractor.__file__).parent
    registry = package / "models" / "registry.py"
    found = [
        f"{path.relative_to(package.parent)}:{line}"
        for path in sorted(package.rglob("*.py"))
        if path != registry
        for line in kind_dispatch(path.read_text(encoding="utf-8"))
    ]
    assert found == [], "dispatch on the model kind; let the model class answer: " + ", ".join(
        found
    )
