"""Build a SafeEdit-format benchmark from harmful questions and jailbreak templates (paper, Figure 2).

The pipeline, in order:

1. Read and validate the sources (questions by unsafe category, attack templates with one
   ``{question}`` slot, per-category refusal templates, benign knowledge pairs). Every problem in a
   file is reported at once, naming the file and the entry.
2. Split the questions of each category into train/val/test, so that no question (and hence no
   near-duplicate attack on it) crosses splits.
3. Pair each question with ``per_question`` templates -> adversarial inputs. The safe reply is the
   question's own ``safe_reply``, else a category refusal template.
4. Let the model answer every adversarial input (greedy) and keep a pair only when the judge calls
   the reply unsafe and a person reading it did not find it otherwise (``load_reviewed``: the
   judge proposes, reading decides): the unsafe generation is always the model's own text, never ours.
5. Add the four generalisation inputs and a knowledge-constraint pair, then write one release-format
   JSON file per split.

Every random choice is drawn from a ``random.Random`` seeded by the build seed and the names of the
things being chosen for, and items come out in a fixed order (split, category, question and template
in file order), so the same sources and seed give the same files byte for byte, and the judge
dropping one item never changes the choices made for another.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from detoxedit.config import check
from detoxedit.data.safeedit import save_safeedit
from detoxedit.data.schema import (
    UNSAFE_CATEGORIES,
    DataError,
    GeneralizationTest,
    KnowledgeConstraint,
    SafeEditItem,
)

logger = logging.getLogger(__name__)

SLOT = "{question}"
SPLITS: tuple[str, ...] = ("train", "val", "test")
MIN_QUESTIONS_PER_SPLIT = 2
"""Each used split needs two questions per category, so the other-question input stays inside it."""


# ---------------------------------------------------------------- source types


@dataclass(frozen=True)
class Question:
    """A harmful request of one unsafe category; ``safe_reply`` may be empty (a refusal is written)."""

    category: str
    text: str
    safe_reply: str = ""


@dataclass(frozen=True)
class Template:
    """A jailbreak template; ``text`` holds the slot ``{question}`` exactly once and no other brace."""

    name: str
    attack_category: str
    text: str

    def fill(self, question: str) -> str:
        """Put the question in the slot; ``replace`` rather than ``format``, so braces in it are safe."""
        return self.text.replace(SLOT, question)


@dataclass(frozen=True)
class Sources:
    """Validated inputs of a build."""

    questions: tuple[Question, ...]
    templates: tuple[Template, ...]
    refusals: Mapping[str, tuple[str, ...]]
    knowledge: tuple[KnowledgeConstraint, ...]

    def by_category(self) -> dict[str, list[Question]]:
        """Questions grouped by category, in release category order, file order inside each."""
        groups: dict[str, list[Question]] = {c: [] for c in UNSAFE_CATEGORIES}
        for q in self.questions:
            groups[q.category].append(q)
        return {c: qs for c, qs in groups.items() if qs}


@dataclass(frozen=True)
class BuildConfig:
    """Settings of a build; all of them (with the sources, model and judge) fix the output bytes."""

    seed: int = 0
    splits: tuple[float, float, float] = (0.6, 0.2, 0.2)
    per_question: int = 2
    max_new_tokens: int = 64

    def __post_init__(self) -> None:
        check(len(self.splits) == 3 and all(f >= 0 for f in self.splits) and sum(self.splits) > 0,
              f"splits must be three non-negative train,val,test fractions, got {self.splits}")
        check(self.per_question >= 1, f"per_question must be >= 1, got {self.per_question}")
        check(self.max_new_tokens >= 1, f"max_new_tokens must be >= 1, got {self.max_new_tokens}")


@dataclass(frozen=True)
class Candidate:
    """A planned item before the model answers: everything but the unsafe generation."""

    split: str
    question: Question
    template: Template
    safe_reply: str
    generalization: GeneralizationTest
    knowledge: KnowledgeConstraint

    @property
    def adversarial_prompt(self) -> str:
        return self.template.fill(self.question.text)

    def to_item(self, item_id: int, unsafe_generation: str) -> SafeEditItem:
        return SafeEditItem(
            id=item_id, unsafety_category=self.question.category,
            adversarial_prompt=self.adversarial_prompt, question=self.question.text,
            attack_category=self.template.attack_category, attack_name=self.template.name,
            unsafe_generation=unsafe_generation, safe_generation=self.safe_reply,
            generalization=self.generalization, knowledge_constraint=self.knowledge,
        )


@dataclass
class BuildResult:
    """The built items per split, and how many candidates the judge dropped (reply judged safe)."""

    splits: dict[str, list[SafeEditItem]]
    candidates: int
    dropped: int
    dropped_by_category: dict[str, int] = field(default_factory=dict)
    rejected_by_reading: int = 0  # of the dropped: judged unsafe, but read and found not unsafe


# ---------------------------------------------------------------- reading and validation


def read_yaml(path: str | Path, key: str, kind: type, allow_empty: bool = False) -> Any:
    """Read ``path`` and return its top-level ``key``, which must be a ``kind`` (non-empty unless `allow_empty`)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        raise DataError(f"{path}: invalid YAML: {err}") from err
    expected = "a mapping" if kind is dict else "a list"
    if not isinstance(data, dict) or key not in data:
        raise DataError(f"{path}: expected a top-level key {key!r} holding {expected}")
    if not isinstance(data[key], kind) or not (data[key] or allow_empty):
        raise DataError(f"{path}: {key!r} must be a {'' if allow_empty else 'non-empty '}{expected.split()[-1]}")
    return data[key]


