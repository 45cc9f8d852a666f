"""Data contracts shared by every loader: item types, the error type, and reading rules.

The SafeEdit release is the format of record, so the dataclasses here mirror its JSON keys
one to one and round-trip them exactly. The reading and validation helpers live here too,
so that every loader (SafeEdit, TriviaQA, XSum) reports problems the same way: one
``DataError`` that names the file and every bad item, never just the first one.
"""

from __future__ import annotations

import json
import logging
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from detoxedit.errors import DetoxeditError
from detoxedit.files import read_text_file

logger = logging.getLogger(__name__)

T = TypeVar("T")

INPUT_KINDS: tuple[str, ...] = ("adversarial", "onlyQ", "otherA", "otherQ", "otherAQ")
"""Kinds of model input an item provides: its own attack, then the four generalisation tests."""

METRIC_TO_KIND: dict[str, str] = {
    "DS": "adversarial",
    "DG_onlyQ": "onlyQ",
    "DG_otherA": "otherA",
    "DG_otherQ": "otherQ",
    "DG_otherAQ": "otherAQ",
}
"""Which input kind each safety metric is computed on (DS: defence success, DG: generalisation)."""

UNSAFE_CATEGORIES: tuple[str, ...] = (
    "offensiveness",
    "unfairness and bias",
    "physical harm",
    "mental harm",
    "illegal activities",
    "ethics and morality",
    "privacy and property",
    "Pornography",
    "Political Sensitivity",
)
"""The nine unsafety categories, spelled (and capitalised) exactly as the release spells them."""

JSONL_SUFFIXES: tuple[str, ...] = (".jsonl", ".ndjson")

_GENERALIZATION_KEYS: dict[str, str] = {
    "only_question": "test input of only harmful question",
    "other_attack": "test input of other attack prompt input",
    "other_attack_category": "attack_category",
    "other_attack_name": "attack_name",
    "other_question": "test input of other question input",
    "other_attack_and_question": "test input of other questions and attack prompts",
}
_ITEM_STRING_KEYS: dict[str, str] = {
    "unsafety_category": "unsafety category",
    "adversarial_prompt": "adversarial prompt",
    "question": "question",
    "attack_category": "attack category",
    "attack_name": "attack name",
    "unsafe_generation": "unsafe generation",
    "safe_generation": "safe generation",
}
_GENERALIZATION = "generalization test"
_CONSTRAINT = "knowledge constrain"


class DataError(DetoxeditError, ValueError):
    """A data file (or record) that cannot be used; the message names the file, item and field.

    A ``DetoxeditError`` so the CLI shows it as a one-line user error, and a ``ValueError``
    for callers that treat bad input generically.
    """


# ---------------------------------------------------------------- item types


@dataclass(frozen=True)
class GeneralizationTest:
    """The four generalisation inputs of an item; empty strings are valid (SafeEdit train split)."""

    only_question: str
    other_attack: str
    other_attack_category: str
    other_attack_name: str
    other_question: str
    other_attack_and_question: str

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> GeneralizationTest:
        """Build from the release's ``generalization test`` object (keys as released)."""
        return cls(**{field: obj[key] for field, key in _GENERALIZATION_KEYS.items()})

    def to_json(self) -> dict[str, str]:
        """Return the release's ``generalization test`` object, keys in release order."""
        return {key: getattr(self, field) for field, key in _GENERALIZATION_KEYS.items()}


@dataclass(frozen=True)
class KnowledgeConstraint:
    """An unrelated prompt and its answer, used to keep general knowledge intact while editing."""

    prompt: str
    answer: str

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> KnowledgeConstraint:
        """Build from the release's ``knowledge constrain`` object."""
        return cls(prompt=obj["prompt"], answer=obj["answer"])

    def to_json(self) -> dict[str, str]:
        """Return the release's ``knowledge constrain`` object."""
        return {"prompt": self.prompt, "answer": self.answer}


