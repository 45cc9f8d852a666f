"""General ability (KQA on TriviaQA, Csum on XSum): does a safety edit keep what the model can do?

The paper measures it for ONE model edited from ONE instance, so the runner calls `general_records`
once for the vanilla model and once with the first item's edit applied.
"""

from __future__ import annotations

import logging
from typing import Any, Callable

from detoxedit.data import load_triviaqa, load_xsum, triviaqa_prompt, truncate_to_tokens, xsum_prompt

logger = logging.getLogger(__name__)


def general_tasks(triviaqa: str, xsum: str, n_triviaqa: int, n_xsum: int, seed: int, tokenizer: Any, doc_max_tokens: int) -> list[dict[str, Any]]:
    """The zero-shot prompts with their references: {"task", "index", "prompt", "answers" | "reference"}."""
    tasks: list[dict[str, Any]] = []
    for index, item in enumerate(load_triviaqa(triviaqa, limit=n_triviaqa, seed=seed)):
        tasks.append({"task": "kqa", "index": index, "prompt": triviaqa_prompt(item.question),
                      "answers": list(item.answer_aliases)})
    for index, item in enumerate(load_xsum(xsum, limit=n_xsum, seed=seed)):
        document = truncate_to_tokens(item.document, tokenizer, doc_max_tokens)
        tasks.append({"task": "csum", "index": index, "prompt": xsum_prompt(document), "reference": item.summary})
    return tasks


def general_records(
    tasks: list[dict[str, Any]],
    generate: Callable[[list[str], int], list[str]],
    variant: str,
    max_new_tokens: dict[str, int],
) -> list[dict[str, Any]]:
    """Generates every task's replies (one batched job per task) and returns the records of `variant`."""
    records = []
    for task in ("kqa", "csum"):
        chosen = [t for t in tasks if t["task"] == task]
        if not chosen:
            continue
        replies = generate([t["prompt"] for t in chosen], max_new_tokens[task])
        records.extend({**t, "variant": variant, "reply": reply} for t, reply in zip(chosen, replies))
    return records
