"""Typed config dataclasses: help text per field, validation, YAML presets, resolved dumps.

Configs are flat dataclasses (as in ROME's hparams and TRL's configs). Each field carries a
`help` string in its metadata, so the CLI and the docs can show it, and `__post_init__`
validates values. Presets are YAML files of plain values, never machine paths or device ids.
"""

from __future__ import annotations

import dataclasses
import json
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
    """Builds `cls` from a dict, rejecting unknown keys with the list of valid ones."""
    valid = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - valid)
    if unknown:
        raise ConfigError(f"{source}: unknown key(s) {unknown} for {cls.__name__}; valid keys: {sorted(valid)}")
    try:
        return cls(**values)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"{source}: {err}") from err


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
    return _parse_yaml(path.read_text(encoding="utf-8"), str(path))


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
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "config.json"
    path.write_text(json.dumps(cfg, indent=2, sort_keys=True, default=str) + "\n", encoding="utf-8")
    return path
