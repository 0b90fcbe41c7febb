"""One builder from nested mappings (a YAML file, a checkpoint's JSON, `key=value` overrides) to
the typed, frozen config dataclasses (`StageConfig`, `TrainConfig`, `SampleConfig`,
`CodecTrainConfig`), and back.

`from_dict(cls, data)` reads the field annotations of `cls` and checks every key against them:
- a nested dataclass field takes a mapping (or an instance; null = its defaults);
- `tuple[X, Y]` takes a list of exactly two values, `tuple[X, ...]` a list of any length;
- `int` takes integers (and integral floats), `float` numbers (and YAML 1.1's "1e-5" strings),
  `str` strings (and numbers), `bool` true/false only; `A | None` takes null.
Every failure is a one-line `ConfigError` that names the dotted key: an unknown key (with the
closest known one), a value of the wrong type, a missing required field, a section that is not a
mapping. The dataclass's own `validate()` then checks the values.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from typing import Any, TypeVar, Union

from stage.errors import ConfigError

T = TypeVar("T")


def from_dict(cls: type[T], data: Any, *, where: str = "", what: str = "config") -> T:
    """Build the dataclass `cls` from the mapping `data` (see the module docstring).

    where: written before every key the messages name: "" at the top of a file, "lm." when the
    caller builds one section on its own. what: names the mapping in messages ("unknown config key
    'trainer.max_step'", "unknown sample config key 'window'").
    """
    return _build(cls, data, where, "", what)


def to_dict(config: Any) -> dict[str, Any]:
    """A config dataclass -> nested plain dicts and lists (tuples become lists), ready for YAML or
    JSON; `from_dict` reads it back to an equal config."""
    return _plain(dataclasses.asdict(config))


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _build(kind: type, value: Any, where: str, path: str, what: str) -> Any:
    section = (where + path).rstrip(".")
    if isinstance(value, kind):
        return value
    if not isinstance(value, dict):
        raise ConfigError(f"{section or what} must be a mapping, got {_describe(value)}")
    hints = typing.get_type_hints(kind)
    fields = {f.name: f for f in dataclasses.fields(kind)}
    kwargs: dict[str, Any] = {}
    for key, raw in value.items():
        if not isinstance(key, str) or key not in fields:
            close = difflib.get_close_matches(str(key), list(fields), n=1)
            hint = f" (did you mean {where}{path + close[0]!r}?)" if close else f"; known keys: {', '.join(fields)}"
            raise ConfigError(f"unknown {what} key {where}{path + str(key)!r}{hint}")
        kwargs[key] = _coerce(hints[key], raw, where, f"{path}{key}", what)
    for name, f in fields.items():
        if name not in kwargs and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ConfigError(f"{section or what} needs {name}")
    try:
        return kind(**kwargs)
    except ConfigError as err:  # the section's own validate(): say which section it is
        if path:
            raise ConfigError(f"{section}: {err}") from None
        raise
    except TypeError as err:  # pragma: no cover - the checks above leave none
        raise ConfigError(f"bad config section {section or what!r}: {err}") from None


def _coerce(tp: Any, raw: Any, where: str, path: str, what: str) -> Any:
    """Check (and gently convert) `raw` against the annotation `tp`, naming `where + path`."""
    name = where + path
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        return _build(tp, {} if raw is None else raw, where, f"{path}.", what)
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        options = typing.get_args(tp)
        if raw is None and type(None) in options:
            return None
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return _coerce(option, raw, where, path, what)
            except ConfigError as err:
                errors.append(err)
        raise errors[0] if len(errors) == 1 else ConfigError(f"{name} has the wrong type: got {_describe(raw)}")
    if origin is tuple:
        args = typing.get_args(tp)
        if len(args) == 2 and args[1] is Ellipsis:  # tuple[X, ...]: any length
            if not isinstance(raw, (list, tuple)):
                raise ConfigError(f"{name} must be a list, got {_describe(raw)}")
            args = (args[0],) * len(raw)
        elif not isinstance(raw, (list, tuple)) or len(raw) != len(args):
            raise ConfigError(f"{name} must be a list of {len(args)} values, got {_describe(raw)}")
        return tuple(_coerce(a, r, where, f"{path}[{i}]", what) for i, (a, r) in enumerate(zip(args, raw)))
    if tp is bool:
        if isinstance(raw, bool):
            return raw
        raise ConfigError(f"{name} must be true or false, got {_describe(raw)}")
    if tp is int:
        if isinstance(raw, int) and not isinstance(raw, bool):
            return raw
        if isinstance(raw, float) and raw.is_integer():
            return int(raw)
        raise ConfigError(f"{name} must be an integer, got {_describe(raw)}")
    if tp is float:
        if isinstance(raw, (int, float)) and not isinstance(raw, bool):
            return float(raw)
        if isinstance(raw, str):  # YAML 1.1 reads "1e-5" (no dot) as a string
            try:
                return float(raw)
            except ValueError:
                pass
        raise ConfigError(f"{name} must be a number, got {_describe(raw)}")
    if tp is str:
        if isinstance(raw, str):
            return raw
        if isinstance(raw, (int, float)) and not isinstance(raw, bool):
            return str(raw)
        raise ConfigError(f"{name} must be a string, got {_describe(raw)}")
    raise TypeError(f"unsupported config annotation {tp!r} for {name}")  # a programming error


def _describe(value: Any) -> str:
    text = repr(value)
    if len(text) > 60:
        text = text[:57] + "..."
    return f"{text} ({type(value).__name__})" if value is not None else "null"
