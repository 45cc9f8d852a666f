"""Reply generation for the runner, with the two reference-code reproduction switches.

Normal behaviour is `detoxedit.models.generate`: greedy decoding, replies cut by token ids. For
comparisons with the reference code (EasyEdit), two of its defects can be reproduced on purpose:

* `inherit_sampling`: the reference calls `model.generate` without decoding arguments, so a
  checkpoint whose `generation_config` says `do_sample=True` samples; replies become random.
  We take do_sample / temperature / top_p from `model.generation_config` (top_k is not reproduced).
* `char_slice`: the reference decodes prompt + reply and drops `len(prompt_text)` characters. When
  decoding changes the prompt's text (special tokens skipped, spaces normalised), the cut lands in
  the wrong place and replies lose their first characters or keep part of the prompt.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from typing import Sequence

from transformers import PreTrainedModel, PreTrainedTokenizerBase

from detoxedit.models.chat import ChatFormat
from detoxedit.models.generation import (
    Batching,
    RowContext,
    Sampling,
    decode_reply,
    generate_ids,
    stop_token_ids,
    truncate_left,
    warn_truncated,
)

logger = logging.getLogger(__name__)


def inherited_sampling(model: PreTrainedModel, seed: int) -> Sampling:
    """The decoding the checkpoint's generation_config asks for (the reference code's behaviour)."""
    config = getattr(model, "generation_config", None)
    return Sampling(
        do_sample=bool(getattr(config, "do_sample", False)),
        temperature=float(getattr(config, "temperature", None) or 1.0),
        top_p=float(getattr(config, "top_p", None) or 1.0),
        seed=seed,
    )


def char_sliced_reply(tokenizer: PreTrainedTokenizerBase, prompt_text: str, prompt_ids: list[int], new_ids: list[int]) -> str:
    """Reference-code slicing: decode(prompt + reply) and drop as many characters as the prompt text has."""
    full = tokenizer.decode(list(prompt_ids) + list(new_ids), skip_special_tokens=True)
    return full[len(prompt_text):]


@dataclass
class TextGenerator:
    """Generates replies for user messages with one model and one set of generation settings."""

    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    chat_format: str = "auto"
    system_prompt: str | None = None
    max_input_tokens: int | None = 1024
    sampling: Sampling = field(default_factory=Sampling)
    batching: Batching = field(default_factory=Batching)
    char_slice: bool = False
    progress: bool = True
    truncated: dict[str, int] = field(default_factory=dict)
    """Prompts this generator cut to `max_input_tokens` -> their full token count (warned about once)."""

    def __call__(
        self,
        prompts: Sequence[str],
        max_new_tokens: int,
        *,
        row_context: RowContext | None = None,
        system_prompts: Sequence[str | None] | None = None,
        progress: bool | None = None,
    ) -> list[str]:
        """One reply per message, in input order; `system_prompts` overrides the system prompt per row."""
        formats = [self._format(system_prompts[i] if system_prompts else None) for i in range(len(prompts))]
        encoded = [fmt.encode(p) for fmt, p in zip(formats, prompts)]
        self._note_truncated(prompts, encoded)
        encoded = [truncate_left(ids, self.max_input_tokens) for ids in encoded]
        new_ids = generate_ids(
            self.model, self.tokenizer, encoded, max_new_tokens,
            sampling=self.sampling, batching=self.batching, row_context=row_context,
            progress=self.progress if progress is None else progress,
        )
        if self.char_slice:
            return [char_sliced_reply(self.tokenizer, f.render(p), e, n) for f, p, e, n in zip(formats, prompts, encoded, new_ids)]
        stops = stop_token_ids(self.model, self.tokenizer)
        return [fmt.cut_reply(decode_reply(self.tokenizer, ids, stops)) for fmt, ids in zip(formats, new_ids)]

    def _note_truncated(self, prompts: Sequence[str], encoded: Sequence[list[int]]) -> None:
        """Remembers the prompts that will be cut; warns the first time only (a run's total is in its metrics)."""
        limit = self.max_input_tokens
        long = {p: len(ids) for p, ids in zip(prompts, encoded) if limit is not None and len(ids) > limit}
        if long and not self.truncated:
            warn_truncated(list(long.values()), limit, len(prompts))
        self.truncated |= long

    def count_truncated(self, prompts: Sequence[str]) -> dict[str, int]:
        """How many of `prompts` (in this generator's format) exceed `max_input_tokens`, and the longest."""
        fmt = self._format(None)
        lengths = [len(fmt.encode(p)) for p in dict.fromkeys(prompts)]
        limit = self.max_input_tokens
        over = [n for n in lengths if limit is not None and n > limit]
        return {"count": len(over), "of": len(lengths), "max_input_tokens": limit, "longest": max(over, default=0)}

    def _format(self, system_prompt: str | None) -> ChatFormat:
        return ChatFormat(self.tokenizer, self.chat_format, system_prompt or self.system_prompt)

    def settings(self) -> dict:
        """What the replies depend on besides the model and the prompt (a generation-cache key part)."""
        settings = {
            "chat_format": self.chat_format, "system_prompt": self.system_prompt,
            "max_input_tokens": self.max_input_tokens, "sampling": asdict(self.sampling),
            "char_slice": self.char_slice,
        }
        if self._format(None).resolved_mode == "plain":  # plain replies are cut at the next "User:" turn
            settings["cut_at_user_turn"] = "from-first-line"
        return settings
