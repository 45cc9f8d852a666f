"""`none`: the vanilla model (no edit), so the runner evaluates methods and the baseline alike."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from torch import nn

from detoxedit.methods.base import METHODS, Edit, EditMethod


@dataclass
class NoEditConfig:
    """The vanilla baseline has no hyperparameters."""


@METHODS.register("none")
class NoEdit(EditMethod):
    """Returns an empty edit."""

    name = "none"
    config_class = NoEditConfig

    def execute(self, model: nn.Module, tokenizer: Any, item: Any) -> Edit:
        return Edit()
