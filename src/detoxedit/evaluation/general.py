"""Tasks beyond the SafeEdit inputs, run on the vanilla and the edited model: does a safety edit keep
what the model can do (KQA on TriviaQA, Csum on XSum: the paper's general ability), and does it
still help with harmless requests that sound harmful (over-refusal, beyond the paper)?

Each task is one registered `GeneralTask`: whether a run asks for it, its prompts (with what its
metric needs), and its reply length. The runner generates every enabled task for the vanilla
model and once with the edit (the first item's, or a global method's), one task at a time, and
records each (variant, task) in general.jsonl as it finishes, so a resumed run only does what is
missing. A new task is one `GENERAL_TASKS.register` and a metric reading its records.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Callable

from detoxedit.data import load_triviaqa, load_xsum, triviaqa_prompt, truncate_to_tokens, xsum_prompt
from detoxedit.registry import Registry

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class GeneralTask:
    """A task: `enabled(cfg)`, `prompts(cfg, tokenizer)` -> [{"prompt", ...refs}], `max_new_tokens(cfg)`."""

    name: str
    enabled: Callable[[Any], bool]
    prompts: Callable[[Any, Any], list[dict[str, Any]]]
    max_new_tokens: Callable[[Any], int]


GENERAL_TASKS: Registry[GeneralTask] = Registry("general task")


def _kqa_prompts(cfg: Any, tokenizer: Any) -> list[dict[str, Any]]:
    return [{"prompt": triviaqa_prompt(item.question), "answers": list(item.answer_aliases)}
            for item in load_triviaqa(cfg.triviaqa, limit=cfg.n_triviaqa, seed=cfg.seed)]


def _csum_prompts(cfg: Any, tokenizer: Any) -> list[dict[str, Any]]:
    return [{"prompt": xsum_prompt(truncate_to_tokens(item.document, tokenizer, cfg.doc_max_tokens)),
             "reference": item.summary} for item in load_xsum(cfg.xsum, limit=cfg.n_xsum, seed=cfg.seed)]


def _overrefusal_prompts(cfg: Any, tokenizer: Any) -> list[dict[str, Any]]:
    from detoxedit.data.overrefusal import load_overrefusal

    return [{"prompt": p.prompt, "type": p.type, "prompt_id": p.id}
            for p in load_overrefusal(cfg.overrefusal, limit=cfg.n_overrefusal, seed=cfg.seed)]


GENERAL_TASKS.register("kqa")(GeneralTask("kqa", lambda cfg: cfg.general, _kqa_prompts, lambda cfg: cfg.kqa_max_new_tokens))
GENERAL_TASKS.register("csum")(GeneralTask("csum", lambda cfg: cfg.general, _csum_prompts,
                                           lambda cfg: cfg.csum_max_new_tokens))
GENERAL_TASKS.register("overrefusal")(GeneralTask("overrefusal", lambda cfg: bool(cfg.overrefusal), _overrefusal_prompts,
                                                  lambda cfg: cfg.overrefusal_max_new_tokens))


def check_general_inputs(cfg: Any) -> None:
    """Reads every enabled task's data now (no tokenizer needed), so a bad file fails before any model work."""
    if getattr(cfg, "general", False):
        load_triviaqa(cfg.triviaqa, limit=cfg.n_triviaqa, seed=cfg.seed)
        load_xsum(cfg.xsum, limit=cfg.n_xsum, seed=cfg.seed)
    if getattr(cfg, "overrefusal", None):
        from detoxedit.data.overrefusal import load_overrefusal

        load_overrefusal(cfg.overrefusal, limit=cfg.n_overrefusal, seed=cfg.seed)


def enabled_tasks(cfg: Any) -> list[GeneralTask]:
    """The tasks `cfg` asks for, in registration order."""
    return [task for task in (GENERAL_TASKS.get(name) for name in GENERAL_TASKS.names()) if task.enabled(cfg)]


def task_records(task: GeneralTask, cfg: Any, tokenizer: Any, generate: Callable[[list[str], int], list[str]],
                 variant: str) -> list[dict[str, Any]]:
    """One task's replies (one batched job) as general.jsonl records of `variant`."""
    prompts = task.prompts(cfg, tokenizer)
    logger.info("%s (%s): %d prompts", task.name, variant, len(prompts))
    replies = generate([p["prompt"] for p in prompts], task.max_new_tokens(cfg))
    return [{"task": task.name, "index": index, **p, "variant": variant, "reply": reply}
            for index, (p, reply) in enumerate(zip(prompts, replies))]
