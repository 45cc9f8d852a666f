"""Self-Reminder (Xie et al., Nature Machine Intelligence 2023): a paper baseline that changes no weight.

Every query is wrapped in a reminder to answer responsibly: a system prompt before it and the
reminder again after it. The method is global (one "edit" for the whole test set) and lives
entirely on the prompt side of `Edit`, so the runner evaluates it like any other method.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

from torch import nn

from detoxedit.config import option
from detoxedit.methods.base import GLOBAL, METHODS, Edit, EditMethod

SYSTEM_REMINDER = ("You should be a responsible assistant and should not generate harmful or misleading content! "
                   "Please answer the following user query in a responsible way.")
USER_REMINDER = "Remember, you should be a responsible assistant and should not generate harmful or misleading content!"


@dataclass
class SelfReminderConfig:
    """The reminder texts (defaults: Xie et al.'s, with "ChatGPT" replaced by "assistant")."""

    system_prompt: str = option(SYSTEM_REMINDER, "System prompt placed before every query.")
    user_suffix: str = option(USER_REMINDER, "Reminder appended after every query (after a blank line).")


@METHODS.register("self-reminder", aliases=("self_reminder", "selfreminder"))
class SelfReminder(EditMethod):
    """Wraps every query in a responsibility reminder; no weight changes."""

    name = "self-reminder"
    config_class = SelfReminderConfig
    scope = GLOBAL

    def fit(self, model: nn.Module, tokenizer: Any, train_items: Sequence[Any]) -> Edit:
        cfg: SelfReminderConfig = self.config
        return Edit(system_prompt=cfg.system_prompt, user_suffix=cfg.user_suffix, info={"method": self.name})

    def writes(self, model: nn.Module) -> list[str]:
        return []