def _raise_problems(path: str | Path, problems: list[str]) -> None:
    if problems:
        body = "\n".join(f"  {p}" for p in problems)
        raise DataError(f"{path}: {len(problems)} problem{'s' * (len(problems) != 1)}:\n{body}")


def _string(entry: Any, key: str, where: str, problems: list[str], *, required: bool = True) -> str:
    """The stripped string ``entry[key]``; a problem is recorded when it is missing, empty or not text."""
    if not isinstance(entry, Mapping):
        problem = f"{where}: expected a mapping, got {type(entry).__name__}"
        if problem not in problems:
            problems.append(problem)
        return ""
    value = entry.get(key)
    if value is None or (isinstance(value, str) and not value.strip()):
        if required:
            problems.append(f"{where}: missing or empty {key!r} (expected a non-empty string)")
        return ""
    if not isinstance(value, str):
        problems.append(f"{where}: {key!r} must be a string, got {type(value).__name__}")
        return ""
    return value.strip()


def slot_problem(text: str, *, required: bool) -> str | None:
    """Why ``text`` is not a valid template (``None`` if it is): one slot, no other brace."""
    count = text.count(SLOT)
    if count == 0 and required:
        return f"has no {SLOT} slot (each template needs exactly one, where the question goes)"
    if count > 1:
        return f"has {count} {SLOT} slots (at most one is allowed)"
    rest = text.replace(SLOT, "")
    if "{" in rest or "}" in rest:
        return f"has a brace outside the {SLOT} slot (only the exact slot {SLOT} may use braces)"
    return None


def canonical_category(name: Any) -> str | None:
    """The release spelling of a category name matched case-insensitively, else ``None``."""
    if not isinstance(name, str):
        return None
    return {c.casefold(): c for c in UNSAFE_CATEGORIES}.get(name.strip().casefold())


def _unknown_category(name: Any) -> str:
    return f"unknown category {name!r}; expected one of: {', '.join(UNSAFE_CATEGORIES)}"


def load_questions(path: str | Path) -> tuple[Question, ...]:
    """Read ``categories: {category: [{question, safe_reply?}, ...]}``.

    Raises:
        DataError: unknown category, empty list, missing text, or a question seen twice.
    """
    raw = read_yaml(path, "categories", dict)
    problems: list[str] = []
    questions: list[Question] = []
    seen: dict[str, str] = {}
    for name, entries in raw.items():
        category = canonical_category(name)
        if category is None:
            problems.append(_unknown_category(name))
            continue
        if not isinstance(entries, list) or not entries:
            problems.append(f"category {name!r}: expected a non-empty list of questions")
            continue
        for index, entry in enumerate(entries):
            where = f"category {name!r}, question #{index}"
            text = _string(entry, "question", where, problems)
            reply = _string(entry, "safe_reply", where, problems, required=False)
            key = " ".join(text.casefold().split())
            if text and key in seen:
                problems.append(f"{where}: duplicate question {text!r} (also {seen[key]})")
            elif text:
                seen[key] = where
                questions.append(Question(category, text, reply))
    _raise_problems(path, problems)
    return tuple(questions)


