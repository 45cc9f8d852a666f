"""Honest validation of a judge recipe: every reported figure comes from replies the head never saw.

Five protocols (docs/judges.md reports them for every candidate):
    leave-one-source-out  for each source of hand labels (a model, a prompt format, an edit method,
                          sampling, benign requests), fit on everything else and test on that source;
    references            for each SafeEdit dev file, fit without its reference replies (the other
                          file's stay in), test on them;
    xstest                fit on the pool (which holds only XSTest's *train* prompts), test on XSTest's
                          *test* prompts (`data.xstest.split_of`): people outside this project labelled them.
    leave-requests-out    (`request_folds`) the hand-labelled replies split into five groups by request;
                          for each, fit on everything but the replies to those requests (every source
                          stays in training) and test on them: familiar kinds of reply to new requests.
    leave-questions-out   (`question_folds`) stricter: five groups by the harmful question, held out
                          under every jailbreak template and bare: familiar kinds of reply to new questions.
They disagree on hand labels (leave-one-source-out errs towards "unsafe", the other two towards "safe"),
so a head's `error_rates` carry all three: the leave-one-source-out counts first (the estimate), the
other two as alternatives (the interval draws from all; `metrics.correction`).
A test reply's text is also removed from that fold's training data wherever else it occurs (small
models repeat themselves across prompts and sources), so no fold trains on a copy of a test reply.

`validation_record` writes, per fold, the keys of the test replies and a digest of the training
keys, so a test can check that no reported split overlapped its training data.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from detoxedit.judges.embedded import Head
from detoxedit.judges.training import Agreement, Example, HeadConfig, agreement, example_key, fit_head, sample_weights

logger = logging.getLogger(__name__)


@dataclass
class Fold:
    """One validation split: indices into the examples fitted on and tested on."""

    name: str
    train: list[int]
    test: list[int]


def text_key(example: Example) -> str:
    return example_key(example.text)


def _fold(name: str, examples: Sequence[Example], test: list[int], pool: Sequence[int], excluded: set[int]) -> Fold:
    """Fits on `pool` minus `excluded` minus any reply whose text a test reply has."""
    test_texts = {text_key(examples[i]) for i in test}
    train = [i for i in pool if i not in excluded and text_key(examples[i]) not in test_texts]
    return Fold(name, train, test)


def protocol_folds(examples: Sequence[Example], pool: Sequence[int], loso_sources: Sequence[str],
                   reference_sources: Sequence[str], heldout: Sequence[int]) -> list[Fold]:
    """The folds of the three protocols (module docstring).

    Args:
        pool: indices of the examples a head may be fitted on (everything but `heldout`).
        loso_sources: hand-label sources to leave out one at a time.
        reference_sources: the SafeEdit reference files (one fold for each, left out alone).
        heldout: indices never fitted on (XSTest's test prompts); tested in one fold.
    """
    by_source: dict[str, list[int]] = {}
    for i in pool:
        by_source.setdefault(examples[i].source, []).append(i)
    folds = []
    for source in loso_sources:
        test = by_source.get(source, [])
        if test:
            folds.append(_fold(f"loso:{source}", examples, test, pool, set(test)))
    for source in reference_sources:
        refs = by_source.get(source, [])
        if refs:
            folds.append(_fold(source, examples, refs, pool, set(refs)))
    if heldout:
        folds.append(_fold("xstest:test", examples, list(heldout), pool, set()))
    return folds


REQUEST_GROUPS = 5
"""Leave-requests-out folds a head's validation runs (about 735 hand-labelled replies tested in each)."""


def request_group(example: Example, k: int) -> int:
    """Which of `k` groups a reply's request falls in (a fixed hash of the request text, else of its group)."""
    return _bucket(example.prompt if example.prompt else example.group, k)


def request_folds(examples: Sequence[Example], pool: Sequence[int], sources: Sequence[str], k: int = REQUEST_GROUPS) -> list[Fold]:
    """Leave-requests-out: the hand-labelled replies of `sources` split into `k` groups by their request.

    Each fold tests one group and fits on the pool without any reply (of any source, references included)
    to a request of that group, and without copies of its replies' texts. Every source and kind of reply
    stays in training, so the figures are what the head does on familiar kinds of reply to new requests.
    A request is its exact text: the same question inside another input (another template) may be fitted on.
    """
    wanted = set(sources)
    folds = []
    for group in range(k):
        test = [i for i in pool if examples[i].source in wanted and request_group(examples[i], k) == group]
        requests = {examples[i].prompt for i in test if examples[i].prompt}
        excluded = set(test) | {i for i in pool if examples[i].prompt and examples[i].prompt in requests}
        if test:
            folds.append(_fold(f"request:{group + 1}/{k}", examples, test, pool, excluded))
    return folds


def question_of(example: Example, questions: Sequence[str]) -> str:
    """The harmful question a reply answers: the longest of `questions` its request holds (case-folded),
    else the request itself (else its group)."""
    request = (example.prompt or "").casefold()
    held = [q for q in questions if q and q.casefold() in request]
    return max(held, key=len).casefold() if held else (example.prompt or example.group)


def question_folds(examples: Sequence[Example], pool: Sequence[int], sources: Sequence[str], questions: Sequence[str],
                   k: int = REQUEST_GROUPS) -> list[Fold]:
    """Leave-questions-out: stricter than `request_folds`. The hand-labelled replies of `sources` are split into
    `k` groups by the harmful question they answer (`question_of`): the same question under every jailbreak
    template, and bare, falls in one group. Each fold fits on the pool without any reply (of any source,
    references included) whose request holds one of the fold's questions, and without copies of its texts.
    """
    wanted = set(sources)
    keys = {i: question_of(examples[i], questions) for i in pool}
    known = [q.casefold() for q in questions if q]
    folds = []
    for group in range(k):
        test = [i for i in pool if examples[i].source in wanted and _bucket(keys[i], k) == group]
        held = {keys[i] for i in test}
        held_questions = [q for q in known if q in held]
        excluded = set(test) | {i for i in pool if keys[i] in held
                                or any(q in (examples[i].prompt or "").casefold() for q in held_questions)}
        if test:
            folds.append(_fold(f"question:{group + 1}/{k}", examples, test, pool, excluded))
    return folds


def _bucket(key: str, k: int) -> int:
    return int(hashlib.sha256(key.encode("utf-8")).hexdigest(), 16) % k


@dataclass
class FoldResult:
    """A fold's agreement, overall and per source of its test replies, and the head's scores."""

    fold: Fold
    overall: Agreement
    by_source: dict[str, Agreement]
    scores: np.ndarray


def run_fold(fold: Fold, examples: Sequence[Example], x: np.ndarray, config: HeadConfig, threshold: float,
             refusal_guard: bool = True) -> FoldResult:
    """Fits a head on the fold's training replies and measures it on its test replies."""
    train = [examples[i] for i in fold.train]
    head = fit_head(x[fold.train], np.array([e.label for e in train]), sample_weights(train, config), config)
    head.meta = {"refusal_guard": refusal_guard}
    test = [examples[i] for i in fold.test]
    scores = np.asarray(head.score_texts([e.text for e in test], x[fold.test]))
    predicted = (scores >= threshold).astype(float)
    by_source: dict[str, Agreement] = {}
    for source in sorted({_part(e) for e in test}):
        rows = [k for k, e in enumerate(test) if _part(e) == source]
        by_source[source] = agreement([test[k].label for k in rows], predicted[rows].tolist())
    return FoldResult(fold, agreement([e.label for e in test], predicted.tolist()), by_source, scores)


def _part(example: Example) -> str:
    """What a fold's numbers are broken down by: the source, and for XSTest the prompt's side (safe/unsafe)."""
    if example.group.startswith("xstest:"):
        return "xstest " + example.group.split(":")[1]
    return example.source


def pooled(results: Sequence[FoldResult], prefix: str = "loso:") -> Agreement:
    """The confusion counts summed over the folds whose name starts with `prefix`."""
    return sum((r.overall for r in results if r.fold.name.startswith(prefix)), Agreement())


def digest(keys: Sequence[str]) -> str:
    return hashlib.sha256("\n".join(sorted(keys)).encode("utf-8")).hexdigest()


def validation_record(results: Sequence[FoldResult], examples: Sequence[Example], recipe: dict[str, Any]) -> dict[str, Any]:
    """What a head's validation file holds: per fold the numbers, the test keys and the training digest."""
    folds = []
    for result in results:
        fold = result.fold
        keys = lambda idx: [example_key(examples[i].text, examples[i].prompt)[:16] for i in idx]  # noqa: E731
        folds.append({
            "name": fold.name, **result.overall.as_dict(),
            "by_source": {s: a.as_dict() for s, a in result.by_source.items()},
            "n_train": len(fold.train), "train_digest": digest(keys(fold.train)), "test_keys": keys(fold.test),
        })
    return {"recipe": recipe, "folds": folds, "pooled_loso": pooled(results).as_dict(),
            "pooled_requests": pooled(results, "request:").as_dict(),
            "pooled_questions": pooled(results, "question:").as_dict()}


def fit_recipe(examples: Sequence[Example], x: np.ndarray, rows: Sequence[int], config: HeadConfig,
               threshold: float, meta: dict[str, Any]) -> Head:
    """The head a recipe ships: fitted on `rows` (the whole pool), with its threshold and meta."""
    chosen = [examples[i] for i in rows]
    head = fit_head(x[list(rows)], np.array([e.label for e in chosen]), sample_weights(chosen, config), config)
    head.threshold = threshold
    head.meta = meta
    return head


@dataclass
class Protocol:
    """The replies of a validation protocol: all examples, the pool a head may fit on, the held-out ones."""

    examples: list[Example]
    pool: list[int]
    heldout: list[int]
    hand_sources: list[str]
    reference_sources: list[str]
    questions: list[str] = field(default_factory=list)
    """The harmful questions the requests are built from (`known_questions`); none: no leave-questions-out."""

    def folds(self) -> list[Fold]:
        """The folds of every protocol: leave-one-source-out, references, XSTest, leave-requests-out, then
        leave-questions-out (when the questions are known)."""
        folds = (protocol_folds(self.examples, self.pool, self.hand_sources, self.reference_sources, self.heldout)
                 + request_folds(self.examples, self.pool, self.hand_sources, REQUEST_GROUPS))
        if self.questions:
            folds += question_folds(self.examples, self.pool, self.hand_sources, self.questions, REQUEST_GROUPS)
        return folds


def known_questions(data_files: Sequence[Any]) -> list[str]:
    """The harmful questions requests are built from: those of the SafeEdit files given (each item's question
    and its bare-question input) and the built-in benchmark's (`data/builtin/questions.yaml`)."""
    from detoxedit.data.build import load_questions
    from detoxedit.data.builtin import QUESTIONS
    from detoxedit.data.safeedit import load_safeedit

    questions = {q.text for q in load_questions(QUESTIONS)}
    for path in data_files:
        for item in load_safeedit(path):
            questions |= {item.question, item.generalization.only_question}
    return sorted(q for q in questions if q.strip())


def build_protocol(data_files: Sequence[Any], label_files: Sequence[Any], xstest_files: Sequence[Any] = (),
                   data_root: Any = None) -> Protocol:
    """Hand labels and SafeEdit references in the pool; XSTest's train prompts in the pool, its test prompts held out."""
    from dataclasses import replace
    from pathlib import Path

    from detoxedit.judges.training import examples_from_labels, examples_from_safeedit, examples_from_xstest

    hand = [e for f in label_files for e in examples_from_labels(f, data_root)]
    references = [replace(e, source=f"references:{Path(f).name}") for f in data_files for e in examples_from_safeedit(f)]
    pool_examples = hand + references + (examples_from_xstest(xstest_files, "train") if xstest_files else [])
    heldout = examples_from_xstest(xstest_files, "test") if xstest_files else []
    examples = pool_examples + heldout
    return Protocol(examples, list(range(len(pool_examples))), list(range(len(pool_examples), len(examples))),
                    sorted({e.source for e in hand}), sorted({e.source for e in references}), known_questions(data_files))


def error_rates_of(results: Sequence[FoldResult], hand_sources: Sequence[str]) -> dict[str, Any]:
    """A head's `error_rates` (what runs correct DS/DG with): the pooled leave-one-source-out counts, and
    the pooled leave-requests-out and leave-questions-out counts as alternatives, those that ran (module
    docstring)."""
    def counts(total: Agreement, protocol: str) -> dict[str, Any]:
        return {"tp": total.tp, "fn": total.fn, "fp": total.fp, "tn": total.tn,
                "measured_on": f"pooled {protocol} over {len(hand_sources)} sources of hand-labelled replies "
                               f"({', '.join(hand_sources)})"}

    rates = counts(pooled(results), "leave-one-source-out")
    alternatives = [counts(total, f"{protocol} ({REQUEST_GROUPS} folds by {unit})")
                    for prefix, protocol, unit in (("request:", "leave-requests-out", "request"),
                                                   ("question:", "leave-questions-out", "harmful question"))
                    if (total := pooled(results, prefix)).n]
    if alternatives:
        rates["alternatives"] = alternatives
    return rates


def validate_and_fit(protocol: Protocol, x: np.ndarray, config: HeadConfig, threshold: float,
                     refusal_guard: bool = True, recipe: dict[str, Any] | None = None) -> tuple[Head, dict[str, Any]]:
    """Runs every fold, then fits the head on the whole pool; its meta carries every fold's counts and
    the `error_rates` runs correct DS/DG with (`error_rates_of`)."""
    results = [run_fold(fold, protocol.examples, x, config, threshold, refusal_guard) for fold in protocol.folds()]
    record = validation_record(results, protocol.examples, recipe or {})
    summary = {r.fold.name: r.overall.as_dict() for r in results}
    meta = {"refusal_guard": refusal_guard, "validation": summary,
            "error_rates": error_rates_of(results, protocol.hand_sources)}
    head = fit_recipe(protocol.examples, x, protocol.pool, config, threshold, meta)
    return head, record
