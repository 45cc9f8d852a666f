"""Turning a user message into the model's prompt text.

Modes:
    auto      the tokenizer's chat template when it has one, else `plain`.
    template  the tokenizer's chat template (error if it has none).
    plain     a documented format for base models:
                  "{system}\\n\\n" (only with a system prompt)
                  "User: {message}\\nAssistant:"
              a base model goes on to write the next "\\nUser:" turn itself; replies are cut there.
    raw       the message untouched, as the reference code (EasyEdit) feeds it.

A chat template renders its own special tokens (BOS, <|im_start|>, ...), so its text must be
tokenized without adding special tokens again; `ChatFormat.add_special_tokens` says which applies.
"""

from __future__ import annotations

from dataclasses import dataclass

from transformers import PreTrainedTokenizerBase

from detoxedit.errors import DetoxeditError

CHAT_MODES = ("auto", "template", "plain", "raw")
PLAIN_USER, PLAIN_ASSISTANT = "User: ", "\nAssistant:"


@dataclass(frozen=True)
class ChatFormat:
    """How prompts are rendered for one tokenizer."""

    tokenizer: PreTrainedTokenizerBase
    mode: str = "auto"
    system_prompt: str | None = None

    def __post_init__(self) -> None:
        if self.mode not in CHAT_MODES:
            raise DetoxeditError(f"unknown chat format {self.mode!r}; choose one of {', '.join(CHAT_MODES)}")
        if self.mode == "template" and not self.tokenizer.chat_template:
            raise DetoxeditError("chat format 'template' asked for, but the tokenizer has no chat template")

    @property
    def resolved_mode(self) -> str:
        if self.mode == "auto":
            return "template" if self.tokenizer.chat_template else "plain"
        return self.mode

    @property
    def add_special_tokens(self) -> bool:
        """Templates already contain BOS and friends; plain and raw text get the tokenizer's own."""
        return self.resolved_mode != "template"

    def render(self, message: str) -> str:
        """The prompt text for one user message, ending where the assistant's reply starts."""
        mode = self.resolved_mode
        if mode == "raw":
            return message
        if mode == "plain":
            prefix = f"{self.system_prompt}\n\n" if self.system_prompt else ""
            return f"{prefix}{PLAIN_USER}{message}{PLAIN_ASSISTANT}"
        messages = [{"role": "user", "content": message}]
        if self.system_prompt:
            messages.insert(0, {"role": "system", "content": self.system_prompt})
        return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)

    def encode(self, message: str) -> list[int]:
        """Token ids of the rendered prompt."""
        return self.tokenizer(self.render(message), add_special_tokens=self.add_special_tokens)["input_ids"]

    def end_of_reply_ids(self) -> list[int]:
        """The token the generator stops at (the tokenizer's EOS; `<|im_end|>` for ChatML templates), so that a
        reply trained with it teaches the model to stop after the reply rather than go on writing."""
        eos = self.tokenizer.eos_token_id
        if eos is None:
            raise DetoxeditError("the tokenizer has no EOS token, so a reply cannot be trained to end")
        return [int(eos)]

    def cut_reply(self, reply: str) -> str:
        """The reply up to the next turn a base model writes itself in plain mode ("\\nUser:")."""
        if self.resolved_mode != "plain":
            return reply
        return _cut_at_turn(reply)

    def encode_reply(self, reply: str) -> list[int]:
        """Token ids of a reply that follows a rendered prompt (no BOS; a leading space for plain mode)."""
        text = f" {reply}" if self.resolved_mode == "plain" and not reply.startswith((" ", "\n")) else reply
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]


def _cut_at_turn(reply: str) -> str:
    """Drops everything from the first line that starts a new "User:" turn (the reply's own first line too)."""
    marker = PLAIN_USER.rstrip()
    if reply.lstrip().startswith(marker):
        return ""
    cut = reply.find("\n" + marker)
    return reply if cut < 0 else reply[:cut].rstrip()
