"""`none`: the vanilla model (no edit), so the runner evaluates methods and the baseline alike."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

from torch import nn

from detoxedit.methods.base import GLOBAL, METHODS, Edit, EditMethod


@dataclass
class NoEditConfig:
    """The vanilla baseline has no hyperparameters."""


@METHODS.register("none", aliases=("vanilla",))
class NoEdit(EditMethod):
    """The unchanged model: its evaluation is the vanilla evaluation, so the runner adds nothing to it."""

    name = "none"
    config_class = NoEditConfig
    scope = GLOBAL
    changes_model = False

    def fit(self, model: nn.Module, tokenizer: Any, train_items: Sequence[Any]) -> Edit:
        return Edit()

    def execute(self, model: nn.Module, tokenizer: Any, item: Any) -> Edit:
        return Edit()

    def writes(self, model: nn.Module) -> list[str]:
        return []
