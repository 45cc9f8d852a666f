"""TriviaQA and XSum loading, prompts and token truncation."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from detoxedit.data import (
    DataError,
    TriviaQAItem,
    XSumItem,
    load_triviaqa,
    load_xsum,
    triviaqa_prompt,
    truncate_to_tokens,
    xsum_prompt,
)

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"
TRIVIAQA = DATA / "general" / "triviaqa_dev.json"
XSUM = DATA / "general" / "xsum_dev.jsonl"
needs_data = pytest.mark.skipif(not TRIVIAQA.is_file(), reason=f"shared data not found at {DATA}")


class WordTokenizer:
    """A whitespace tokenizer with the Hugging Face encode/decode signature."""

    def __init__(self) -> None:
        self.vocab: dict[str, int] = {}

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        ids = [self.vocab.setdefault(w, len(self.vocab)) for w in text.split()]
        return ([999] if add_special_tokens else []) + ids

    def decode(self, ids: list[int], skip_special_tokens: bool = False) -> str:
        words = {i: w for w, i in self.vocab.items()}
        return " ".join(words[i] for i in ids if i in words)


@needs_data
def test_loads_real_triviaqa() -> None:
    items = load_triviaqa(TRIVIAQA)
    assert len(items) == 2520
    assert all(isinstance(i.answer_aliases, tuple) and i.answer_aliases for i in items)


@needs_data
def test_loads_real_xsum() -> None:
    items = load_xsum(XSUM)
    assert len(items) == 723
    assert len({i.id for i in items}) == 723
    assert all(i.summary for i in items)
    assert [i.id for i in items if not i.document] == ["32556640"]  # one empty article, kept with a warning


@needs_data
def test_real_limit_is_deterministic() -> None:
    first = load_xsum(XSUM, limit=10, seed=5)
    assert first == load_xsum(XSUM, limit=10, seed=5)
    all_ids = [i.id for i in load_xsum(XSUM)]
    positions = [all_ids.index(i.id) for i in first]
    assert positions == sorted(positions)


def test_triviaqa_from_jsonl(tmp_path: Path) -> None:
    path = tmp_path / "tqa.jsonl"
    rows = [{"question": "Capital of France?", "answer_aliases": ["Paris"]},
            {"question": "2+2?", "answer_aliases": ["4", "four"]}]
    path.write_text("\n".join(json.dumps(r) for r in rows), encoding="utf-8")
    assert load_triviaqa(path) == [TriviaQAItem("Capital of France?", ("Paris",)),
                                   TriviaQAItem("2+2?", ("4", "four"))]


def test_xsum_from_json_list(tmp_path: Path) -> None:
    path = tmp_path / "xsum.json"
    path.write_text(json.dumps([{"id": "1", "document": "Doc.", "summary": "Sum."}]), encoding="utf-8")
    assert load_xsum(path) == [XSumItem("1", "Doc.", "Sum.")]


def test_triviaqa_reports_every_bad_item(tmp_path: Path) -> None:
    rows = [{"question": "ok?", "answer_aliases": ["yes"]},
            {"answer_aliases": ["x"]},
            {"question": "q", "answer_aliases": []},
            {"question": "q", "answer_aliases": "Paris"},
            {"question": "q", "answer_aliases": ["a", 3]}]
    path = tmp_path / "tqa.json"
    path.write_text(json.dumps(rows), encoding="utf-8")
    with pytest.raises(DataError) as err:
        load_triviaqa(path)
    message = str(err.value)
    assert message.startswith(f"{path}: 4 invalid items:")
    assert "item #1 (id ?): missing key 'question' (expected a string)" in message
    assert "item #2 (id ?): 'answer_aliases' must be a non-empty list of strings, got an empty list" in message
    assert "item #3 (id ?): 'answer_aliases' must be a non-empty list of strings, got string" in message
    assert "item #4 (id ?): 'answer_aliases' must be a non-empty list of strings, got int among them" in message


def test_xsum_reports_bad_items_and_duplicates(tmp_path: Path) -> None:
    rows = [{"id": "a", "document": "d", "summary": "s"},
            {"id": "a", "document": "d", "summary": "s"},
            {"id": "b", "document": ["d"], "summary": "s"}]
    path = tmp_path / "x.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows), encoding="utf-8")
    with pytest.raises(DataError) as err:
        load_xsum(path)
    message = str(err.value)
    assert "1 invalid item and 1 duplicate id" in message
    assert "item #2, line 3 (id 'b'): 'document' must be a string, got list" in message
    assert "duplicate id 'a' at items #0, #1" in message


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="file not found"):
        load_triviaqa(tmp_path / "none.json")


def test_prompts_carry_their_input() -> None:
    assert triviaqa_prompt("Who wrote Hamlet?") == (
        "Answer the following question with a short answer only.\nQuestion: Who wrote Hamlet?")
    assert xsum_prompt("Some article.") == "Summarize the following article in one sentence.\n\nSome article."


def test_truncate_keeps_the_start() -> None:
    tok = WordTokenizer()
    assert truncate_to_tokens("one two three four five", tok, 3) == "one two three"
    assert truncate_to_tokens("one  two", tok, 5) == "one  two"  # within budget: unchanged
    assert truncate_to_tokens("one two", tok, 0) == ""
    with pytest.raises(ValueError, match="max_tokens"):
        truncate_to_tokens("one", tok, -1)
