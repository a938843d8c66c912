"""YAML configs: safe loading, `--set key=value` overrides and schema validation with clear errors.

A schema is a plain dict: key -> `Field` (a leaf) or another dict (a nested section). Validation
fills defaults, rejects unknown keys and names the file and dotted key of any bad value.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from asc.errors import ConfigError

_REQUIRED = object()


@dataclass(frozen=True)
class Field:
    """One leaf of a schema: its type(s), default, allowed choices and numeric bounds."""

    types: type | tuple[type, ...]
    default: Any = _REQUIRED
    choices: tuple | None = None
    min: float | None = None
    max: float | None = None
    min_exclusive: bool = False
    nullable: bool = False
    help: str = field(default="", compare=False)

    @property
    def required(self) -> bool:
        return self.default is _REQUIRED


def load_yaml(path: str | os.PathLike) -> dict:
    """Read a YAML mapping with `yaml.safe_load`; errors name the file and line."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such config file") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read ({exc.strerror})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"{where}: invalid YAML: {problem}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of keys to values at the top level")
    return data


def parse_override(text: str) -> tuple[list[str], Any]:
    """`train.lr=0.05` -> (["train", "lr"], 0.05); the value is parsed as YAML."""
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key or any(not part for part in key.split(".")):
        raise ConfigError(f"--set {text!r}: expected key=value, e.g. --set train.epochs=10")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return key.split("."), value


def apply_overrides(cfg: Mapping, overrides: Iterable[str]) -> dict:
    """Return a copy of `cfg` with each `key=value` applied (nested keys with dots)."""
    out = copy.deepcopy(dict(cfg))
    for text in overrides:
        keys, value = parse_override(text)
        node = out
        for k in keys[:-1]:
            child = node.get(k)
            if child is None:
                child = node[k] = {}
            elif not isinstance(child, dict):
                raise ConfigError(f"--set {text!r}: {k!r} is a value, not a section")
            node = child
        node[keys[-1]] = value
    return out


def _type_name(types: type | tuple[type, ...]) -> str:
    types = types if isinstance(types, tuple) else (types,)
    return " or ".join(t.__name__ for t in types)


def _check_leaf(spec: Field, value: Any, where: str) -> Any:
    if value is None:
        if spec.nullable:
            return None
        raise ConfigError(f"{where}: a value is required ({_type_name(spec.types)})")
    types = spec.types if isinstance(spec.types, tuple) else (spec.types,)
    if float in types and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if isinstance(value, bool) and bool not in types:
        raise ConfigError(f"{where}: expected {_type_name(types)}, got {value!r}")
    if not isinstance(value, types):
        raise ConfigError(f"{where}: expected {_type_name(types)}, got {value!r}")
    if spec.choices is not None and value not in spec.choices:
        allowed = ", ".join(str(c) for c in spec.choices)
        raise ConfigError(f"{where}: {value!r} is not one of: {allowed}")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if spec.min is not None and (value < spec.min or (spec.min_exclusive and value == spec.min)):
            op = ">" if spec.min_exclusive else ">="
            raise ConfigError(f"{where}: {value!r} must be {op} {spec.min}")
        if spec.max is not None and value > spec.max:
            raise ConfigError(f"{where}: {value!r} must be <= {spec.max}")
    return value


def validate(cfg: Mapping, schema: Mapping, source: str = "config", prefix: str = "") -> dict:
    """Check `cfg` against `schema`, fill defaults, and return the resolved dict."""
    if not isinstance(cfg, Mapping):
        raise ConfigError(f"{source}: {prefix.rstrip('.') or 'top level'} must be a mapping")
    unknown = sorted(set(cfg) - set(schema))
    if unknown:
        known = ", ".join(sorted(schema))
        raise ConfigError(f"{source}: unknown key {prefix}{unknown[0]!s} (known keys: {known})")
    out: dict = {}
    for key, spec in schema.items():
        where = f"{source}: {prefix}{key}"
        if isinstance(spec, Mapping):
            out[key] = validate(cfg.get(key) or {}, spec, source, f"{prefix}{key}.")
        elif key in cfg:
            out[key] = _check_leaf(spec, cfg[key], where)
        elif spec.required:
            raise ConfigError(f"{where}: missing required key")
        else:
            out[key] = copy.deepcopy(spec.default)
    return out


def config_hash(cfg: Mapping, length: int = 12) -> str:
    """A stable short hash of a resolved config (key order and YAML formatting do not matter)."""
    blob = json.dumps(cfg, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:length]


def dump_yaml(cfg: Mapping) -> str:
    return yaml.safe_dump(dict(cfg), sort_keys=False, default_flow_style=False)
