"""YAML configs: safe loading, `--set key=value` overrides and schema validation with clear errors.

One loader reads every config (recipes, model configs, feature configs, `--set` values):
- safe only: plain values, lists and mappings; any YAML tag other than the core ones (!!str, !!int,
  !!float, !!bool, !!null, !!seq, !!map) is refused, so `!!python/object` never builds anything;
- numbers as YAML 1.2 reads them: 1e-3, 1E5, -2.5e-4, .5 and 1. are floats, 010 is ten (not octal
  eight) and 1:30 or 2020-01-01 stay strings; true/false/yes/no/on/off stay booleans (YAML 1.1);
- a key given twice in one mapping, a non-UTF-8 file, a top level that is not a mapping and a
  recursive alias are errors naming the file and line.

A loaded config is a `ConfigDict`: a dict that also remembers where each dotted key came from (an
`Origin`: file and line, or the `--set` that gave it). `validate` uses it so that a bad value is
reported at its source: "recipes/x.yaml:21: train.lr: ..." or "--set train.lr=abc: ...", and
`Origin.base` tells path values which folder they are relative to.

A schema is a plain dict: key -> `Field` (a leaf) or another dict (a nested section). Validation
fills defaults, rejects unknown keys and non-finite numbers, and names the source of any bad value.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from yaml.constructor import ConstructorError
from yaml.nodes import MappingNode, ScalarNode, SequenceNode

from asc.errors import ConfigError

_REQUIRED = object()
_TAG = "tag:yaml.org,2002:"
_MAX_VALUES = 100_000  # a config is small; more than this after expanding aliases is an alias bomb


@dataclass(frozen=True)
class Field:
    """One leaf of a schema: its type(s), default, allowed choices and numeric bounds.

    Floats (also inside list and dict values) must be finite unless `finite=False`.
    """

    types: type | tuple[type, ...]
    default: Any = _REQUIRED
    choices: tuple | None = None
    min: float | None = None
    max: float | None = None
    min_exclusive: bool = False
    nullable: bool = False
    finite: bool = True
    help: str = field(default="", compare=False)

    @property
    def required(self) -> bool:
        return self.default is _REQUIRED


# --------------------------------------------------------------------------------------------------
# where a value came from


@dataclass(frozen=True)
class Origin:
    """Where a config value was given: a YAML file (and line), or a command-line argument."""

    file: str | None = None
    line: int | None = None
    arg: str | None = None  # e.g. "--set train.lr=1e-3", "--norm l2bn"

    def __str__(self) -> str:
        if self.arg is not None:
            return self.arg
        return f"{self.file}:{self.line}" if self.line is not None else str(self.file)

    @property
    def command_line(self) -> bool:
        return self.arg is not None

    @property
    def base(self) -> Path:
        """The folder a relative path given here is relative to: the file's folder, else the cwd."""
        if self.file is not None and self.arg is None:
            return Path(os.path.abspath(self.file)).parent
        return Path.cwd()


