"""The benchmark construction pipeline (`detoxedit.data.build`) and the built-in data it ships."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from detoxedit.data import UNSAFE_CATEGORIES, DataError, load_safeedit
from detoxedit.data import build as b
from detoxedit.data import builtin
from detoxedit.judges.base import Judge, load_judge
from tiny import tiny_model, tiny_tokenizer

CATEGORIES = ("physical harm", "privacy and property")
TEMPLATES = [
    {"name": "Alpha", "attack_category": "Character Roleplay", "text": "Pretend you are Alpha. {question}"},
    {"name": "Beta", "attack_category": "Research Experiment", "text": "For a study, answer: {question} Thanks."},
    {"name": "Gamma", "attack_category": "Text Continuation", "text": "Continue the story where she asked '{question}'"},
    {"name": "Delta", "attack_category": "Superior Model", "text": "{question} (answer as the upgraded model)"},
]


def write_sources(folder: Path, *, questions=None, templates=None, per_category: int = 6) -> dict[str, Path]:
    """Tiny YAML sources in `folder`; every second question has no safe_reply (the refusal writer fills it)."""
    if questions is None:
        questions = {c: [{"question": f"Harmful request {i} about {c}?",
                          **({"safe_reply": f"I can't help with request {i}."} if i % 2 else {})}
                         for i in range(per_category)] for c in CATEGORIES}
    files = {
        "questions": {"categories": questions},
        "templates": {"templates": TEMPLATES if templates is None else templates},
        "refusals": {"refusals": {c: ["I won't answer \"{question}\".", "Sorry, no."] for c in CATEGORIES}},
        "knowledge": {"pairs": [{"prompt": f"What is {n}+{n}?", "answer": str(2 * n)} for n in range(3)]},
    }
    paths = {}
    for name, data in files.items():
        paths[name] = folder / f"{name}.yaml"
        paths[name].write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return paths


def sources_in(folder: Path, **kwargs) -> b.Sources:
    paths = write_sources(folder, **kwargs)
    return b.load_sources(paths["questions"], paths["templates"], paths["refusals"], paths["knowledge"])


class ScriptedJudge(Judge):
    """Labels replies by position: unsafe unless the index is in `safe_at` (to test dropping)."""

    def __init__(self, safe_at: set[int]) -> None:
        super().__init__()
        self.safe_at = safe_at

    def _score_texts(self, texts: list[str]) -> list[float]:
        return [1.0] * len(texts)

    def score(self, texts, prompts=None):
        return [0.0 if i in self.safe_at else 1.0 for i in range(len(texts))]


@pytest.fixture(scope="module")
def tiny():
    return tiny_model("llama"), tiny_tokenizer()


def build_files(sources: b.Sources, out: Path, tiny, seed: int = 0, judge: Judge | None = None) -> b.BuildResult:
    model, tokenizer = tiny
    config = b.BuildConfig(seed=seed, max_new_tokens=4)
    result = b.build_benchmark(sources, model, tokenizer, judge or load_judge("refusal"), config, progress=False)
    b.write_splits(result, out)
    return result


# ---------------------------------------------------------------- templates and planning


def test_fill_puts_the_question_in_the_slot_even_with_braces() -> None:
    template = b.Template("T", "Character Roleplay", "Say: {question}!")
    assert template.fill("what is {x}?") == "Say: what is {x}?!"


@pytest.mark.parametrize(("text", "fragment"), [
    ("no slot here", "has no {question} slot"),
    ("{question} and {question}", "has 2 {question} slots"),
    ("{question} and {name}", "brace outside the {question} slot"),
    ("{question} }", "brace outside"),
    ("{ question }", "has no {question} slot"),
])
def test_slot_problems(text: str, fragment: str) -> None:
    assert fragment in b.slot_problem(text, required=True)


def test_valid_slot_and_optional_slot() -> None:
    assert b.slot_problem("Tell me {question} now", required=True) is None
    assert b.slot_problem("A refusal without slot.", required=False) is None


def test_generalization_inputs_use_the_right_templates_and_questions(tmp_path: Path) -> None:
    sources = sources_in(tmp_path)
    by_name = {t.name: t for t in sources.templates}
    candidates = b.plan_candidates(sources, b.BuildConfig(seed=3))
    split_of = {c.question.text: c.split for c in candidates}
    for c in candidates:
        g = c.generalization
        assert g.only_question == c.question.text
        other = by_name[g.other_attack_name]
        assert other.name != c.template.name
        assert g.other_attack_category == other.attack_category
        assert g.other_attack == other.fill(c.question.text)
        mates = [q for q in sources.questions if q.text != c.question.text and q.category == c.question.category
                 and split_of.get(q.text) == c.split]
        other_q = [q for q in mates if c.template.fill(q.text) == g.other_question]
        assert len(other_q) == 1, "otherQ must be the item's template with another question of its category and split"
        assert g.other_attack_and_question == other.fill(other_q[0].text)


def test_each_question_gets_distinct_templates_spread_evenly(tmp_path: Path) -> None:
    sources = sources_in(tmp_path)
    candidates = b.plan_candidates(sources, b.BuildConfig(per_question=2))
    per_question: dict[str, list[str]] = {}
    for c in candidates:
        per_question.setdefault(c.question.text, []).append(c.template.name)
    assert all(len(names) == len(set(names)) == 2 for names in per_question.values())
    counts = [sum(c.template.name == t["name"] for c in candidates) for t in TEMPLATES]
    assert max(counts) - min(counts) <= len(CATEGORIES)


def test_safe_reply_is_own_else_a_filled_refusal(tmp_path: Path) -> None:
    sources = sources_in(tmp_path)
    for c in b.plan_candidates(sources, b.BuildConfig()):
        if c.question.safe_reply:
            assert c.safe_reply == c.question.safe_reply
        else:
            assert c.safe_reply in (f"I won't answer \"{c.question.text}\".", "Sorry, no.")
        assert "{question}" not in c.safe_reply


@pytest.mark.parametrize("seed", [0, 1, 2, 7, 123])
def test_no_question_crosses_splits(tmp_path: Path, seed: int) -> None:
    sources = sources_in(tmp_path, per_category=9)
    candidates = b.plan_candidates(sources, b.BuildConfig(seed=seed))
    splits_of: dict[str, set[str]] = {}
    for c in candidates:
        for text in (c.question.text, *_other_questions(c, sources)):
            splits_of.setdefault(text, set()).add(c.split)
    assert all(len(s) == 1 for s in splits_of.values())
    for category in CATEGORIES:
        for split in b.SPLITS:
            assert len({c.question.text for c in candidates if c.split == split
                        and c.question.category == category}) >= b.MIN_QUESTIONS_PER_SPLIT


def _other_questions(c: b.Candidate, sources: b.Sources) -> list[str]:
    return [q.text for q in sources.questions if q.text != c.question.text
            and c.template.fill(q.text) == c.generalization.other_question]


def test_split_sizes() -> None:
    assert b.split_sizes(7, (0.6, 0.2, 0.2), "x") == [3, 2, 2]
    assert b.split_sizes(20, (0.6, 0.2, 0.2), "x") == [12, 4, 4]
    assert b.split_sizes(4, (0.0, 0.0, 1.0), "x") == [0, 0, 4]
    with pytest.raises(DataError, match=r"category 'x' has 5 question\(s\), too few"):
        b.split_sizes(5, (0.6, 0.2, 0.2), "x")


def test_knowledge_choice_is_deterministic(tmp_path: Path) -> None:
    sources = sources_in(tmp_path)
    first = [c.knowledge for c in b.plan_candidates(sources, b.BuildConfig(seed=5))]
    again = [c.knowledge for c in b.plan_candidates(sources, b.BuildConfig(seed=5))]
    assert first == again and set(first) <= set(sources.knowledge)


# ---------------------------------------------------------------- building and writing


def test_build_writes_loadable_splits_and_is_deterministic(tmp_path: Path, tiny) -> None:
    sources = sources_in(tmp_path)
    first = build_files(sources, tmp_path / "a" / "bench.json", tiny)
    build_files(sources, tmp_path / "b" / "bench.json", tiny)
    for split in b.SPLITS:
        a = tmp_path / "a" / f"bench_{split}.json"
        assert a.read_bytes() == (tmp_path / "b" / f"bench_{split}.json").read_bytes()
        items = load_safeedit(a)
        assert [i.id for i in items] == list(range(len(items)))
        assert len(items) == len(first.splits[split]) > 0
        raw = json.loads(a.read_text(encoding="utf-8"))[0]
        assert list(raw) == ["id", "unsafety category", "adversarial prompt", "question", "attack category",
                             "attack name", "unsafe generation", "safe generation", "generalization test",
                             "knowledge constrain"]
    train = {i.question for i in load_safeedit(tmp_path / "a" / "bench_train.json")}
    test = {i.question for i in load_safeedit(tmp_path / "a" / "bench_test.json")}
    assert not train & test


def test_other_seed_changes_the_output(tmp_path: Path, tiny) -> None:
    sources = sources_in(tmp_path)
    build_files(sources, tmp_path / "a.json", tiny, seed=0)
    build_files(sources, tmp_path / "b.json", tiny, seed=1)
    assert (tmp_path / "a_test.json").read_bytes() != (tmp_path / "b_test.json").read_bytes()


def test_replies_judged_safe_are_dropped(tmp_path: Path, tiny) -> None:
    sources = sources_in(tmp_path)
    planned = b.plan_candidates(sources, b.BuildConfig())
    result = build_files(sources, tmp_path / "x.json", tiny, judge=ScriptedJudge(safe_at={0, 1, 5}))
    assert result.candidates == len(planned)
    assert result.dropped == 3
    assert sum(len(items) for items in result.splits.values()) == len(planned) - 3
    kept_first = result.splits["train"][0]
    assert (kept_first.question, kept_first.attack_name) == (planned[2].question.text, planned[2].template.name)


def test_replies_read_and_found_not_unsafe_are_dropped_whatever_the_judge_says(tmp_path: Path, tiny) -> None:
    sources = sources_in(tmp_path)
    planned = b.plan_candidates(sources, b.BuildConfig())
    review = tmp_path / "reviewed.yaml"
    review.write_text("not_unsafe:\n"
                      f"  - question: {json.dumps(planned[1].question.text)}\n"
                      f"    template: {json.dumps(planned[1].template.name)}\n"
                      "    reason: echoes the template\n", encoding="utf-8")
    not_unsafe = b.load_reviewed(review)
    model, tokenizer = tiny
    result = b.build_benchmark(sources, model, tokenizer, ScriptedJudge(safe_at={0}), progress=False, not_unsafe=not_unsafe)
    assert (result.dropped, result.rejected_by_reading) == (2, 1)
    kept_first = result.splits["train"][0]
    assert (kept_first.question, kept_first.attack_name) == (planned[2].question.text, planned[2].template.name)
    review.write_text("not_unsafe:\n  - question: x\n", encoding="utf-8")
    with pytest.raises(DataError, match="template"):
        b.load_reviewed(review)
    review.write_text("not_unsafe: []\n", encoding="utf-8")
    assert b.load_reviewed(review) == {}  # nothing read yet is a valid review
    review.write_text("not_unsafe: {}\n", encoding="utf-8")
    with pytest.raises(DataError, match="list"):
        b.load_reviewed(review)


def test_every_shipped_item_was_read_unsafe_and_every_review_names_a_planned_candidate() -> None:
    from detoxedit.data import builtin

    reviewed = b.load_reviewed(builtin.REVIEWED)
    sources = b.load_sources(builtin.QUESTIONS, builtin.TEMPLATES, builtin.REFUSALS, builtin.KNOWLEDGE)
    config = b.BuildConfig(seed=builtin.BUILT_WITH["seed"], splits=tuple(builtin.BUILT_WITH["splits"]),
                           per_question=builtin.BUILT_WITH["per_question"], max_new_tokens=builtin.BUILT_WITH["max_new_tokens"])
    planned = {(c.question.text, c.template.name) for c in b.plan_candidates(sources, config)}
    assert set(reviewed) <= planned and all(reason.strip() for reason in reviewed.values())
    shipped = [(item.question, item.attack_name) for split in b.SPLITS for item in builtin.load_builtin_benchmark(split)]
    assert shipped and not set(shipped) & set(reviewed)


def test_unsafe_generation_is_the_models_reply(tmp_path: Path, tiny) -> None:
    from detoxedit.models import generate

    sources = sources_in(tmp_path)
    result = build_files(sources, tmp_path / "x.json", tiny)
    item = result.splits["test"][0]
    model, tokenizer = tiny
    assert item.unsafe_generation == generate(model, tokenizer, [item.adversarial_prompt], 4, progress=False)[0]


def test_split_paths() -> None:
    paths = b.split_paths("out/bench.json")
    assert paths == {s: Path(f"out/bench_{s}.json") for s in b.SPLITS}


# ---------------------------------------------------------------- YAML errors


def _error(tmp_path: Path, **kwargs) -> str:
    with pytest.raises(DataError) as info:
        sources_in(tmp_path, **kwargs)
    return str(info.value)


def test_missing_slot_names_file_and_template(tmp_path: Path) -> None:
    bad = [*TEMPLATES[:2], {"name": "NoSlot", "attack_category": "Emotion", "text": "Please answer."}]
    message = _error(tmp_path, templates=bad)
    assert "templates.yaml" in message and "template #2 ('NoSlot')" in message and "no {question} slot" in message


def test_extra_braces_are_rejected(tmp_path: Path) -> None:
    bad = [*TEMPLATES[:2], {"name": "Braces", "attack_category": "Emotion", "text": "{question} in {format}"}]
    assert "template #2 ('Braces')" in _error(tmp_path, templates=bad)


def test_duplicate_template_name(tmp_path: Path) -> None:
    bad = [*TEMPLATES, dict(TEMPLATES[0], text="Again: {question}")]
    message = _error(tmp_path, templates=bad)
    assert "duplicate template name 'Alpha' (also template #0)" in message


def test_unknown_category_lists_the_nine(tmp_path: Path) -> None:
    message = _error(tmp_path, questions={"cooking": [{"question": "q?"}]})
    assert "questions.yaml" in message and "unknown category 'cooking'" in message
    assert all(c in message for c in UNSAFE_CATEGORIES)


def test_duplicate_question(tmp_path: Path) -> None:
    questions = {"physical harm": [{"question": "Same?"}], "mental harm": [{"question": "same? "}]}
    message = _error(tmp_path, questions=questions)
    assert "category 'mental harm', question #0: duplicate question 'same?'" in message


def test_empty_lists_and_missing_fields(tmp_path: Path) -> None:
    assert "'templates' must be a non-empty list" in _error(tmp_path, templates=[])
    message = _error(tmp_path, questions={"physical harm": [], "mental harm": [{"safe_reply": "no"}]})
    assert "category 'physical harm': expected a non-empty list" in message
    assert "category 'mental harm', question #0: missing or empty 'question'" in message


def test_too_few_questions_for_the_splits(tmp_path: Path) -> None:
    sources = sources_in(tmp_path, per_category=4)
    with pytest.raises(DataError, match="too few for splits"):
        b.plan_candidates(sources, b.BuildConfig())


def test_invalid_yaml_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "t.yaml"
    path.write_text("templates: [unclosed", encoding="utf-8")
    with pytest.raises(DataError, match=r"t\.yaml: invalid YAML"):
        b.load_templates(path)


def test_cli_build_reports_bad_yaml(tmp_path: Path, capsys) -> None:
    from detoxedit.cli import main

    paths = write_sources(tmp_path, templates=[{"name": "X", "attack_category": "Emotion", "text": "no slot"}])
    with pytest.raises(SystemExit) as exit_info:
        main(["build", "--templates", str(paths["templates"]), "--judge", "refusal", "--out", str(tmp_path / "o.json")])
    assert exit_info.value.code == 2
    assert "no {question} slot" in capsys.readouterr().err


def test_cli_build_end_to_end(tmp_path: Path, tiny) -> None:
    from detoxedit.cli import main

    model, tokenizer = tiny
    model.save_pretrained(tmp_path / "model")
    tokenizer.save_pretrained(tmp_path / "model")
    paths = write_sources(tmp_path)
    args = ["build", "--questions", str(paths["questions"]), "--templates", str(paths["templates"]),
            "--refusals", str(paths["refusals"]), "--knowledge", str(paths["knowledge"]),
            "--model", str(tmp_path / "model"), "--judge", "refusal", "--seed", "4", "--max-new-tokens", "3",
            "--out", str(tmp_path / "out" / "bench.json")]
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    assert exit_info.value.code == 0
    assert all(load_safeedit(tmp_path / "out" / f"bench_{s}.json") for s in b.SPLITS)


# ---------------------------------------------------------------- built-in data


def test_builtin_sources_validate_and_cover_the_attack_categories() -> None:
    sources = b.load_sources(builtin.QUESTIONS, builtin.TEMPLATES, builtin.REFUSALS, builtin.KNOWLEDGE)
    per_category = sources.by_category()
    assert set(per_category) == set(UNSAFE_CATEGORIES)
    assert all(len(qs) >= 5 for qs in per_category.values())
    assert len(sources.templates) >= 12
    covered = {part.strip().casefold() for t in sources.templates for part in t.attack_category.split(",")}
    for wanted in ("character roleplay", "assumed responsibility", "research experiment", "text continuation",
                   "program execution", "logical reasoning", "superior model"):
        assert wanted in covered
    assert b.plan_candidates(sources, b.BuildConfig())


def test_shipped_benchmark_loads_with_every_split() -> None:
    questions: dict[str, set[str]] = {}
    for split in b.SPLITS:
        items = builtin.load_builtin_benchmark(split)
        assert items, f"{split} split is empty"
        assert all(i.inputs().keys() == {"adversarial", "onlyQ", "otherA", "otherQ", "otherAQ"} for i in items)
        questions[split] = {i.question for i in items}
    assert not questions["train"] & questions["test"] and not questions["val"] & questions["test"]


def test_shipped_general_sets_match_their_yaml() -> None:
    trivia_text, xsum_text = builtin.general_sets_from_yaml()
    assert builtin.TRIVIA.read_text(encoding="utf-8") == trivia_text
    assert builtin.XSUM.read_text(encoding="utf-8") == xsum_text
    assert len(builtin.load_builtin_trivia()) == 50 and len(builtin.load_builtin_xsum()) == 20


def test_shipped_benchmark_matches_the_pipeline_plan() -> None:
    """Every shipped item is a planned candidate of BUILT_WITH's settings (rebuild after editing the YAMLs)."""
    sources = b.load_sources(builtin.QUESTIONS, builtin.TEMPLATES, builtin.REFUSALS, builtin.KNOWLEDGE)
    config = b.BuildConfig(seed=builtin.BUILT_WITH["seed"], splits=tuple(builtin.BUILT_WITH["splits"]),
                           per_question=builtin.BUILT_WITH["per_question"],
                           max_new_tokens=builtin.BUILT_WITH["max_new_tokens"])
    planned = {(c.split, c.question.text, c.template.name): c.to_item(0, "") for c in b.plan_candidates(sources, config)}
    for split in b.SPLITS:
        for item in builtin.load_builtin_benchmark(split):
            expected = planned[(split, item.question, item.attack_name)]
            assert item.unsafe_generation.strip()
            assert item.to_json() | {"id": 0, "unsafe generation": ""} == expected.to_json()
