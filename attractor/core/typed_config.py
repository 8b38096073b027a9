"""The one typed config loader: nested dataclasses built from plain data, every value checked.

YAML run configs, `--set a.b=v` overrides, model-config overrides and every `config.json`
go through `from_data`; config dataclasses built in Python call `validate` from
``__post_init__``. A field's type hint (from ``typing.get_type_hints``, so ``from __future__
import annotations`` is fine) decides what its value may be:

- ``int``: an int, not a bool (1.5, '3' and True are errors).
- ``float``: an int or float, not a bool, or a str that parses as a float (YAML 1.1 reads
  ``1e-4`` and ``5e-1`` as strings); the result is a float.
- ``bool``: true or false only. ``str``: a str only. ``Any``: anything, as it is.
- ``Literal[...]``: one of the options, equal in value and in type (True is not 1).
- ``X | None``: None, or a value for X. Other unions: the first member that fits, in order
  (``float | str`` turns '5e-1' into 0.5, ``str | float`` keeps it a str).
- ``tuple[X, Y]`` / ``tuple[X, ...]`` / ``tuple``: a list or tuple (of the right length),
  each item checked, as a tuple. ``list[X]``: a list or tuple, as a list. ``dict[K, V]`` /
  ``dict``: a mapping, keys checked against K (str for a bare dict), values against V, as a
  new dict.
- a dataclass: an instance passes as it is; a mapping of its fields goes through `from_data`.
- any other class: an instance of it; a hint that is no class (a TypeVar) passes anything.

The keys of a dataclass are its init fields: an unknown key is an error that lists the valid
ones, a missing key takes its default. A ValueError or TypeError from the constructor (a
semantic check in ``__post_init__``) becomes an error at the dataclass's key path. Every
error is one `ConfigError` (a ValueError) of one line, ``key.path: problem`` (``config:`` at
the top level), values shown with repr().
"""

from __future__ import annotations

import dataclasses
import functools
import types
import typing
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

T = TypeVar("T")

_NONE = type(None)
_WORDS = {int: "an integer", float: "a number", bool: "true or false", str: "a string"}


class ConfigError(ValueError):
    """A config value or key that does not fit its dataclass; the message is one line naming
    the key, the value and what is allowed."""


# -----------------------------------------------------------------------------
# Per-class facts, computed once (validate runs in __post_init__ of objects built in loops)


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    """The resolved type hints of dataclass `cls`."""
    return typing.get_type_hints(cls)


@functools.cache
def _init_fields(cls: type) -> tuple[dataclasses.Field, ...]:
    """The fields the constructor of dataclass `cls` takes: the valid keys of its config."""
    return tuple(f for f in dataclasses.fields(cls) if f.init)


# -----------------------------------------------------------------------------
# Messages


def _join(where: str, key: object) -> str:
    """The dotted path of `key` under `where`."""
    return f"{where}.{key}" if where else str(key)


def _fail(where: str, problem: str) -> ConfigError:
    """The error `where: problem` (`config: problem` at the top level)."""
    return ConfigError(f"{where or 'config'}: {problem}")


def _describe(hint: Any) -> str:
    """What a value for `hint` must be, in words."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if isinstance(hint, type) and hint in _WORDS:
        return _WORDS[hint]
    if hint is _NONE:
        return "null"
    if origin is typing.Literal:
        return "one of " + ", ".join(map(repr, args))
    if origin in (typing.Union, types.UnionType):
        return " or ".join(map(_describe, args))
    if origin is tuple and args and args[-1] is not Ellipsis:
        return f"a list of {len(args)} items"
    if (origin or hint) in (tuple, list):
        return "a list"
    if (origin or hint) is dict:
        return "a mapping"
    if _is_dataclass_type(hint):
        return "a mapping of fields"
    return getattr(origin or hint, "__name__", repr(hint))


def _expected(hint: Any, value: Any, where: str) -> ConfigError:
    """The error `where: expected <what hint allows>, got <value>`."""
    return _fail(where, f"expected {_describe(hint)}, got {value!r}")


def _one_line(text: str) -> str:
    """`text` with its lines joined by spaces."""
    return " ".join(line.strip() for line in text.splitlines() if line.strip())


# -----------------------------------------------------------------------------
# Coercion, one function per kind of hint


def _is_dataclass_type(hint: Any) -> bool:
    """Whether `hint` is a dataclass (the class, not an instance)."""
    return isinstance(hint, type) and dataclasses.is_dataclass(hint)


def _any(hint: Any, value: Any, where: str) -> Any:
    """Anything, as it is."""
    return value


def _int(hint: Any, value: Any, where: str) -> int:
    """An int that is not a bool."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    raise _expected(hint, value, where)