class ConfigDict(dict):
    """A dict plus `origins`: dotted key (a tuple) -> `Origin` of the value given there.

    Only the top-level dict carries origins; nested sections are plain dicts.
    """

    def __init__(self, *args: Any, origins: Mapping[tuple, Origin] | None = None, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.origins: dict[tuple, Origin] = dict(origins or {})

    def set_origin(self, path: tuple, origin: Origin) -> None:
        """Record that `path` was (re)placed from `origin`; what was recorded below it is gone."""
        n = len(path)
        for p in [p for p in self.origins if len(p) > n and p[:n] == path]:
            del self.origins[p]
        self.origins[path] = origin


def origins_of(cfg: Any) -> dict[tuple, Origin]:
    return getattr(cfg, "origins", None) or {}


def find_origin(origins: Mapping[tuple, Origin], path: tuple) -> tuple[Origin | None, bool]:
    """The origin of `path` or of its nearest section that has one; and whether it is `path`'s own."""
    for i in range(len(path), 0, -1):
        found = origins.get(tuple(path[:i]))
        if found is not None:
            return found, i == len(path)
    return None, False


def describe(path: Iterable, origins: Mapping[tuple, Origin], source: str) -> str:
    """The "where" of a message about the value at `path`.

    "--set train.lr=abc" when that --set gave exactly this value, else "<origin or source>: train.lr".
    """
    path = tuple(path)
    dotted = ".".join(str(p) for p in path)
    origin, own = find_origin(origins, path)
    if origin is not None and origin.command_line and own:
        return str(origin)
    where = str(origin) if origin is not None else source
    return f"{where}: {dotted}" if dotted else where


# --------------------------------------------------------------------------------------------------
# the loader


_INT_RE = re.compile(r"""^(?:[-+]?[0-9][0-9_]*
                         |[-+]?0o[0-7_]+
                         |[-+]?0x[0-9a-fA-F_]+
                         |[-+]?0b[01_]+)$""", re.X)
_FLOAT_RE = re.compile(r"""^(?:[-+]?(?:[0-9][0-9_]*\.[0-9_]*|\.[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)?
                           |[-+]?[0-9][0-9_]*[eE][-+]?[0-9]+
                           |[-+]?\.(?:inf|Inf|INF)
                           |\.(?:nan|NaN|NAN))$""", re.X)
# YAML 1.1 resolvers that surprise in a config: sexagesimal/octal numbers, dates, the '=' value key
_DROPPED = {_TAG + "int", _TAG + "float", _TAG + "timestamp", _TAG + "value"}


def _resolvers() -> dict:
    table = {ch: [(tag, rx) for tag, rx in rs if tag not in _DROPPED]
             for ch, rs in yaml.SafeLoader.yaml_implicit_resolvers.items()}
    for ch in "-+0123456789":
        table.setdefault(ch, []).append((_TAG + "int", _INT_RE))
    for ch in "-+0123456789.":
        table.setdefault(ch, []).append((_TAG + "float", _FLOAT_RE))
    return {ch: rs for ch, rs in table.items() if rs}


class _DuplicateKey(ConstructorError):
    def __init__(self, node: MappingNode, key: Any, first: yaml.Mark, again: yaml.Mark) -> None:
        super().__init__("while constructing a mapping", node.start_mark, f"found duplicate key {key!r}",
                         again)
        self.node, self.key, self.first = node, key, first
        self.root: yaml.Node | None = None


class _ForbiddenTag(ConstructorError):
    def __init__(self, node: yaml.Node) -> None:
        tag = node.tag
        self.tag = "!!" + tag[len(_TAG):] if tag.startswith(_TAG) else tag
        super().__init__(None, None, f"YAML tag {self.tag} is not allowed", node.start_mark)


class _BadScalar(ConstructorError):
    def __init__(self, node: ScalarNode) -> None:
        self.tag = "!!" + node.tag[len(_TAG):] if node.tag.startswith(_TAG) else node.tag
        super().__init__(None, None, f"{_brief(node.value)} is not a valid {self.tag}", node.start_mark)


class _Loader(yaml.SafeLoader):
    """SafeLoader with YAML 1.2 numbers, duplicate-key errors and only the core tags."""

    yaml_implicit_resolvers = _resolvers()
    yaml_constructors: dict = {}
    yaml_multi_constructors: dict = {}

    def construct_mapping(self, node: MappingNode, deep: bool = False) -> dict:  # noqa: D102
        if isinstance(node, MappingNode):
            seen: dict = {}
            for key_node, _ in node.value:
                if not isinstance(key_node, ScalarNode) or key_node.tag == _TAG + "merge":
                    continue
                key = self.construct_object(key_node, deep=True)
                try:
                    first = seen.setdefault(key, key_node.start_mark)
                except TypeError:
                    continue
                if first is not key_node.start_mark:
                    raise _DuplicateKey(node, key, first, key_node.start_mark)
        return super().construct_mapping(node, deep=deep)

    def construct_yaml_int(self, node: ScalarNode) -> int:  # noqa: D102
        text = str(self.construct_scalar(node)).replace("_", "")
        sign = -1 if text[:1] == "-" else 1
        text = text.lstrip("+-")
        bases = {"0x": 16, "0X": 16, "0o": 8, "0b": 2}
        try:
            return sign * int(text[2:], bases[text[:2]]) if text[:2] in bases else sign * int(text, 10)
        except ValueError:
            raise _BadScalar(node) from None


def _guarded(construct):
    def wrapper(loader: _Loader, node: yaml.Node) -> Any:
        try:
            return construct(loader, node)
        except (ValueError, KeyError, TypeError, OverflowError):
            raise _BadScalar(node) from None
    return wrapper


def _refuse(loader: _Loader, node: yaml.Node) -> Any:
    raise _ForbiddenTag(node)


for _name in ("null", "bool", "float", "str"):
    _Loader.add_constructor(_TAG + _name, _guarded(yaml.SafeLoader.yaml_constructors[_TAG + _name]))
_Loader.add_constructor(_TAG + "int", _Loader.construct_yaml_int)
_Loader.add_constructor(_TAG + "seq", yaml.SafeLoader.yaml_constructors[_TAG + "seq"])
_Loader.add_constructor(_TAG + "map", yaml.SafeLoader.yaml_constructors[_TAG + "map"])
_Loader.add_constructor(None, _refuse)


class _Dumper(yaml.SafeDumper):
    """Writes YAML that both `_Loader` and a plain YAML 1.1 `yaml.safe_load` read back unchanged.

    A string either of them would read as something else ('1e-3', '1:30', '2020-01-01') gets quotes.
    """

    yaml_implicit_resolvers = {
        ch: [*yaml.SafeDumper.yaml_implicit_resolvers.get(ch, []),
             *_Loader.yaml_implicit_resolvers.get(ch, [])]
        for ch in {*yaml.SafeDumper.yaml_implicit_resolvers, *_Loader.yaml_implicit_resolvers}
    }


_Dumper.add_representer(ConfigDict, yaml.representer.SafeRepresenter.represent_dict)
yaml.SafeDumper.add_representer(ConfigDict, yaml.representer.SafeRepresenter.represent_dict)


def _short(text: str) -> str:
    return " ".join(str(text).split())


def _brief(value: Any, limit: int = 60) -> str:
    """repr(value), cut to `limit` characters so that a message stays one readable line."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _node_path(root: yaml.Node, target: yaml.Node) -> tuple | None:
    """Dotted path of `target` below `root` (string keys), or None if not found."""
    stack = [(root, ())]
    seen = set()
    while stack:
        node, path = stack.pop()
        if node is target:
            return path
        if id(node) in seen:
            continue
        seen.add(id(node))
        if isinstance(node, MappingNode):
            for k, v in node.value:
                stack.append((v, (*path, k.value if isinstance(k, ScalarNode) else "?")))
        elif isinstance(node, SequenceNode):
            stack.extend((v, (*path, str(i))) for i, v in enumerate(node.value))
    return None


def _origins(loader: _Loader, root: yaml.Node, file: str) -> dict[tuple, Origin]:
    """Dotted key -> Origin(file, line) for every scalar key; refuses recursive or exploding aliases."""
    out: dict[tuple, Origin] = {}
    count = 0

    def walk(node: yaml.Node, path: tuple | None, active: set) -> None:
        nonlocal count
        count += 1
        if count > _MAX_VALUES:
            raise ConfigError(f"{file}: more than {_MAX_VALUES} values once aliases are expanded; "
                              "a config is small, write it out without nested aliases")
        if id(node) in active:
            raise ConfigError(f"{file}:{node.start_mark.line + 1}: a YAML alias that contains itself; "
                              "a config must be a tree, remove the alias")
        if isinstance(node, MappingNode):
            active.add(id(node))
            for k, v in node.value:
                here = None
                if path is not None and isinstance(k, ScalarNode):
                    here = (*path, loader.construct_object(k, deep=True))
                    out.setdefault(here, Origin(file, k.start_mark.line + 1))
                walk(v, here, active)
            active.discard(id(node))
        elif isinstance(node, SequenceNode):
            active.add(id(node))
            for v in node.value:
                walk(v, None, active)
            active.discard(id(node))

    walk(root, (), set())
    return out


def _yaml_problem(exc: yaml.YAMLError, text: str) -> tuple[int | None, str]:
    """(line, message) for a YAML error."""
    if isinstance(exc, _DuplicateKey):
        line = exc.problem_mark.line + 1
        parent = _node_path(exc.root, exc.node) if exc.root is not None else None
        key = ".".join([*(parent or ()), str(exc.key)])
        return line, (f"duplicate key {key} (first given on line {exc.first.line + 1}); YAML would keep "
                      "only the last one, so delete one of them")
    if isinstance(exc, _ForbiddenTag):
        return exc.problem_mark.line + 1, (f"YAML tag {exc.tag} is not allowed in a config (only plain "
                                           "values, lists and mappings are read); remove the tag")
    if isinstance(exc, _BadScalar):
        return exc.problem_mark.line + 1, f"{_short(exc.problem)}; write a plain value without the tag"
    if isinstance(exc, yaml.reader.ReaderError):
        line = text.count("\n", 0, exc.position) + 1
        char = exc.character if isinstance(exc.character, int) else ord(exc.character)
        return line, f"unacceptable character #x{char:04x} in YAML; is this a text (YAML) file?"
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    context = getattr(exc, "context", None)
    if problem.startswith("but ") and context:
        detail = f"{_short(context)}, {_short(problem)}"
    else:
        detail = f"{_short(problem)} ({_short(context)})" if context else _short(problem)
    if "'\\t'" in problem:
        hint = "indent with spaces, not tabs"
    elif "another document" in problem:
        hint = "a config is one document: remove the '---' line and what follows, or merge them"
    else:
        hint = "check the indentation and quoting there"
    return (mark.line + 1 if mark is not None else None), f"invalid YAML: {detail}; {hint}"


def _parse(text: str, file: str) -> tuple[Any, yaml.Node | None, dict[tuple, Origin]]:
    """YAML text -> (data, root node, origins of its keys); raises yaml.YAMLError."""
    loader = _Loader(text)
    try:
        root = loader.get_single_node()
        if root is None:
            return None, None, {}
        try:
            data = loader.construct_document(root)
        except _DuplicateKey as exc:
            exc.root = root  # to name the key by its dotted path
            raise
        return data, root, _origins(loader, root, file)
    finally:
        loader.dispose()


#: configs are a few KiB; a larger file is a mistake, and would be copied into every checkpoint
MAX_CONFIG_BYTES = 1 << 20


def load_yaml(path: str | os.PathLike) -> ConfigDict:
    """Read a YAML mapping with the safe config loader; errors name the file and line.

    The result is a `ConfigDict` whose `origins` give the file and line of every key.
    """
    path = Path(path)
    try:
        size = path.stat().st_size
        if size > MAX_CONFIG_BYTES and path.is_file():  # a config is copied into every checkpoint
            raise ConfigError(f"{path}: {size / 2**20:.1f} MiB is not a config (at most "
                              f"{MAX_CONFIG_BYTES // 2**20} MiB); give the recipe or feature YAML")
        blob = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such config file") from None
    except IsADirectoryError:
        raise ConfigError(f"{path}: is a folder, not a config file") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read ({exc.strerror})") from None
    try:
        text = blob.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = blob.count(b"\n", 0, exc.start) + 1
        raise ConfigError(f"{path}:{line}: not UTF-8 text (byte 0x{blob[exc.start]:02x}); "
                          "save the file as UTF-8") from None
    try:
        data, root, origins = _parse(text, str(path))
    except yaml.YAMLError as exc:
        line, message = _yaml_problem(exc, text)
        raise ConfigError(f"{path}:{line}: {message}" if line else f"{path}: {message}") from None
    except RecursionError:
        raise ConfigError(f"{path}: nested too deeply to be a config; flatten it") from None
    if data is None:
        return ConfigDict()
    if not isinstance(data, dict):
        line = root.start_mark.line + 1
        raise ConfigError(f"{path}:{line}: the top level must be a mapping of keys to values (key: value "
                          f"lines), not a {_kind(data)}")
    return ConfigDict(data, origins=origins)


def _kind(value: Any) -> str:
    if isinstance(value, list):
        return "list"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    return type(value).__name__


# --------------------------------------------------------------------------------------------------
# --set overrides

_SET_EXAMPLE = "e.g. --set train.epochs=10"


def parse_override(text: str) -> tuple[list[str], Any]:
    """`train.lr=0.05` -> (["train", "lr"], 0.05); the value is read as YAML by the config loader.

    A value that is not valid YAML (e.g. `[abc`) stays the string as typed; a forbidden tag or a
    duplicate key in it is an error naming the --set.
    """
    key, sep, raw = text.partition("=")
    keys = [part.strip() for part in key.split(".")]
    if not sep or not all(keys):
        what = "no '=' between key and value" if not sep else "an empty key or key part"
        raise ConfigError(f"--set {text}: {what}; write key=value, {_SET_EXAMPLE}")
    if not raw.strip():
        return keys, ""
    try:
        value, _, _ = _parse(raw, f"--set {text}")
    except (_DuplicateKey, _ForbiddenTag, _BadScalar) as exc:
        _, message = _yaml_problem(exc, raw)
        raise ConfigError(f"--set {text}: {message}") from None
    except yaml.YAMLError:
        value = raw
    except RecursionError:
        raise ConfigError(f"--set {text}: nested too deeply to be a config value") from None
    return keys, value


def apply_overrides(cfg: Mapping, overrides: Iterable[str]) -> ConfigDict:
    """Return a copy of `cfg` with each `key=value` applied (nested keys with dots).

    The copy's `origins` record each --set, so errors about its value name the --set.
    """
    out = ConfigDict(copy.deepcopy(dict(cfg)), origins=origins_of(cfg))
    for text in overrides:
        keys, value = parse_override(text)
        origin = Origin(arg=f"--set {text}")
        node = out
        for i, k in enumerate(keys[:-1]):
            child = node.get(k)
            if child is None:
                child = node[k] = {}
                out.set_origin(tuple(keys[:i + 1]), origin)
            elif not isinstance(child, dict):
                dotted = ".".join(keys[:i + 1])
                raise ConfigError(f"--set {text}: {dotted} is a value ({_brief(child)}), not a section with "
                                  f"keys; set {dotted}=VALUE instead")
            node = child
        node[keys[-1]] = value
        out.set_origin(tuple(keys), origin)
    return out


# --------------------------------------------------------------------------------------------------
# validation


def _type_name(types: type | tuple[type, ...]) -> str:
    types = types if isinstance(types, tuple) else (types,)
    return " or ".join(t.__name__ for t in types)


def _non_finite(value: Any, path: str = "") -> tuple[str, float] | None:
    """(where, value) of the first NaN or infinity in a value, lists and dicts included."""
    if isinstance(value, float):
        return None if math.isfinite(value) else (path, value)
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for k, v in items:
        found = _non_finite(v, f"{path}.{k}" if path else str(k))
        if found:
            return found
    return None


def _check_leaf(spec: Field, value: Any, where: str) -> Any:
    if value is None:
        if spec.nullable:
            return None
        raise ConfigError(f"{where}: a value is required ({_type_name(spec.types)})")
    types = spec.types if isinstance(spec.types, tuple) else (spec.types,)
    if float in types and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if isinstance(value, bool) and bool not in types:
        raise ConfigError(f"{where}: expected {_type_name(types)}, got {_brief(value)}")
    if not isinstance(value, types):
        raise ConfigError(f"{where}: expected {_type_name(types)}, got {_brief(value)}")
    if spec.finite:
        bad = _non_finite(value)
        if bad is not None:
            inner = f" (at {bad[0]})" if bad[0] else ""
            raise ConfigError(f"{where}: expected a finite number, got {bad[1]!r}{inner}; "
                              "NaN and infinity are not allowed")
    if spec.choices is not None and value not in spec.choices:
        allowed = ", ".join(str(c) for c in spec.choices)
        raise ConfigError(f"{where}: {_brief(value)} is not one of: {allowed}")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if spec.min is not None and (value < spec.min or (spec.min_exclusive and value == spec.min)):
            op = ">" if spec.min_exclusive else ">="
            raise ConfigError(f"{where}: {value!r} must be {op} {spec.min}")
        if spec.max is not None and value > spec.max:
            raise ConfigError(f"{where}: {value!r} must be <= {spec.max}")
    return value


def validate(cfg: Mapping, schema: Mapping, source: str = "config", prefix: str = "",
             origins: Mapping[tuple, Origin] | None = None) -> dict:
    """Check `cfg` against `schema`, fill defaults, and return the resolved dict (a plain dict).

    Errors name where the bad value came from: `origins` (by default `cfg.origins` of a loaded
    `ConfigDict`), else `source`.
    """
    if origins is None:
        origins = origins_of(cfg)
    path = tuple(prefix.rstrip(".").split(".")) if prefix else ()
    return _validate(cfg, schema, source, path, origins)


def _validate(cfg: Any, schema: Mapping, source: str, path: tuple, origins: Mapping) -> dict:
    if cfg is None:
        cfg = {}
    if not isinstance(cfg, Mapping):
        where = describe(path, origins, source) if path else source
        what = "the top level" if not path else "this section"
        raise ConfigError(f"{where}: {what} must be a mapping of keys to values, got {_brief(cfg)}")
    unknown = sorted(set(cfg) - set(schema), key=str)
    if unknown:
        key = (*path, unknown[0])
        origin, _ = find_origin(origins, key)
        known = ", ".join(sorted(schema))
        dotted = ".".join(str(p) for p in key)
        raise ConfigError(f"{origin or source}: unknown key {dotted} (known keys: {known})")
    out: dict = {}
    for key, spec in schema.items():
        here = (*path, key)
        if isinstance(spec, Mapping):
            out[key] = _validate(cfg.get(key), spec, source, here, origins)
        elif key in cfg:
            out[key] = _check_leaf(spec, cfg[key], describe(here, origins, source))
        elif spec.required:
            raise ConfigError(f"{describe(here, origins, source)}: missing required key")
        else:
            out[key] = copy.deepcopy(spec.default)
    return out


def config_hash(cfg: Mapping, length: int = 12) -> str:
    """A stable short hash of a resolved config (key order and YAML formatting do not matter)."""
    blob = json.dumps(cfg, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:length]


def dump_yaml(cfg: Mapping) -> str:
    """YAML text that `load_yaml` reads back to the same values."""
    return yaml.dump(dict(cfg), Dumper=_Dumper, sort_keys=False, default_flow_style=False)
