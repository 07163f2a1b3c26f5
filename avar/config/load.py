"""params.yaml -> typed `Params`, with `section.key=value` overrides.

Problems are reported as `ConfigError`s that name the key path and, for keys read from a
file, the file and line: `params.yaml:12: rl.group_size: expected an int >= 2, got 1`.
"""

from __future__ import annotations

import dataclasses
import math
import re
import types
import typing
from pathlib import Path
from typing import Any, Literal

import yaml

from avar.config.errors import ConfigError
from avar.config.schema import Params


def load_params(path: str | Path = "params.yaml", overrides: list[str] | None = None) -> Params:
    """Read params.yaml, apply overrides, validate; keys left out take their defaults."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(
            "<file>",
            "params file not found (run from the project root or pass --params)",
            f"{path}: ",
        )
    data, lines = _read_yaml(path)
    overridden: dict[str, str] = {}
    for override in overrides or []:
        overridden[_apply_override(data, override)] = override
    try:
        params = from_dict(Params, data, "")
        params.check()
    except ConfigError as err:
        raise err.located(_where(err.key, path, lines, overridden)) from None
    return params


def _where(key: str, path: Path, lines: dict[str, int], overridden: dict[str, str]) -> str:
    """`override 'a.b=1': ` when an override set the key, else `file:line: `."""
    key = key.split("[")[0]
    for candidate, override in overridden.items():
        if key == candidate or key.startswith(candidate + "."):
            return f"override '{override}': "
    line = _nearest_line(key, lines)
    return f"{path}:{line}: " if line else f"{path}: "


_FLOAT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")


def from_dict(cls: Any, data: Any, key: str) -> Any:
    """Build dataclass `cls` from a mapping, checking every key and type.

    An empty section (`rl:` with nothing under it) takes all its defaults."""
    data = {} if data is None else data
    if not isinstance(data, dict):
        raise ConfigError(key or "<root>", f"expected a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    for name in data:
        if name not in known:
            where = f"{key}.{name}" if key else str(name)
            raise ConfigError(where, f"unknown key; expected one of: {', '.join(sorted(known))}")
    values = {}
    for name, value in data.items():
        sub = f"{key}.{name}" if key else name
        values[name] = _convert(hints[name], value, sub)
    return cls(**values)


def _convert(hint: Any, value: Any, key: str) -> Any:
    origin = typing.get_origin(hint)
    if dataclasses.is_dataclass(hint):
        return from_dict(hint, value, key)
    if origin is Literal:
        allowed = typing.get_args(hint)
        if value not in allowed:
            raise ConfigError(key, f"expected one of {list(allowed)}, got {value!r}")
        return value
    if origin is dict:
        _, item = typing.get_args(hint)
        if not isinstance(value, dict):
            raise ConfigError(key, f"expected a mapping, got {value!r}")
        return {str(k): _convert(item, v, f"{key}.{k}") for k, v in value.items()}
    if origin is list:
        (item,) = typing.get_args(hint)
        if not isinstance(value, list):
            raise ConfigError(key, f"expected a list, got {value!r}")
        return [_convert(item, v, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin in (typing.Union, types.UnionType):
        for option in typing.get_args(hint):
            try:
                return _convert(option, value, key)
            except ConfigError:
                continue
        raise ConfigError(key, f"expected {hint}, got {value!r}")
    return _scalar(hint, value, key)


def _scalar(hint: type, value: Any, key: str) -> Any:
    if hint is type(None):
        if value is not None:
            raise ConfigError(key, f"expected null, got {value!r}")
        return None
    # bool is an int in Python; a YAML `true` must not pass as a number.
    if hint is float and isinstance(value, int | float) and not isinstance(value, bool):
        if not math.isfinite(value):  # YAML reads `.nan` and `.inf` as floats
            raise ConfigError(key, f"expected a finite float, got {value!r}")
        return float(value)
    if hint is float and isinstance(value, str) and _FLOAT.fullmatch(value.strip()):
        return float(value)  # YAML 1.1 reads `3e-3` (no dot) as a string
    if hint is str and isinstance(value, int) and not isinstance(value, bool):
        return str(value)  # `gpus: 2`, `-S orchestrate.gpus=2`
    if isinstance(value, hint) and not (hint is int and isinstance(value, bool)):
        return value
    raise ConfigError(key, f"expected {hint.__name__}, got {value!r}")


def _apply_override(data: dict[str, Any], override: str) -> str:
    """Apply `a.b.c=value` (value parsed as YAML) to the nested mapping; return `a.b.c`."""
    dotted, sep, raw = override.partition("=")
    if not sep or not dotted.strip():
        raise ConfigError(override, "override must look like section.key=value")
    parts = dotted.strip().split(".")
    node = data
    for part in parts[:-1]:
        if node.get(part) is None:
            node[part] = {}
        node = node[part]
        if not isinstance(node, dict):
            raise ConfigError(dotted, f"cannot set a key inside the non-mapping '{part}'")
    try:
        node[parts[-1]] = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as err:
        raise ConfigError(dotted, f"override value is not valid YAML: {err}") from None
    return ".".join(parts)


def _read_yaml(path: Path) -> tuple[dict[str, Any], dict[str, int]]:
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        bad_line = raw[: err.start].count(b"\n") + 1
        raise ConfigError("<file>", "not UTF-8 text", f"{path}:{bad_line}: ") from None
    try:
        node = yaml.compose(text)
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        line = f"{mark.line + 1}:" if mark else ""
        raise ConfigError("<yaml>", f"not valid YAML: {err}", f"{path}:{line} ") from None
    if data is None:
        return {}, {}
    if not isinstance(data, dict):
        raise ConfigError("<root>", "expected a mapping of sections", f"{path}: ")
    lines: dict[str, int] = {}
    _collect_lines(node, "", lines, path)
    return data, lines


def _collect_lines(node: yaml.Node, prefix: str, lines: dict[str, int], path: Path) -> None:
    """Line of every key; a key written twice in one mapping is an error (YAML would keep
    the last silently)."""
    if not isinstance(node, yaml.MappingNode):
        return
    seen: set[str] = set()
    for key_node, value_node in node.value:
        key = f"{prefix}.{key_node.value}" if prefix else str(key_node.value)
        line = key_node.start_mark.line + 1
        if key in seen:
            raise ConfigError(
                key, f"written twice (first at line {lines[key]})", f"{path}:{line}: "
            )
        seen.add(key)
        lines[key] = line
        _collect_lines(value_node, key, lines, path)


def _nearest_line(key: str, lines: dict[str, int]) -> int | None:
    """Line of the key, or of its closest enclosing section that the file has."""
    while key:
        if key in lines:
            return lines[key]
        key = key.rpartition(".")[0]
    return None


def to_dict(params: Params) -> dict[str, Any]:
    """Plain nested dict of the params (for logging and `avar params show`)."""
    return dataclasses.asdict(params)


def flatten(params: Params | Any, prefix: str = "") -> dict[str, Any]:
    """`section.key` -> value, lists joined by commas (MLflow params are flat strings).

    Takes the params, one section of them or a plain dict; `prefix` names the root."""
    flat: dict[str, Any] = {}

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, dict):
            for k, v in value.items():
                walk(f"{prefix}.{k}" if prefix else k, v)
        else:
            flat[prefix] = ",".join(map(str, value)) if isinstance(value, list) else value

    walk(prefix, params if isinstance(params, dict) else dataclasses.asdict(params))
    return flat
