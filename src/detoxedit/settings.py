"""One resolver for a method's settings: preset section, `--set` overrides, typed by the config class.

Every command that builds a method (`run`, `evaluate`, `edit`, `demo`, the benchmarks) calls
`resolve_settings`, so a value means the same everywhere: `--set lr=5e-3` is 0.005, `--set x=`
is null, an unknown key or a value of the wrong type is refused (naming the key and the type it
needs) before any model loads. The preset is the one given, else the shipped preset whose `model`
key names the model (`default` -> smollm2-135m.yaml).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import yaml

from detoxedit.config import config_from_dict, config_to_dict, load_preset, preset_names
from detoxedit.errors import ConfigError


@dataclass(frozen=True)
class ResolvedSettings:
    """What a command runs with: the method's canonical name and typed config, and where they came from."""

    method: str
    config: Any  # the method's config dataclass instance
    preset: str | None = None
    generation: dict[str, Any] = field(default_factory=dict)  # the preset's `generation` section

    @property
    def method_config(self) -> dict[str, Any]:
        """The config as plain values (what a run folder's config.json records)."""
        return config_to_dict(self.config)


def parse_set_values(pairs: Sequence[str]) -> dict[str, Any]:
    """`["lr=5e-3", "layer=12", "x="]` -> {"lr": "5e-3" as YAML reads it, "layer": 12, "x": None}.

    Values are read as YAML scalars; the config class then reads each into its field's type
    (`config_from_dict`), so "5e-3" (a string in YAML 1.1) still becomes 0.005.
    """
    values: dict[str, Any] = {}
    for pair in pairs or ():
        key, sep, raw = pair.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set {pair!r}: expected key=value, e.g. --set lr=5e-3")
        try:
            values[key.strip()] = yaml.safe_load(raw) if raw.strip() else None
        except yaml.YAMLError as err:
            raise ConfigError(f"--set {pair!r}: cannot read the value ({err})") from err
    return values


def find_model_preset(model: str) -> str | None:
    """The shipped preset whose `model` key names this model spec (e.g. "default"), if any."""
    for name in preset_names():
        if load_preset(name).get("model") == model:
            return name
    return None


def preset_section(preset: dict[str, Any], method: str, source: str) -> dict[str, Any]:
    """The preset's settings for `method`, under its registered name or any of its aliases."""
    from detoxedit.methods.base import METHODS

    sections = preset.get("methods") or {}
    if not isinstance(sections, dict):
        raise ConfigError(f"preset {source}: 'methods' must be a mapping of method name -> settings")
    for key in METHODS.aliases(method):
        if key in sections:
            section = sections[key] or {}
            if not isinstance(section, dict):
                raise ConfigError(f"preset {source}: methods.{key} must be a mapping of setting -> value")
            return dict(section)
    return {}


def resolve_settings(
    method: str, model: str, preset: str | None = None, set_pairs: Sequence[str] = (),
    easyedit_compat: bool = False, overrides: dict[str, Any] | None = None,
) -> ResolvedSettings:
    """Method config = preset section + the method's compat values (with `easyedit_compat`) + `--set`.

    Raises:
        ConfigError: unknown method, unknown key, or a value its field cannot take.
    """
    from detoxedit.methods.base import METHODS

    import detoxedit.methods  # noqa: F401  (registers the built-in methods)

    name = METHODS.canonical(method)
    cls = METHODS.get(name)
    preset = preset or find_model_preset(model)
    values: dict[str, Any] = {}
    generation: dict[str, Any] = {}
    if preset:
        data = load_preset(preset)
        generation = dict(data.get("generation") or {})
        values = preset_section(data, name, str(preset))
    if easyedit_compat:
        values |= cls.compat_values()
    values |= parse_set_values(set_pairs) | dict(overrides or {})
    config = config_from_dict(cls.config_class, values, source=f"method {name!r} settings")
    return ResolvedSettings(name, config, preset, generation)

