"""The data that ships with detoxedit: source YAMLs, the built benchmark and the mini general sets.

A new user has no SafeEdit copy (the release is gated), so the package carries its own small
benchmark, built from original questions and templates by ``detoxedit build`` (see
``detoxedit.data.build``), plus small trivia and summarisation sets for KQA and Csum. Everything
here is a path or a loader; nothing is read at import time.
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

from detoxedit.data.general import TriviaQAItem, XSumItem, load_triviaqa, load_xsum
from detoxedit.data.safeedit import load_safeedit
from detoxedit.data.schema import DataError, SafeEditItem

BUILTIN_DIR = Path(str(resources.files("detoxedit.data") / "builtin"))

QUESTIONS = BUILTIN_DIR / "questions.yaml"
TEMPLATES = BUILTIN_DIR / "templates.yaml"
REFUSALS = BUILTIN_DIR / "refusals.yaml"
KNOWLEDGE = BUILTIN_DIR / "knowledge.yaml"
REVIEWED = BUILTIN_DIR / "reviewed.yaml"
"""Replies the judge called unsafe that reading found not unsafe; the build leaves them out."""
TRIVIA_YAML = BUILTIN_DIR / "trivia.yaml"
SUMMARIES_YAML = BUILTIN_DIR / "summaries.yaml"

BENCHMARK = BUILTIN_DIR / "safeedit_builtin.json"
"""Base name of the shipped benchmark; the files are ``safeedit_builtin_{train,val,test}.json``."""

TRIVIA = BUILTIN_DIR / "trivia.json"
"""``trivia.yaml`` in the TriviaQA format ``load_triviaqa`` reads (written by ``write_general_sets``)."""

XSUM = BUILTIN_DIR / "xsum.json"
"""``summaries.yaml`` as a JSON list of XSum objects ``{id, document, summary}``, which ``load_xsum``
reads (a list rather than JSONL so that the package-data pattern ``*.json`` ships it)."""

BUILT_WITH: dict[str, object] = {
    "model": "default",
    "judge": "embedded",
    "judge_head_sha256": "6433b54dbbdf296c5a5e583f771a2b85a2b90513d78be08c20e95f101ad8852d",
    "judge_refusal_guard": True,  # the guard only lowers scores; no shipped unsafe reply is a guarded refusal
    "seed": 0,
    "splits": [0.6, 0.2, 0.2],
    "per_question": 25,  # every built-in template: the model complies with few, and reading drops more
    "max_new_tokens": 64,
    "torch_threads": 2,
}
"""How the shipped benchmark was built. SafeEdit JSON has no room for metadata, so it lives here;
``detoxedit build`` with these settings on the built-in YAMLs (and the built-in ``reviewed.yaml``) reproduces the files byte for byte
(on CPU with the same torch version; other kernels may change a generated token)."""

SPLIT_NAMES: tuple[str, ...] = ("train", "val", "test")


def benchmark_path(split: str) -> Path:
    """Path of one split of the shipped benchmark."""
    if split not in SPLIT_NAMES:
        raise DataError(f"unknown split {split!r}; expected one of {', '.join(SPLIT_NAMES)}")
    from detoxedit.data.build import split_paths

    return split_paths(BENCHMARK)[split]


def load_builtin_benchmark(split: str = "test", **kwargs: object) -> list[SafeEditItem]:
    """Items of one split of the shipped benchmark; ``kwargs`` go to ``load_safeedit`` (limit, seed...)."""
    return load_safeedit(benchmark_path(split), **kwargs)  # type: ignore[arg-type]


def load_builtin_trivia(limit: int | None = None, seed: int = 0) -> list[TriviaQAItem]:
    """The mini trivia set (50 questions) for KQA."""
    return load_triviaqa(TRIVIA, limit=limit, seed=seed)


def load_builtin_xsum(limit: int | None = None, seed: int = 0) -> list[XSumItem]:
    """The mini summarisation set (20 invented news items) for Csum."""
    return load_xsum(XSUM, limit=limit, seed=seed)


def general_sets_from_yaml() -> tuple[str, str]:
    """Render ``trivia.yaml`` and ``summaries.yaml`` as the text of ``trivia.json`` and ``xsum.json``."""
    from detoxedit.data.build import read_yaml

    trivia = [{"question": q["question"], "answer_aliases": list(q["answer_aliases"])}
              for q in read_yaml(TRIVIA_YAML, "questions", list)]
    docs = [{"id": d["id"], "document": d["document"], "summary": d["summary"]}
            for d in read_yaml(SUMMARIES_YAML, "documents", list)]
    trivia_text = json.dumps(trivia, indent=2, ensure_ascii=False) + "\n"
    xsum_text = json.dumps(docs, indent=2, ensure_ascii=False) + "\n"
    return trivia_text, xsum_text


def write_general_sets() -> tuple[Path, Path]:
    """Regenerate ``trivia.json`` and ``xsum.json`` after editing their YAML sources."""
    trivia_text, xsum_text = general_sets_from_yaml()
    TRIVIA.write_text(trivia_text, encoding="utf-8")
    XSUM.write_text(xsum_text, encoding="utf-8")
    return TRIVIA, XSUM
