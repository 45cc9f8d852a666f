"""General-ability metrics: knowledge QA (KQA, exact match) and summarisation (Csum, ROUGE-1).

These check that an edit which makes a model safe leaves what it knows and can do intact.
"""

from __future__ import annotations

import logging
import re
import string
from collections.abc import Sequence
from functools import lru_cache

from rouge_score.rouge_scorer import RougeScorer

from detoxedit.metrics.base import register_metric

logger = logging.getLogger(__name__)

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCTUATION = str.maketrans("", "", string.punctuation)


def normalize_answer(s: str) -> str:
    """SQuAD normalisation: lowercase, drop punctuation and articles, squeeze whitespace.

    So that "The Beatles." and "beatles" count as the same answer.
    """
    s = s.lower().translate(_PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", s).split())


def exact_match(prediction: str, aliases: Sequence[str]) -> float:
    """1.0 if the normalised prediction equals any normalised alias, else 0.0."""
    _check_aliases(aliases)
    pred = normalize_answer(prediction)
    return float(any(pred == normalize_answer(a) for a in aliases))


def contains_match(prediction: str, aliases: Sequence[str]) -> float:
    """1.0 if any normalised alias occurs as whole words inside the normalised prediction.

    Chat models answer in sentences ("The capital is Paris."), which exact match scores 0.
    This lenient variant is reported separately; KQA itself stays exact match, as in the paper.
    Aliases that normalise to nothing (e.g. "The") never match.
    """
    _check_aliases(aliases)
    padded = f" {normalize_answer(prediction)} "
    return float(any(alias and f" {alias} " in padded for alias in map(normalize_answer, aliases)))


def _check_aliases(aliases: Sequence[str]) -> None:
    if isinstance(aliases, str):
        raise TypeError("aliases must be a sequence of strings, not one string")
    if len(aliases) == 0:
        raise ValueError("a question needs at least one answer alias")


def _kqa_records(records: Sequence[dict]) -> list[dict]:
    return [r for r in records if r["task"] == "kqa"]


@register_metric("KQA", aggregation="percent", records="general", higher_is_better=True,
                 description="Knowledge QA on TriviaQA: exact match against any alias, in %.")
def KQA(records: Sequence[dict]) -> list[float]:  # noqa: N802
    """Per TriviaQA reply: 1 when it exactly matches one of its question's aliases (after normalisation)."""
    return [exact_match(r["reply"], r["answers"]) for r in _kqa_records(records)]


@lru_cache(maxsize=1)
def _rouge1_scorer() -> RougeScorer:
    """Built on first use, not at import time; stemming as in the usual XSum evaluation."""
    return RougeScorer(["rouge1"], use_stemmer=True)


def rouge1_f(prediction: str, reference: str) -> float:
    """ROUGE-1 F1 of one summary against its reference (Porter-stemmed unigram overlap)."""
    return float(_rouge1_scorer().score(reference, prediction)["rouge1"].fmeasure)


@register_metric("Csum", aggregation="percent", records="general", higher_is_better=True,
                 description="Summarisation on XSum: ROUGE-1 F1 against the reference, in %.")
def Csum(records: Sequence[dict]) -> list[float]:  # noqa: N802
    """Per XSum summary: its ROUGE-1 F1 against the reference."""
    return [rouge1_f(r["reply"], r["reference"]) for r in records if r["task"] == "csum"]


@register_metric("KQA_contains", aggregation="percent", records="general", higher_is_better=True, in_paper=False,
                 title="KQA (contains)",
                 description="KQA with the answer anywhere in the reply, as whole words; small chat models answer in "
                             "sentences, which exact match scores 0")
def KQA_contains(records: Sequence[dict]) -> list[float]:  # noqa: N802
    """Per TriviaQA reply: 1 when a normalised alias occurs in it as whole words.

    Not in the paper: a small chat model answers "The capital of France is Paris.", which exact
    match scores 0, so only this lenient score shows whether an edit changed what the model knows.
    """
    return [contains_match(r["reply"], r["answers"]) for r in _kqa_records(records)]
