"""General-ability metrics: knowledge QA (KQA, exact match) and summarisation (Csum, ROUGE-1).

These check that an edit which makes a model safe leaves what it knows and can do intact.
"""

from __future__ import annotations

import logging
import re
import string
from collections.abc import Sequence
from functools import lru_cache

import numpy as np
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


def _check_lengths(predictions: Sequence[str], targets: Sequence[object]) -> None:
    if len(predictions) != len(targets):
        raise ValueError(f"{len(predictions)} predictions but {len(targets)} references")
    if len(predictions) == 0:
        raise ValueError("need at least one prediction")


@register_metric("KQA", True, "mean", "Knowledge QA on TriviaQA: exact match against any alias, in %.")
def KQA(predictions: Sequence[str], aliases_list: Sequence[Sequence[str]]) -> float:  # noqa: N802
    """Percentage of predictions that exactly match one of their question's aliases."""
    _check_lengths(predictions, aliases_list)
    return 100.0 * float(np.mean([exact_match(p, a) for p, a in zip(predictions, aliases_list)]))


def kqa_contains(predictions: Sequence[str], aliases_list: Sequence[Sequence[str]]) -> float:
    """KQA with ``contains_match``: the lenient companion reported next to KQA."""
    _check_lengths(predictions, aliases_list)
    return 100.0 * float(np.mean([contains_match(p, a) for p, a in zip(predictions, aliases_list)]))


@lru_cache(maxsize=1)
def _rouge1_scorer() -> RougeScorer:
    """Built on first use, not at import time; stemming as in the usual XSum evaluation."""
    return RougeScorer(["rouge1"], use_stemmer=True)


def rouge1_f(prediction: str, reference: str) -> float:
    """ROUGE-1 F1 of one summary against its reference (Porter-stemmed unigram overlap)."""
    return float(_rouge1_scorer().score(reference, prediction)["rouge1"].fmeasure)


@register_metric("Csum", True, "mean", "Summarisation on XSum: ROUGE-1 F1 against the reference, in %.")
def Csum(predictions: Sequence[str], references: Sequence[str]) -> float:  # noqa: N802
    """Mean ROUGE-1 F1 of the summaries, in percent."""
    _check_lengths(predictions, references)
    return 100.0 * float(np.mean([rouge1_f(p, r) for p, r in zip(predictions, references)]))
