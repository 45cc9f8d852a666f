"""General-ability sets (TriviaQA for KQA, XSum for Csum) and their zero-shot prompts.

Detoxification must not cost general ability, so the paper checks knowledge QA and
summarisation before and after editing. These loaders follow the SafeEdit loader's rules:
one ``DataError`` listing every bad item, and deterministic in-order sampling.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from detoxedit.data.schema import (
    build_items,
    check_id,
    check_string,
    json_type,
    read_records,
    sample_in_order,
)

logger = logging.getLogger(__name__)


class TokenizerLike(Protocol):
    """The two tokenizer methods truncation needs (any Hugging Face tokenizer has them)."""

    def encode(self, text: str, add_special_tokens: bool = ...) -> list[int]: ...

    def decode(self, ids: list[int], skip_special_tokens: bool = ...) -> str: ...


@dataclass(frozen=True)
class TriviaQAItem:
    """A TriviaQA question with every accepted answer spelling (EM matches any of them)."""

    question: str
    answer_aliases: tuple[str, ...]


@dataclass(frozen=True)
class XSumItem:
    """An XSum article with its one-sentence reference summary."""

    id: int | str
    document: str
    summary: str


def load_triviaqa(path: str | Path, limit: int | None = None, seed: int = 0) -> list[TriviaQAItem]:
    """Load ``[{question, answer_aliases: [...]}]`` from a JSON list or JSONL file.

    ``limit`` draws a ``random.Random(seed)`` sample returned in file order (see
    ``sample_in_order``), so the same limit and seed always give the same questions.

    Raises:
        DataError: the file cannot be read, or any item is invalid (all are listed).
    """
    records = read_records(path)
    items = build_items(records, str(path), triviaqa_problems, _triviaqa_item, unique_ids=False)
    chosen = sample_in_order(items, limit, seed)
    logger.info("Loaded %d of %d TriviaQA items from %s", len(chosen), len(items), path)
    return chosen


def load_xsum(path: str | Path, limit: int | None = None, seed: int = 0) -> list[XSumItem]:
    """Load ``{id, document, summary}`` objects from a JSONL file or a JSON list.

    ``limit`` draws a ``random.Random(seed)`` sample returned in file order.

    Raises:
        DataError: the file cannot be read, any item is invalid, or ids repeat (all listed).
    """
    records = read_records(path)
    items = build_items(records, str(path), xsum_problems, _xsum_item)
    _warn_empty_documents(items, path)
    chosen = sample_in_order(items, limit, seed)
    logger.info("Loaded %d of %d XSum items from %s", len(chosen), len(items), path)
    return chosen


def _warn_empty_documents(items: list[XSumItem], path: str | Path) -> None:
    """Warn rather than fail: public XSum copies contain a few empty articles."""
    empty = [item.id for item in items if not item.document.strip()]
    if empty:
        logger.warning("%s: %d XSum item(s) with an empty document: ids %s", path, len(empty), empty[:10])


def triviaqa_problems(obj: Any) -> list[str]:
    """Return every problem with one TriviaQA object (empty list: valid)."""
    if not isinstance(obj, Mapping):
        return [f"expected an object, got {json_type(obj)}"]
    problems: list[str] = []
    check_string(obj, "question", problems)
    if "answer_aliases" not in obj:
        problems.append("missing key 'answer_aliases' (expected a non-empty list of strings)")
    else:
        problems.extend(_aliases_problems(obj["answer_aliases"]))
    return problems


def _aliases_problems(aliases: Any) -> list[str]:
    expected = "'answer_aliases' must be a non-empty list of strings"
    if not isinstance(aliases, list):
        return [f"{expected}, got {json_type(aliases)}"]
    if not aliases:
        return [f"{expected}, got an empty list"]
    bad = [json_type(a) for a in aliases if not isinstance(a, str)]
    return [f"{expected}, got {', '.join(bad)} among them"] if bad else []


def xsum_problems(obj: Any) -> list[str]:
    """Return every problem with one XSum object (empty list: valid)."""
    if not isinstance(obj, Mapping):
        return [f"expected an object, got {json_type(obj)}"]
    problems: list[str] = []
    check_id(obj, problems)
    check_string(obj, "document", problems)
    check_string(obj, "summary", problems)
    return problems


def _triviaqa_item(obj: Mapping[str, Any]) -> TriviaQAItem:
    return TriviaQAItem(question=obj["question"], answer_aliases=tuple(obj["answer_aliases"]))


def _xsum_item(obj: Mapping[str, Any]) -> XSumItem:
    return XSumItem(id=obj["id"], document=obj["document"], summary=obj["summary"])


def triviaqa_prompt(question: str) -> str:
    """Zero-shot prompt asking for a bare answer, which exact match needs."""
    return f"Answer the following question with a short answer only.\nQuestion: {question}"


def xsum_prompt(document: str) -> str:
    """Zero-shot prompt asking for the one-sentence summary XSum references are."""
    return f"Summarize the following article in one sentence.\n\n{document}"


def truncate_to_tokens(text: str, tokenizer: TokenizerLike, max_tokens: int) -> str:
    """Keep the start of ``text`` up to ``max_tokens`` tokens, so long articles fit the context.

    We slice token ids and decode them back, never characters, so the budget is exact for
    the model's tokenizer. Text within budget is returned unchanged (no decode round trip).
    """
    if max_tokens < 0:
        raise ValueError(f"max_tokens must be >= 0, got {max_tokens}")
    ids = tokenizer.encode(text, add_special_tokens=False)
    if len(ids) <= max_tokens:
        return text
    return tokenizer.decode(ids[:max_tokens], skip_special_tokens=True)