def _float(hint: Any, value: Any, where: str) -> float:
    """An int, a float or a str that parses as one, as a float; never a bool."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            pass
    raise _expected(hint, value, where)


def _exact(hint: Any, value: Any, where: str) -> Any:
    """An instance of `hint` (bool, str, NoneType) as it is."""
    if isinstance(value, hint):
        return value
    raise _expected(hint, value, where)


def _literal(hint: Any, value: Any, where: str) -> Any:
    """One of the Literal's options, equal in value and type."""
    options = typing.get_args(hint)
    if any(type(value) is type(option) and value == option for option in options):
        return value
    raise _fail(where, f"{value!r} is not one of {', '.join(map(repr, options))}")


def _union(hint: Any, value: Any, where: str) -> Any:
    """None where the union allows it, else the first member that fits."""
    members = typing.get_args(hint)
    if value is None and _NONE in members:
        return None
    others = [m for m in members if m is not _NONE]
    if len(others) == 1:
        return coerce(others[0], value, where)
    for member in others:
        try:
            return coerce(member, value, where)
        except ConfigError:
            continue
    raise _expected(hint, value, where)


def _items(hint: Any, value: Any, where: str) -> list[Any] | tuple[Any, ...]:
    """`value` if it is a list or tuple, else the error."""
    if isinstance(value, (list, tuple)):
        return value
    raise _expected(hint, value, where)


def _tuple(hint: Any, value: Any, where: str) -> tuple[Any, ...]:
    """A tuple of each item checked (`tuple[X, Y]`: exactly that many)."""
    items, args = _items(hint, value, where), typing.get_args(hint)
    if not args:
        return tuple(items)
    if len(args) == 2 and args[1] is Ellipsis:
        args = (args[0],) * len(items)
    elif len(args) != len(items):
        raise _expected(hint, value, where)
    pairs = enumerate(zip(args, items, strict=True))
    return tuple(coerce(arg, item, f"{where}[{i}]") for i, (arg, item) in pairs)


def _list(hint: Any, value: Any, where: str) -> list[Any]:
    """A list of each item checked."""
    items = _items(hint, value, where)
    (item_hint,) = typing.get_args(hint) or (Any,)
    return [coerce(item_hint, item, f"{where}[{i}]") for i, item in enumerate(items)]


def _key(hint: Any, key: Any, where: str) -> Any:
    """A mapping key checked against `hint`."""
    try:
        return coerce(hint, key, where)
    except ConfigError:
        raise _fail(where, f"keys must be {_describe(hint)}, got {key!r}") from None


def _dict(hint: Any, value: Any, where: str) -> dict[Any, Any]:
    """A new dict of each key and value checked."""
    if not isinstance(value, Mapping):
        raise _expected(hint, value, where)
    key_hint, value_hint = typing.get_args(hint) or (str, Any)
    return {
        _key(key_hint, k, where): coerce(value_hint, v, _join(where, k)) for k, v in value.items()
    }


def _dataclass(hint: Any, value: Any, where: str) -> Any:
    """An instance of dataclass `hint` as it is, or one built from a mapping of its fields."""
    if isinstance(value, hint):
        return value
    if isinstance(value, Mapping):
        return from_data(hint, value, where)
    raise _expected(hint, value, where)


def _instance(hint: Any, value: Any, where: str) -> Any:
    """An instance of `hint` (or of its origin: `Callable[...]`); anything for a non-class."""
    cls = typing.get_origin(hint) or hint
    if not isinstance(cls, type) or isinstance(value, cls):
        return value
    raise _expected(hint, value, where)


_COERCERS: dict[Any, Callable[[Any, Any, str], Any]] = {
    Any: _any,
    int: _int,
    float: _float,
    bool: _exact,
    str: _exact,
    _NONE: _exact,
    typing.Literal: _literal,
    typing.Union: _union,
    types.UnionType: _union,
    tuple: _tuple,
    list: _list,
    dict: _dict,
}


@functools.cache
def _coercer(hint: Any) -> Callable[[Any, Any, str], Any]:
    """The function that checks values for `hint`, chosen once per hint."""
    coercer = _COERCERS.get(typing.get_origin(hint) or hint)
    if coercer is not None:
        return coercer
    return _dataclass if _is_dataclass_type(hint) else _instance


def coerce(hint: Any, value: Any, where: str) -> Any:
    """`value` converted to type `hint` or ConfigError. `where` is the dotted key path used
    in messages."""
    return _coercer(hint)(hint, value, where)


@functools.cache
def _checks(cls: type) -> tuple[tuple[str, Any, Callable[[Any, Any, str], Any]], ...]:
    """(name, hint, coercer) of each init field of dataclass `cls`: what `validate` runs."""
    hints = _hints(cls)
    return tuple((f.name, hints[f.name], _coercer(hints[f.name])) for f in _init_fields(cls))


# -----------------------------------------------------------------------------
# Dataclasses