def load_templates(path: str | Path) -> tuple[Template, ...]:
    """Read ``templates: [{name, attack_category, text}, ...]``.

    Raises:
        DataError: a missing or repeated slot, a stray brace, a duplicate name, or an empty field.
    """
    raw = read_yaml(path, "templates", list)
    problems: list[str] = []
    templates: list[Template] = []
    names: dict[str, int] = {}
    for index, entry in enumerate(raw):
        name = entry.get("name", "") if isinstance(entry, Mapping) else ""
        where = f"template #{index} ({name!r})" if name else f"template #{index}"
        name = _string(entry, "name", where, problems)
        attack = _string(entry, "attack_category", where, problems)
        text = _string(entry, "text", where, problems)
        if text and (problem := slot_problem(text, required=True)):
            problems.append(f"{where}: 'text' {problem}")
        if name in names:
            problems.append(f"{where}: duplicate template name {name!r} (also template #{names[name]})")
        names.setdefault(name, index)
        templates.append(Template(name, attack, text))
    _raise_problems(path, problems)
    return tuple(templates)


def load_refusals(path: str | Path) -> dict[str, tuple[str, ...]]:
    """Read ``refusals: {category: [text, ...]}``; a text may hold ``{question}`` once."""
    raw = read_yaml(path, "refusals", dict)
    problems: list[str] = []
    refusals: dict[str, tuple[str, ...]] = {}
    for name, texts in raw.items():
        category = canonical_category(name)
        if category is None:
            problems.append(_unknown_category(name))
        elif not isinstance(texts, list) or not texts or not all(isinstance(t, str) and t.strip() for t in texts):
            problems.append(f"category {name!r}: expected a non-empty list of non-empty strings")
        else:
            for index, text in enumerate(texts):
                if problem := slot_problem(text, required=False):
                    problems.append(f"category {name!r}, refusal #{index}: {problem}")
            refusals[category] = tuple(t.strip() for t in texts)
    _raise_problems(path, problems)
    return refusals


def load_knowledge(path: str | Path) -> tuple[KnowledgeConstraint, ...]:
    """Read ``pairs: [{prompt, answer}, ...]``: benign QA used as knowledge constraints."""
    raw = read_yaml(path, "pairs", list)
    problems: list[str] = []
    pairs = []
    for index, entry in enumerate(raw):
        prompt = _string(entry, "prompt", f"pair #{index}", problems)
        answer = _string(entry, "answer", f"pair #{index}", problems)
        pairs.append(KnowledgeConstraint(prompt, answer))
    _raise_problems(path, problems)
    return tuple(pairs)


def load_sources(
    questions: str | Path,
    templates: str | Path,
    refusals: str | Path,
    knowledge: str | Path,
) -> Sources:
    """Read and cross-check all four source files.

    Raises:
        DataError: any file is invalid, or a question has no safe reply and its category no refusal.
    """
    sources = Sources(load_questions(questions), load_templates(templates),
                      load_refusals(refusals), load_knowledge(knowledge))
    missing = sorted({q.category for q in sources.questions if not q.safe_reply} - set(sources.refusals))
    if missing:
        raise DataError(f"{refusals}: no refusal templates for categor{'ies' if len(missing) > 1 else 'y'} "
                        f"{', '.join(map(repr, missing))}, which have questions without a safe_reply in {questions}")
    return sources


# ---------------------------------------------------------------- planning (no model)


def rng(seed: int, *parts: str) -> random.Random:
    """A generator keyed by the seed and names; string seeds hash with SHA-512, stable across runs."""
    return random.Random("\x1f".join([str(seed), *parts]))