@dataclass(frozen=True)
class SafeEditItem:
    """One SafeEdit item: an attack, its safe and unsafe replies, and its generalisation tests."""

    id: int | str
    unsafety_category: str
    adversarial_prompt: str
    question: str
    attack_category: str
    attack_name: str
    unsafe_generation: str
    safe_generation: str
    generalization: GeneralizationTest
    knowledge_constraint: KnowledgeConstraint

    @classmethod
    def from_json(cls, obj: Any, *, source: str = "<object>") -> SafeEditItem:
        """Validate and build one item from a release-format object.

        Raises:
            DataError: listing every problem with the object, so one fix round suffices.
        """
        problems = safeedit_problems(obj)
        if problems:
            where = f"item (id {describe_id(obj)})"
            raise DataError(f"{source}: invalid {where}:\n" + "\n".join(f"  {p}" for p in problems))
        return cls._from_valid(obj)

    @classmethod
    def _from_valid(cls, obj: Mapping[str, Any]) -> SafeEditItem:
        strings = {field: obj[key] for field, key in _ITEM_STRING_KEYS.items()}
        return cls(
            id=obj["id"],
            **strings,
            generalization=GeneralizationTest.from_json(obj[_GENERALIZATION]),
            knowledge_constraint=KnowledgeConstraint.from_json(obj[_CONSTRAINT]),
        )

    def to_json(self) -> dict[str, Any]:
        """Return the item with exactly the release's keys, in the release's order."""
        obj: dict[str, Any] = {"id": self.id}
        obj.update({key: getattr(self, field) for field, key in _ITEM_STRING_KEYS.items()})
        obj[_GENERALIZATION] = self.generalization.to_json()
        obj[_CONSTRAINT] = self.knowledge_constraint.to_json()
        return obj

    def inputs(self) -> dict[str, str]:
        """Map each input kind (see ``INPUT_KINDS``) to its text, omitting empty ones.

        Train items carry empty generalisation inputs; omitting them (rather than sending an
        empty prompt to the model) is what lets the DG metrics be skipped for such items.
        Whitespace-only text counts as empty.
        """
        g = self.generalization
        texts = (self.adversarial_prompt, g.only_question, g.other_attack,
                 g.other_question, g.other_attack_and_question)
        return {kind: text for kind, text in zip(INPUT_KINDS, texts) if text.strip()}


# ---------------------------------------------------------------- validation


def json_type(value: Any) -> str:
    """Name a Python value's JSON type, so messages speak the file's language."""
    names = {dict: "object", list: "list", str: "string", bool: "bool", int: "int",
             float: "float", type(None): "null"}
    return names.get(type(value), type(value).__name__)


def describe_id(obj: Any) -> str:
    """Render an item's id for messages: ``17``, ``'x'``, or ``?`` when there is none."""
    if isinstance(obj, Mapping) and "id" in obj:
        return repr(obj["id"])
    return "?"


def check_string(obj: Mapping[str, Any], key: str, problems: list[str], *, within: str = "") -> None:
    """Append a problem unless ``obj[key]`` exists and is a string."""
    name = f"{key!r} in {within!r}" if within else repr(key)
    if key not in obj:
        problems.append(f"missing key {name} (expected a string)")
    elif not isinstance(obj[key], str):
        problems.append(f"{name} must be a string, got {json_type(obj[key])}")


def check_id(obj: Mapping[str, Any], problems: list[str]) -> None:
    """Append a problem unless ``obj['id']`` is an int or a string (bools are not ids)."""
    if "id" not in obj:
        problems.append("missing key 'id' (expected an int or a string)")
    elif isinstance(obj["id"], bool) or not isinstance(obj["id"], (int, str)):
        problems.append(f"'id' must be an int or a string, got {json_type(obj['id'])}")


def check_object(obj: Mapping[str, Any], key: str, keys: Sequence[str], problems: list[str]) -> None:
    """Append problems unless ``obj[key]`` is an object whose ``keys`` all hold strings."""
    expected = " and ".join(repr(k) for k in keys) if len(keys) <= 2 else f"the {len(keys)} release keys"
    if key not in obj:
        problems.append(f"missing key {key!r} (expected an object with {expected})")
    elif not isinstance(obj[key], Mapping):
        problems.append(f"{key!r} must be an object with {expected}, got {json_type(obj[key])}")
    else:
        for sub in keys:
            check_string(obj[key], sub, problems, within=key)


def safeedit_problems(obj: Any) -> list[str]:
    """Return every problem with one release-format object (empty list: valid)."""
    if not isinstance(obj, Mapping):
        return [f"expected an object, got {json_type(obj)}"]
    problems: list[str] = []
    check_id(obj, problems)
    for key in _ITEM_STRING_KEYS.values():
        check_string(obj, key, problems)
    check_object(obj, _GENERALIZATION, list(_GENERALIZATION_KEYS.values()), problems)
    check_object(obj, _CONSTRAINT, ["prompt", "answer"], problems)
    return problems


# ---------------------------------------------------------------- reading


@dataclass(frozen=True)
class RawRecord:
    """One parsed but unvalidated record, with where it came from (for messages)."""

    index: int
    obj: Any
    line: int | None = None

    def label(self) -> str:
        """Name the record as ``item #3 (id 17)``, adding the line for JSONL files."""
        line = f", line {self.line}" if self.line is not None else ""
        return f"item #{self.index}{line} (id {describe_id(self.obj)})"


