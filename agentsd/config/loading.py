"""Loading a config: YAML files merged in order, key.path=value overrides, one validation.

Any problem raises ConfigError naming the file or override, the field path, the value given and what
was expected. Not guaranteed: values are parsed as YAML, so an override's type is YAML's guess.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from agentsd.errors import ConfigError

C = TypeVar("C", bound=BaseModel)
_Path = tuple[str, ...]


def load_config(kind: type[C], files: Sequence[str | Path] = (), overrides: Sequence[str] = ()) -> C:
    """Merge YAML files and key.path=value overrides, then validate once against `kind`."""
    merged: dict[str, Any] = {}
    origin: dict[_Path, str] = {}
    for file in files:
        _merge(merged, read_yaml_mapping(Path(file)), (), str(file), origin)
    for item in overrides:
        key, value = _parse_override(item)
        _merge(merged, _nest(key, value), (), f"override {item!r}", origin)
    try:
        return kind.model_validate(merged)
    except ValidationError as exc:
        raise ConfigError(_explain(kind, exc, merged, origin)) from None


def read_yaml_mapping(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"config file {path}: cannot be read ({exc.strerror or exc})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"config file {path}: not valid YAML{where}: {problem}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(
            f"config file {path}: expected a mapping of sections at the top, got {type(data).__name__}"
        )
    return data


def _parse_override(item: str) -> tuple[str, Any]:
    key, sep, raw = item.partition("=")
    key = key.strip()
    if not sep or not key or any(not part for part in key.split(".")):
        raise ConfigError(f"override {item!r}: expected key.path=value")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return key, value


def _nest(dotted: str, value: Any) -> dict[str, Any]:
    out: Any = value
    for part in reversed(dotted.split(".")):
        out = {part: out}
    return out


def _merge(
    dst: dict[str, Any], src: dict[str, Any], prefix: _Path, source: str, origin: dict[_Path, str]
) -> None:
    for key, value in src.items():
        path = (*prefix, str(key))
        if isinstance(value, dict) and isinstance(dst.get(key), dict):
            _merge(dst[key], value, path, source, origin)
        else:
            dst[key] = value
            origin[path] = source


def _field_path(loc: tuple[Any, ...], data: Any) -> _Path:
    """The error location as the user spells it: without the union tags pydantic inserts."""
    path: list[str] = []
    for i, part in enumerate(loc):
        tags = {v for v in data.values() if isinstance(v, str)} if isinstance(data, dict) else set()
        if isinstance(data, dict) and part not in data and part in tags and i + 1 < len(loc):
            continue  # a discriminated-union tag (the value of `backend`), not a key of the input
        path.append(str(part))
        data = data.get(part) if isinstance(data, dict) else None
    return tuple(path)


def _explain(
    kind: type[BaseModel], exc: ValidationError, data: dict[str, Any], origin: dict[_Path, str]
) -> str:
    lines = [f"invalid {kind.__name__} ({exc.error_count()} problem{'s' if exc.error_count() > 1 else ''}):"]
    for err in exc.errors(include_url=False):
        loc = _field_path(err["loc"], data)
        field = ".".join(loc) or "<top>"
        source = next((origin[loc[:i]] for i in range(len(loc), 0, -1) if loc[:i] in origin), "defaults")
        if err["type"] == "missing":
            lines.append(f"  {field}: required but not given")
        elif err["type"] == "extra_forbidden":
            lines.append(f"  {field}: unknown field (from {source})")
        else:
            lines.append(f"  {field} = {err.get('input')!r} (from {source}): expected {_expected(err)}")
    return "\n".join(lines)


def _expected(err: Any) -> str:
    msg = str(err["msg"])
    for prefix in ("Input should be ", "Value error, "):
        if msg.startswith(prefix):
            return msg[len(prefix) :]
    return msg