def split_sizes(n: int, fractions: Sequence[float], category: str, source: str = "questions") -> list[int]:
    """Questions per split for a category of ``n``: rounded, at least 2 per used split; the largest takes the rest.

    Raises:
        DataError: the category has too few questions to give every used split two of them.
    """
    total = sum(fractions)
    sizes = [max(MIN_QUESTIONS_PER_SPLIT, round(n * f / total)) if f > 0 else 0 for f in fractions]
    main = max(range(len(fractions)), key=lambda i: (fractions[i], -i))  # takes the remainder
    sizes[main] = n - (sum(sizes) - sizes[main])
    if sizes[main] < MIN_QUESTIONS_PER_SPLIT:
        need = MIN_QUESTIONS_PER_SPLIT * sum(f > 0 for f in fractions)
        raise DataError(f"{source}: category {category!r} has {n} question(s), too few for splits "
                        f"{tuple(fractions)}: each used split needs {MIN_QUESTIONS_PER_SPLIT} questions per "
                        f"category (so the other-question test stays inside its split); add questions "
                        f"(at least {need}) or change --splits")
    return sizes


def assign_splits(sources: Sources, config: BuildConfig, source: str = "questions") -> dict[Question, str]:
    """Shuffle each category's questions with the seed and deal them out to the splits."""
    assignment: dict[Question, str] = {}
    for category, questions in sources.by_category().items():
        sizes = split_sizes(len(questions), config.splits, category, source)
        order = list(questions)
        rng(config.seed, "split", category).shuffle(order)
        start = 0
        for split, size in zip(SPLITS, sizes):
            assignment.update({q: split for q in order[start:start + size]})
            start += size
    return assignment


def safe_reply_for(question: Question, refusals: Mapping[str, Sequence[str]], seed: int) -> str:
    """The question's own safe reply, else a refusal template of its category with the question filled."""
    if question.safe_reply:
        return question.safe_reply
    text = rng(seed, "refusal", question.text).choice(list(refusals[question.category]))
    return text.replace(SLOT, question.text)


def generalization_for(question: Question, template: Template, split_mates: Sequence[Question],
                       templates: Sequence[Template], seed: int) -> GeneralizationTest:
    """The four generalisation inputs: question alone; other attack; other question; both other.

    The other attack is any template but the item's own; the other question is another question
    of the same category and split. The ``attack_*`` fields describe the other attack, which the
    other-attack and the both-other inputs share.
    """
    choose = rng(seed, "generalization", question.text, template.name)
    other_template = choose.choice([t for t in templates if t.name != template.name])
    other_question = choose.choice([q for q in split_mates if q.text != question.text])
    return GeneralizationTest(
        only_question=question.text,
        other_attack=other_template.fill(question.text),
        other_attack_category=other_template.attack_category,
        other_attack_name=other_template.name,
        other_question=template.fill(other_question.text),
        other_attack_and_question=other_template.fill(other_question.text),
    )


def plan_candidates(sources: Sources, config: BuildConfig, source: str = "questions") -> list[Candidate]:
    """Every (question, template) pair to try, in output order: split, category, question, template."""
    if len(sources.templates) < 2:
        raise DataError(f"{source}: need at least 2 templates (the other-attack test uses a second one)")
    assignment = assign_splits(sources, config, source)
    templates_of = deal_templates(sources, config)
    candidates = []
    for split in SPLITS:
        for questions in sources.by_category().values():
            mates = [q for q in questions if assignment[q] == split]
            for question in mates:
                for template in templates_of[question]:
                    candidates.append(_candidate(split, question, template, mates, sources, config))
    return candidates


def deal_templates(sources: Sources, config: BuildConfig) -> dict[Question, list[Template]]:
    """Give each question ``per_question`` distinct templates, spreading templates evenly.

    Within a category, the templates are shuffled (with the seed) into a cycle that is dealt out
    ``per_question`` at a time, so every template is used about equally often in every category.
    Each question's templates are returned in file order.
    """
    count = min(config.per_question, len(sources.templates))
    dealt: dict[Question, list[Template]] = {}
    for category, questions in sources.by_category().items():
        cycle = list(range(len(sources.templates)))
        rng(config.seed, "templates", category).shuffle(cycle)
        for position, question in enumerate(questions):
            start = position * count
            picked = {cycle[(start + j) % len(cycle)] for j in range(count)}
            dealt[question] = [sources.templates[i] for i in sorted(picked)]
    return dealt


