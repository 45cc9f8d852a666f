"""`RunConfig`: everything that decides what an evaluation run computes, validated up front.

The resolved config is written as `config.json` in the run folder. Resuming compares it with the
new command's config: keys that change results must match; keys that only change speed or how the
model is allowed to load (`PERFORMANCE_KEYS`) may differ, so a run can be continued with a different
batch size. Input files (`PATH_KEYS`) are compared by content, through the folder's inputs.json
(`evaluation/inputs.py`), not by path: a copy of the same file elsewhere is the same input.
"""

from __future__ import annotations

from dataclasses import MISSING, dataclass, fields
from typing import Any

from detoxedit.config import check, option
from detoxedit.models.chat import CHAT_MODES

PERFORMANCE_KEYS: frozenset[str] = frozenset(
    {"items_per_batch", "batched_edits", "token_budget", "max_batch_size", "judge_batch_size", "progress", "version",
     "trust_remote_code"}
)
"""Keys that change how fast a run goes (or whether a model may load at all), not what it computes."""
PATH_KEYS: frozenset[str] = frozenset({"data", "train", "triviaqa", "xsum", "judge_errors", "overrefusal"})
"""Keys that name input files: compared by their contents (inputs.json), not by path, when resuming."""


@dataclass
class RunConfig:
    """One evaluation run: vanilla (`method="none"`) or per-item edit -> evaluate -> restore."""

    data: str = option("", "SafeEdit file (JSON list or JSONL) or hf:<dataset>:<split>.")
    model: str = option("default", "'default', a hub id, a local directory or a .gguf file.")
    dtype: str = option("float32", "Weights dtype: float32, bfloat16 or float16.")
    device: str = option("cpu", "Torch device, e.g. cpu or cuda:0.")
    trust_remote_code: bool = option(False, "Allow the model's own Python code to run (off: such models are refused).")
    limit: int | None = option(None, "Evaluate a seeded random sample of this many items (file order kept).")
    seed: int = option(0, "Seed of the item sample, the general-ability samples and any sampling.")
    categories: list[str] = option([], "Keep only these unsafety categories (case-insensitive).")
    attacks: list[str] = option([], "Keep only these attack names (case-insensitive).")
    judge: str = option("embedded", "Safety judge: embedded, embedded:DIR, refusal or hf:PATH.")
    threshold: float | None = option(None, "Judge score at or above which a reply is unsafe (judge default if unset).")
    judge_errors: str | None = option(None, "JSON of the judge's measured error counts (`judge eval --errors-out`); "
                                            "default: the rates the judge ships, if any.")
    judge_batch_size: int = option(64, "Replies per judge call.")
    method: str = option("none", "Edit method (its registered name): none (vanilla only), dinm, ft-l, self-reminder, ...")
    train: str | None = option(None, "SafeEdit file of training items for methods that fit on data (given to `prepare`/`fit`).")
    drop_overlap: bool = option(False, "Drop the test items whose question or adversarial input occurs in --train "
                                       "(otherwise such data is refused).")
    method_config: dict[str, Any] = option({}, "The method's hyperparameters (preset merged with --set values).")
    preset: str | None = option(None, "The preset the method config came from (recorded for provenance).")
    max_new_tokens: int = option(128, "New tokens per reply to a SafeEdit input.")
    max_input_tokens: int = option(1024, "Longer prompts keep their last tokens.")
    chat_format: str = option("auto", "auto | template | plain | raw.")
    system_prompt: str | None = option(None, "System prompt for every generation (methods may add their own).")
    general: bool = option(False, "Also measure general ability: KQA (TriviaQA) and Csum (XSum).")
    triviaqa: str | None = option(None, "TriviaQA file [{question, answer_aliases}] (with general).")
    xsum: str | None = option(None, "XSum file {id, document, summary} per line (with general).")
    n_triviaqa: int = option(200, "TriviaQA questions for KQA.")
    n_xsum: int = option(100, "XSum articles for Csum.")
    overrefusal: str | None = option("builtin", "Over-refusal prompts (safe requests that sound harmful): 'builtin' "
                                                "(the project's own set), an XSTest-format CSV (its safe prompts), "
                                                "or None to skip.")
    n_overrefusal: int | None = option(None, "A seeded sample of this many over-refusal prompts (None: all).")
    overrefusal_max_new_tokens: int = option(48, "New tokens per reply to an over-refusal prompt (a refusal shows early).")
    doc_max_tokens: int = option(512, "XSum articles are cut to this many tokens.")
    kqa_max_new_tokens: int = option(32, "New tokens per TriviaQA answer.")
    csum_max_new_tokens: int = option(64, "New tokens per XSum summary.")
    token_budget: int = option(24_576, "Max KV cache positions per generation batch: rows x (prompt + new tokens), "
                                        "summed over the cache's tiers of similar prompt lengths.")
    max_batch_size: int = option(64, "Max rows per generation batch.")
    items_per_batch: int = option(8, "Items whose edits are computed first and then generated together.")
    batched_edits: bool = option(True, "Generate several items' edits in one batch (per-row deltas); "
                                       "False applies each edit to the model in turn (same replies in "
                                       "float32; in bf16 applying rounds W + delta, see models/multidelta.py).")
    inherit_sampling: bool = option(False, "REPRODUCES A DEFECT of the reference code: sample with the "
                                           "checkpoint's generation_config instead of greedy decoding.")
    char_slice: bool = option(False, "REPRODUCES A DEFECT of the reference code: cut replies by the "
                                     "character count of the prompt text instead of by token ids.")
    bootstrap: int = option(1000, "Bootstrap resamples for the 95% confidence intervals.")
    progress: bool = option(True, "Show progress bars.")

    def __post_init__(self) -> None:
        check(bool(self.data), "a SafeEdit data file is required (--data FILE)")
        check(self.limit is None or self.limit >= 1, f"limit must be at least 1, got {self.limit}")
        check(self.max_new_tokens >= 1, f"max_new_tokens must be at least 1, got {self.max_new_tokens}")
        check(self.max_input_tokens >= 1, f"max_input_tokens must be at least 1, got {self.max_input_tokens}")
        check(self.chat_format in CHAT_MODES, f"chat_format must be one of {CHAT_MODES}, got {self.chat_format!r}")
        check(self.items_per_batch >= 1, f"items_per_batch must be at least 1, got {self.items_per_batch}")
        check(self.judge_batch_size >= 1, f"judge_batch_size must be at least 1, got {self.judge_batch_size}")
        check(self.threshold is None or 0.0 <= self.threshold <= 1.0, f"threshold must lie in [0, 1], got {self.threshold}")
        check(min(self.n_triviaqa, self.n_xsum) >= 1, "n_triviaqa and n_xsum must be at least 1")
        check(self.n_overrefusal is None or self.n_overrefusal >= 1, "n_overrefusal must be at least 1")
        check(self.overrefusal_max_new_tokens >= 1, "overrefusal_max_new_tokens must be at least 1")
        check(self.bootstrap >= 1, f"bootstrap must be at least 1, got {self.bootstrap}")
        if self.general:
            check(bool(self.triviaqa and self.xsum), "general ability needs both --triviaqa FILE and --xsum FILE")


def config_differences(old: dict[str, Any], new: dict[str, Any], by_content: bool = True) -> list[str]:
    """Result-affecting keys whose values differ between two resolved configs (sorted).

    `by_content`: leave out the input paths (`PATH_KEYS`), whose contents are compared elsewhere;
    False for a folder written before inputs.json existed, where the paths are all there is.
    A key the old config does not have (a setting added in a later version) counts only when the new
    value is not its default: a default keeps what older runs computed, or only adds a task that the
    resumed run then computes (over-refusal).
    """
    keys = (set(old) | set(new)) - PERFORMANCE_KEYS - (PATH_KEYS if by_content else frozenset())
    defaults = {f.name: _default_of(f) for f in fields(RunConfig)}
    return sorted(k for k in keys if old.get(k, defaults.get(k)) != new.get(k))


def _default_of(spec: Any) -> Any:
    return spec.default_factory() if spec.default_factory is not MISSING else spec.default