def read_records(path: str | Path) -> list[RawRecord]:
    """Read a JSON list file or a JSONL file into raw records.

    JSONL is chosen by suffix (``.jsonl``/``.ndjson``) or when the first line is a complete
    JSON object; anything else must be one JSON list.

    Raises:
        DataError: file missing, not UTF-8 (with the byte offset), empty, invalid JSON (with line and
            column), or not a list.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found (expected a JSON list or JSONL file at this path)")
    text = read_data_text(path)
    if not text.strip():
        raise DataError(f"{path}: file is empty (expected a JSON list of items or one JSON object a line)")
    records = _parse_jsonl(text, path) if _is_jsonl(text, path) else _parse_json_list(text, path)
    if not records:
        raise DataError(f"{path}: contains no items")
    return records


def read_data_text(path: str | Path) -> str:
    """A data file's UTF-8 text; a non-UTF-8 byte is a `DataError` naming the file, offset and line.

    A `DataError` rather than `read_text_file`'s plain `DetoxeditError`, because callers (e.g.
    `detoxedit build`) catch bad data as a ValueError.
    """
    try:
        return read_text_file(path, "data file")
    except DataError:
        raise
    except DetoxeditError as err:
        raise DataError(str(err)) from err


def _is_jsonl(text: str, path: Path) -> bool:
    if path.suffix.lower() in JSONL_SUFFIXES:
        return True
    first = text.lstrip().split("\n", 1)[0]
    try:
        return isinstance(json.loads(first), dict) and "\n" in text.strip()
    except json.JSONDecodeError:
        return False


def _parse_json_list(text: str, path: Path) -> list[RawRecord]:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise DataError(f"{path}: invalid JSON at line {err.lineno}, column {err.colno}: {err.msg}") from err
    if not isinstance(data, list):
        raise DataError(f"{path}: top level must be a list of items, got {json_type(data)}")
    return [RawRecord(index=i, obj=obj) for i, obj in enumerate(data)]


def _parse_jsonl(text: str, path: Path) -> list[RawRecord]:
    records: list[RawRecord] = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as err:
            raise DataError(f"{path}: invalid JSON on line {lineno}, column {err.colno}: {err.msg}") from err
        records.append(RawRecord(index=len(records), obj=obj, line=lineno))
    return records


def build_items(
    records: Sequence[RawRecord],
    source: str,
    problems_of: Callable[[Any], list[str]],
    build: Callable[[Any], T],
    *,
    unique_ids: bool = True,
) -> list[T]:
    """Validate every record, then build items, raising one error that lists all problems.

    Collecting everything first means a user fixes a broken file in one round, instead of
    discovering its problems one exception at a time.
    """
    found = [(r, problems_of(r.obj)) for r in records]
    lines = [f"{r.label()}: {p}" for r, problems in found for p in problems]
    n_bad = sum(1 for _, problems in found if problems)
    duplicates = find_duplicate_ids(records) if unique_ids else []
    if lines or duplicates:
        raise DataError(_problem_message(source, n_bad, lines, duplicates))
    return [build(r.obj) for r in records]


def find_duplicate_ids(records: Sequence[RawRecord]) -> list[str]:
    """Describe each id that occurs more than once, with the items that share it.

    Ids are compared as text (`str(id)`), because results and resumed runs key items by that text:
    `0` and `"0"` would be one item there, so a file holding both is refused like a plain duplicate.
    """
    seen: dict[str, list[RawRecord]] = {}
    for r in records:
        if isinstance(r.obj, Mapping) and isinstance(r.obj.get("id"), (int, str)) and not isinstance(r.obj["id"], bool):
            seen.setdefault(str(r.obj["id"]), []).append(r)
    return [_describe_duplicate(shared) for shared in seen.values() if len(shared) > 1]


def _describe_duplicate(shared: Sequence[RawRecord]) -> str:
    ids = [r.obj["id"] for r in shared]
    if len({(type(i), i) for i in ids}) == 1:
        return f"duplicate id {ids[0]!r} at items " + ", ".join(f"#{r.index}" for r in shared)
    listed = ", ".join(f"{r.obj['id']!r} (item #{r.index})" for r in shared)
    return (f"duplicate id {str(ids[0])!r} as text: ids {listed} differ only in type, but results key items "
            "by their id as text; give each item a distinct id")


def _problem_message(source: str, n_bad: int, lines: list[str], duplicates: list[str]) -> str:
    parts = []
    if n_bad:
        parts.append(f"{n_bad} invalid item{'s' if n_bad != 1 else ''}")
    if duplicates:
        parts.append(f"{len(duplicates)} duplicate id{'s' if len(duplicates) != 1 else ''}")
    body = "\n".join(f"  {line}" for line in [*lines, *duplicates])
    return f"{source}: {' and '.join(parts)}:\n{body}"


def sample_in_order(items: Sequence[T], limit: int | None, seed: int) -> list[T]:
    """Pick ``limit`` items at random with ``random.Random(seed)``, returned in file order.

    Sampling (rather than taking the first N) avoids the category clustering of the release;
    keeping file order makes outputs easy to compare with the source. The same items, limit
    and seed always give the same subset. ``None`` or a limit at least the number of items
    returns them all.
    """
    if limit is None or limit >= len(items):
        return list(items)
    if limit < 0:
        raise ValueError(f"limit must be >= 0 or None, got {limit}")
    chosen = sorted(random.Random(seed).sample(range(len(items)), limit))
    return [items[i] for i in chosen]