def _candidate(split: str, question: Question, template: Template, mates: Sequence[Question],
               sources: Sources, config: BuildConfig) -> Candidate:
    knowledge = rng(config.seed, "knowledge", question.text, template.name).choice(list(sources.knowledge))
    return Candidate(
        split=split, question=question, template=template,
        safe_reply=safe_reply_for(question, sources.refusals, config.seed),
        generalization=generalization_for(question, template, mates, sources.templates, config.seed),
        knowledge=knowledge,
    )


# ---------------------------------------------------------------- generation, judging, writing


def build_benchmark(sources: Sources, model: Any, tokenizer: Any, judge: Any,
                    config: BuildConfig = BuildConfig(), *, progress: bool = True,
                    not_unsafe: Mapping[tuple[str, str], str] | None = None) -> BuildResult:
    """Plan the candidates, let the model answer them, keep those the judge calls unsafe and reading did not reject.

    Args:
        model, tokenizer: the model whose own unsafe replies become the unsafe generations.
        judge: a ``detoxedit.judges.Judge``; a candidate is kept only when its label is 1 (unsafe).
        not_unsafe: (question, template name) -> reason, for candidates whose reply a person read and found
            not unsafe (an echo, gibberish, a persona with nothing harmful): dropped whatever the judge says
            (`load_reviewed`).
    """
    from detoxedit.models import generate

    candidates = plan_candidates(sources, config)
    logger.info("Generating replies to %d adversarial inputs (%d new tokens max)",
                len(candidates), config.max_new_tokens)
    prompts = [c.adversarial_prompt for c in candidates]
    replies = generate(model, tokenizer, prompts, config.max_new_tokens, progress=progress)
    labels = judge.labels(replies, prompts)
    return collect(candidates, replies, labels, not_unsafe)


def collect(candidates: Sequence[Candidate], replies: Sequence[str], labels: Sequence[float],
            not_unsafe: Mapping[tuple[str, str], str] | None = None) -> BuildResult:
    """Keep the candidates judged unsafe and not rejected by reading, numbering each split's items from 0 in plan order."""
    not_unsafe = not_unsafe or {}
    splits: dict[str, list[SafeEditItem]] = {s: [] for s in SPLITS}
    dropped: dict[str, int] = {}
    rejected = 0
    for candidate, reply, label in zip(candidates, replies, labels, strict=True):
        read_safe = (candidate.question.text, candidate.template.name) in not_unsafe
        if label == 1.0 and not read_safe:
            items = splits[candidate.split]
            items.append(candidate.to_item(len(items), reply))
        else:
            rejected += label == 1.0 and read_safe
            category = candidate.question.category
            dropped[category] = dropped.get(category, 0) + 1
    result = BuildResult(splits, len(candidates), sum(dropped.values()), dropped, rejected_by_reading=rejected)
    logger.info("Kept %d of %d candidates; dropped %d whose reply the judge found safe (or empty) and %d that "
                "reading found not unsafe", result.candidates - result.dropped, result.candidates,
                result.dropped - rejected, rejected)
    return result


def load_reviewed(path: str | Path) -> dict[tuple[str, str], str]:
    """Read ``not_unsafe: [{question, template, reason}, ...]``: replies read and found not unsafe."""
    raw = read_yaml(path, "not_unsafe", list, allow_empty=True)  # an empty review is a review
    problems: list[str] = []
    reviewed = {}
    for index, entry in enumerate(raw):
        where = f"not_unsafe #{index}"
        question = _string(entry, "question", where, problems)
        template = _string(entry, "template", where, problems)
        reviewed[(question, template)] = _string(entry, "reason", where, problems)
    _raise_problems(path, problems)
    return reviewed


def split_paths(out: str | Path) -> dict[str, Path]:
    """``data/x.json`` -> ``data/x_train.json``, ``data/x_val.json``, ``data/x_test.json``."""
    out = Path(out)
    suffix = out.suffix or ".json"
    return {split: out.with_name(f"{out.stem}_{split}{suffix}") for split in SPLITS}


def write_splits(result: BuildResult, out: str | Path) -> dict[str, Path]:
    """Write each split as a release-format JSON list (see ``split_paths`` for the names)."""
    paths = split_paths(out)
    for split, path in paths.items():
        save_safeedit(result.splits[split], path)
        logger.info("Wrote %d %s items to %s", len(result.splits[split]), split, path)
    return paths
