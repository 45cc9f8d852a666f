"""Typed config dataclasses: help text per field, validation, YAML presets, resolved dumps.

Configs are flat dataclasses (as in ROME's hparams and TRL's configs). Each field carries a
`help` string in its metadata, so the CLI and the docs can show it, and `__post_init__`
validates values. Presets are YAML files of plain values, never machine paths or device ids.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from importlib import resources
from pathlib import Path
from typing import Any, TypeVar

import yaml

from detoxedit.errors import ConfigError

C = TypeVar("C")


def option(default: Any, help: str, **kwargs: Any) -> Any:  # noqa: A002 - mirrors argparse
    """A dataclass field with a help string (mutable defaults go through default_factory)."""
    metadata = {"help": help}
    if isinstance(default, (list, dict, set)):
        return dataclasses.field(default_factory=lambda: type(default)(default), metadata=metadata, **kwargs)
    return dataclasses.field(default=default, metadata=metadata, **kwargs)


def config_to_dict(cfg: Any) -> dict[str, Any]:
    """A JSON/YAML-ready dict of a (possibly nested) config dataclass."""
    return dataclasses.asdict(cfg)


def config_from_dict(cls: type[C], values: dict[str, Any], source: str = "config") -> C:
    """Builds `cls` from a dict: unknown keys are rejected with the list of valid ones, and every
    value is read into its field's declared type first (`coerce_field`), so `--set lr=5e-3` and a
    YAML `5.0e-3` (a string in YAML 1.1) both become 0.005, and `steps=1.5` fails here, before any
    model work."""
    valid = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - valid)
    if unknown:
        raise ConfigError(f"{source}: unknown key(s) {unknown} for {cls.__name__}; valid keys: {sorted(valid)}")
    hints = typing.get_type_hints(cls)
    typed = {key: coerce_field(key, value, hints[key], source) for key, value in values.items()}
    try:
        return cls(**typed)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"{source}: {err}") from err


_TRUE, _FALSE = ("true", "yes", "on", "1"), ("false", "no", "off", "0")


def coerce_field(key: str, value: Any, hint: Any, source: str = "config") -> Any:
    """`value` read as the type `hint` (int, float, bool, str, their `| None`, list, dict, Path), or
    a ConfigError naming the key, the value and the type it needed."""
    options = [a for a in typing.get_args(hint)] if _is_union(hint) else [hint]
    if value is None:
        if type(None) in options or hint is Any:
            return None
        raise ConfigError(f"{source}: {key} cannot be empty (null); it needs a {_type_name(hint)}")
    for option in (o for o in options if o is not type(None)):
        try:
            return _coerce_one(value, option)
        except (TypeError, ValueError):
            continue
    raise ConfigError(f"{source}: {key} must be a {_type_name(hint)}, got {value!r}")


def _coerce_one(value: Any, kind: Any) -> Any:
    origin = typing.get_origin(kind) or kind
    if kind is Any:
        return value
    if origin is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in _TRUE + _FALSE:
            return value.strip().lower() in _TRUE
        raise ValueError("not a boolean")
    if origin is int:
        number = float(value) if isinstance(value, str) and not isinstance(value, bool) else value
        if isinstance(number, bool) or not isinstance(number, (int, float)) or float(number) != int(number):
            raise ValueError("not a whole number")
        return int(number)
    if origin is float:
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            raise ValueError("not a number")
        return float(value)
    if origin is str:
        if isinstance(value, (dict, list, tuple)):
            raise ValueError("not text")
        return value if isinstance(value, str) else str(value)
    if origin in (list, tuple):
        items = list(value) if isinstance(value, (list, tuple)) else [value]
        return origin(items)
    if origin is dict:
        if not isinstance(value, dict):
            raise ValueError("not a mapping")
        return dict(value)
    if isinstance(origin, type):
        return value if isinstance(value, origin) else origin(value)
    return value


def _is_union(hint: Any) -> bool:
    return typing.get_origin(hint) in (typing.Union, types.UnionType)


def _type_name(hint: Any) -> str:
    if _is_union(hint):
        return " or ".join("null" if a is type(None) else _type_name(a) for a in typing.get_args(hint))
    names = {int: "whole number", float: "number", bool: "boolean (true/false)", str: "string"}
    origin = typing.get_origin(hint) or hint
    return names.get(origin, getattr(origin, "__name__", str(hint)))


def field_help(cls: type) -> dict[str, str]:
    """Field name -> help text, for CLI listings and docs."""
    return {f.name: f.metadata.get("help", "") for f in dataclasses.fields(cls)}


def check(condition: bool, message: str) -> None:
    """Raise ConfigError(message) unless `condition` holds (used in __post_init__)."""
    if not condition:
        raise ConfigError(message)


def preset_names() -> list[str]:
    """Names of the presets that ship with the package."""
    folder = resources.files("detoxedit") / "presets"
    return sorted(p.name[: -len(".yaml")] for p in folder.iterdir() if p.name.endswith(".yaml"))


def load_preset(name_or_path: str | Path) -> dict[str, Any]:
    """Reads a preset YAML, by shipped name (e.g. "smollm2-135m") or by path."""
    path = Path(name_or_path)
    if path.suffix not in (".yaml", ".yml"):
        shipped = resources.files("detoxedit") / "presets" / f"{name_or_path}.yaml"
        if not shipped.is_file():
            raise ConfigError(f"no preset named {str(name_or_path)!r}; shipped presets: {preset_names()}")
        return _parse_yaml(shipped.read_text(encoding="utf-8"), str(name_or_path))
    if not path.is_file():
        raise ConfigError(f"preset file not found: {path}")
    from detoxedit.files import read_text_file

    return _parse_yaml(read_text_file(path, "preset"), str(path))


def _parse_yaml(text: str, source: str) -> dict[str, Any]:
    try:
        values = yaml.safe_load(text) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"{source}: invalid YAML: {err}") from err
    if not isinstance(values, dict):
        raise ConfigError(f"{source}: a preset must be a mapping of keys to values")
    return values


def write_resolved_config(cfg: dict[str, Any], folder: Path) -> Path:
    """Writes the fully resolved config of a run beside its results (config.json)."""
    from detoxedit.files import atomic_write_text

    return atomic_write_text(folder / "config.json", json.dumps(cfg, indent=2, sort_keys=True, default=str) + "\n")