def _check_unknown(cls: type, data: Mapping[Any, Any], where: str) -> None:
    """One error naming every key of `data` that is no init field of `cls`, with the valid ones."""
    names = [f.name for f in _init_fields(cls)]
    unknown = [_join(where, key) for key in data if key not in names]
    if unknown:
        noun = "unknown key" if len(unknown) == 1 else "unknown keys"
        under = f" under {where}" if where else ""
        raise ConfigError(f"{', '.join(unknown)}: {noun}; valid keys{under}: {', '.join(names)}")


def _check_missing(cls: type, data: Mapping[Any, Any], where: str) -> None:
    """One error naming every init field of `cls` without a default that `data` lacks."""
    missing = [
        _join(where, f.name)
        for f in _init_fields(cls)
        if f.name not in data
        and f.default is dataclasses.MISSING
        and f.default_factory is dataclasses.MISSING
    ]
    if missing:
        noun = "missing key" if len(missing) == 1 else "missing keys"
        raise ConfigError(f"{', '.join(missing)}: {noun}, required (no default)")


def _construct(cls: type[T], kwargs: dict[str, Any], where: str) -> T:
    """`cls(**kwargs)`; a ValueError or TypeError it raises becomes a one-line ConfigError
    (a ConfigError, which names its own key path, passes as it is)."""
    try:
        return cls(**kwargs)
    except ConfigError:  # raised with its own full key path (a nested check)
        raise
    except (TypeError, ValueError) as err:
        message, label = _one_line(str(err)), where or "config"
        if message.startswith((f"{label}:", f"{label}.")):
            raise ConfigError(message) from None
        raise ConfigError(f"{label}: {message}") from None


def from_data(cls: type[T], data: Any, where: str = "") -> T:
    """Build dataclass `cls` from nested plain data (YAML / JSON / --set values), every field
    checked against its type hint."""
    if not isinstance(data, Mapping):
        raise _fail(where, f"expected a mapping of fields, got {data!r}")
    _check_unknown(cls, data, where)
    _check_missing(cls, data, where)
    hints = _hints(cls)
    kwargs = {name: coerce(hints[name], value, _join(where, name)) for name, value in data.items()}
    return _construct(cls, kwargs, where)


def validate(obj: Any) -> None:
    """Check (and normalise in place) every field of a dataclass instance against its type
    hints; for __post_init__ of config dataclasses built directly in Python."""
    for name, hint, coercer in _checks(type(obj)):
        value = getattr(obj, name)
        checked = coercer(hint, value, name)
        if checked is not value:
            object.__setattr__(obj, name, checked)  # works for frozen dataclasses too


def _plain(value: Any) -> Any:
    """`value` with dataclasses as dicts and tuples as lists, recursively."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return to_data(value)
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def to_data(obj: Any) -> dict[str, Any]:
    """A dataclass instance as plain nested data (dicts, lists, scalars) that JSON and YAML
    can hold; tuples become lists."""
    return {f.name: _plain(getattr(obj, f.name)) for f in _init_fields(type(obj))}


# -----------------------------------------------------------------------------
# Plain nested data: merging and `--set` assignments


def _fresh(value: Any) -> Any:
    """`value` with every dict and list in it copied (leaves shared)."""
    if isinstance(value, dict):
        return {k: _fresh(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_fresh(v) for v in value]
    return value


def merge(base: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """A new dict: `new` deep-merged over `base` (nested dicts merged key by key, anything
    else replaced)."""
    out = _fresh(base)
    for key, value in new.items():
        old = out.get(key)
        both_dicts = isinstance(old, dict) and isinstance(value, dict)
        out[key] = merge(old, value) if both_dicts else _fresh(value)
    return out


def _parse_assignment(item: str) -> tuple[list[str], Any]:
    """The key path and the YAML-parsed value of one `a.b.c=value` string."""
    import yaml  # only here: the module stays cheap to import

    key, sep, raw = item.partition("=")
    path = key.strip().split(".")
    if not sep or not all(path):
        raise ConfigError(f"--set {item!r}: expected KEY=VALUE, e.g. train.steps=100")
    try:
        return path, yaml.safe_load(raw)
    except yaml.YAMLError as err:
        problem = getattr(err, "problem", None) or _one_line(str(err))
        raise ConfigError(f"--set {item!r}: the value is not valid YAML ({problem})") from None


def apply_assignments(data: dict[str, Any], assignments: list[str]) -> dict[str, Any]:
    """Apply `a.b.c=value` strings (values parsed as YAML) to nested `data` in place and
    return it; a malformed string is a ConfigError."""
    for item in assignments:
        path, value = _parse_assignment(item)
        node = data
        for depth, part in enumerate(path[:-1], start=1):
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"--set {item!r}: {'.'.join(path[:depth])} is not a section")
        node[path[-1]] = value
    return data
