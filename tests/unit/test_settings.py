"""The one settings resolver: presets, --set values, aliases and typed coercion by the config class."""

from __future__ import annotations

import pytest

from detoxedit.config import config_from_dict, coerce_field
from detoxedit.errors import ConfigError, DetoxeditError
from detoxedit.methods.dinm import DINMConfig
from detoxedit.settings import find_model_preset, parse_set_values, resolve_settings


def test_set_values_are_typed_by_the_config_field():
    settings = resolve_settings("dinm", "default", set_pairs=["lr=5e-3", "steps=4", "layer=", "easyedit_compat=true"])
    assert settings.config.lr == 0.005 and isinstance(settings.config.lr, float)
    assert settings.config.steps == 4 and settings.config.layer is None and settings.config.easyedit_compat is True
    assert settings.preset == find_model_preset("default") == "smollm2-135m"
    assert settings.method_config["lr"] == 0.005  # what config.json records: the whole resolved config


@pytest.mark.parametrize("pair, message", [
    ("steps=1.5", "steps must be a whole number"),
    ("lr=fast", "lr must be a number"),
    ("steps=", "steps cannot be empty"),
    ("bogus=1", "unknown key"),
    ("chat_format=chatml", "chat_format must be one of"),
])
def test_bad_values_are_refused_before_any_model_work(pair, message):
    with pytest.raises(ConfigError, match=message):
        resolve_settings("dinm", "default", set_pairs=[pair])


def test_preset_values_are_typed_too(tmp_path):
    preset = tmp_path / "p.yaml"
    preset.write_text("model: x\ngeneration: {max_new_tokens: 7}\nmethods:\n  ft_l: {lr: 5.0e-3, steps: '3'}\n")
    settings = resolve_settings("ft-l", "x", str(preset))  # the preset spells the method by an alias
    assert (settings.method, settings.config.lr, settings.config.steps) == ("ft-l", 0.005, 3)
    assert settings.generation == {"max_new_tokens": 7}


def test_aliases_resolve_to_the_registered_name_and_unknown_methods_list_the_registered():
    assert resolve_settings("ftl", "default").method == "ft-l"
    assert resolve_settings("self_reminder", "default").method == "self-reminder"
    with pytest.raises(DetoxeditError, match="unknown method 'nope'; registered: .*dinm"):
        resolve_settings("nope", "default")


def test_compat_values_come_from_the_method():
    assert resolve_settings("dinm", "default", easyedit_compat=True).config.easyedit_compat is True
    assert resolve_settings("dinm", "default", set_pairs=["easyedit_compat=false"], easyedit_compat=True).config.easyedit_compat is False
    assert resolve_settings("ft-l", "default", easyedit_compat=True).method == "ft-l"  # no compat values: nothing added


def test_parse_set_values_empty_value_is_null_and_bad_pairs_fail():
    assert parse_set_values(["x=", "y=null", "z=text"]) == {"x": None, "y": None, "z": "text"}
    with pytest.raises(ConfigError, match="key=value"):
        parse_set_values(["=3"])


def test_coercion_rules():
    assert coerce_field("a", "2", int) == 2 and coerce_field("a", 2.0, int) == 2
    assert coerce_field("b", 3, float) == 3.0 and coerce_field("b", "1e-4", float | None) == 1e-4
    assert coerce_field("c", "off", bool) is False and coerce_field("d", 7, str) == "7"
    assert coerce_field("e", "one", list[str]) == ["one"]
    with pytest.raises(ConfigError, match="boolean"):
        coerce_field("c", "maybe", bool)
    with pytest.raises(ConfigError, match="whole number"):
        coerce_field("a", True, int)
    assert config_from_dict(DINMConfig, {"lr": "1e-3"}).lr == 0.001
