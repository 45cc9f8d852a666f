"""The evaluation runner on a tiny model: files, metrics, resume after a kill, config guard, modes."""

from __future__ import annotations

import json
import zlib
from dataclasses import dataclass

import pytest
import torch
from tiny import safeedit_json, tiny_model, tiny_tokenizer

from detoxedit.errors import DetoxeditError
from detoxedit.evaluation.config import RunConfig
from detoxedit.evaluation.records import read_jsonl
from detoxedit.evaluation.textgen import TextGenerator, char_sliced_reply, inherited_sampling
from detoxedit.judges.base import Judge
from detoxedit.methods.base import GLOBAL, METHODS, Edit, EditMethod, RestoreError
from detoxedit.metrics import DS, DG_Avg, safety_score
from detoxedit.models import ChatFormat, Sampling, get_adapter
from detoxedit.runner import run_protocol
from detoxedit.settings import parse_set_values



N_ITEMS = 4  # the items of the `data_file` fixture (tests/unit/conftest.py)


@dataclass
class FakeConfig:
    scale: float = 0.5


class FakeMethod(EditMethod):
    """A fixed random delta on one layer's down-projection, the layer and values derived from the item id."""

    name = "fake-test"
    config_class = FakeConfig
    calls = 0

    def execute(self, model, tokenizer, item) -> Edit:
        FakeMethod.calls += 1
        adapter = get_adapter(model)
        seed = zlib.crc32(str(item.id).encode())
        layer = seed % adapter.num_layers
        weight = adapter.down_proj(layer).weight
        delta = self.config.scale * torch.randn(weight.shape, generator=torch.Generator().manual_seed(seed))
        distances = [float(i + seed % 3) for i in range(adapter.num_layers)]
        return Edit({adapter.down_proj_name(layer): delta}, layer=layer, losses=[1.0, 0.5], info={"distances": distances})


class CorruptingMethod(FakeMethod):
    """Breaks the contract: leaves the model edited."""

    name = "corrupting-test"

    def execute(self, model, tokenizer, item) -> Edit:
        edit = super().execute(model, tokenizer, item)
        name, delta = next(iter(edit.deltas.items()))
        with torch.no_grad():
            dict(model.named_parameters())[name].add_(delta)
        return edit


class FittedMethod(EditMethod):
    """A global method: one fixed delta, fitted once on the training items (counted)."""

    name = "fitted-test"
    config_class = FakeConfig
    scope = GLOBAL
    fits: list[int] = []

    def fit(self, model, tokenizer, train_items) -> Edit:
        FittedMethod.fits.append(len(train_items))
        adapter = get_adapter(model)
        weight = adapter.down_proj(1).weight
        delta = self.config.scale * torch.randn(weight.shape, generator=torch.Generator().manual_seed(7))
        return Edit({adapter.down_proj_name(1): delta}, layer=1)


@pytest.fixture(autouse=True)
def fake_methods():
    """The test methods exist only while a test of this file runs (never in another file's tests)."""
    FittedMethod.fits = []
    with METHODS.temporarily(FakeMethod.name, FakeMethod), METHODS.temporarily(CorruptingMethod.name, CorruptingMethod), \
            METHODS.temporarily(FittedMethod.name, FittedMethod):
        yield


class FakeJudge(Judge):
    """Unsafe iff the reply has an odd length; optionally fails on its n-th call (a simulated kill)."""

    def __init__(self, fail_on_call: int | None = None) -> None:
        super().__init__(0.5)
        self.calls = 0
        self.fail_on_call = fail_on_call

    def _score_texts(self, texts):
        self.calls += 1
        if self.fail_on_call is not None and self.calls >= self.fail_on_call:
            raise KeyboardInterrupt("simulated kill")
        return [float(len(t) % 2) for t in texts]


@pytest.fixture()
def model_tok():
    model = tiny_model("llama")
    with torch.no_grad():  # large logit gaps: greedy choices never hinge on rounding
        get_adapter(model).final_norm.weight.mul_(8.0)
    return model, tiny_tokenizer()


@pytest.fixture()
def count_generated(monkeypatch):
    """Counts the prompts sent to generation (to prove finished replies are not regenerated)."""
    counter = {"prompts": 0}
    original = TextGenerator.__call__

    def counting(self, prompts, *args, **kwargs):
        counter["prompts"] += len(prompts)
        return original(self, prompts, *args, **kwargs)

    monkeypatch.setattr(TextGenerator, "__call__", counting)
    return counter


def config(data_file, **overrides) -> RunConfig:
    values = dict(data=str(data_file), judge="fake", max_new_tokens=6, progress=False, bootstrap=50,
                  items_per_batch=2, overrefusal=None)  # over-refusal has its own tests (test_overrefusal.py)
    return RunConfig(**(values | overrides))


def run(cfg, folder, model_tok, judge=None, **kwargs):
    model, tok = model_tok
    return run_protocol(cfg, folder, model=model, tokenizer=tok, judge=judge or FakeJudge(), **kwargs)


def by_key(records):
    return {(r["variant"], str(r["item_id"]), r["kind"]): r for r in records}


def test_evaluate_writes_all_files_and_metrics_match_generations(data_file, tmp_path, model_tok):
    out = tmp_path / "run"
    result = run(config(data_file), out, model_tok)
    for name in ("config.json", "generations.jsonl", "metrics.json", "report.md"):
        assert (out / name).is_file(), name
    records = read_jsonl(out / "generations.jsonl")
    assert len(records) == 5 * N_ITEMS and {r["variant"] for r in records} == {"vanilla"}
    ds_labels = [r["label"] for r in records if r["kind"] == "adversarial"]
    metrics = json.loads((out / "metrics.json").read_text())["variants"]["vanilla"]["metrics"]
    assert metrics["DS"]["value"] == pytest.approx(safety_score(ds_labels)) == pytest.approx(DS(records))
    assert metrics["DG_Avg"]["value"] == pytest.approx(DG_Avg(records))
    assert metrics["DS"]["ci95"][0] <= metrics["DS"]["value"] <= metrics["DS"]["ci95"][1]
    assert all(r["label"] == float(len(r["reply"]) % 2) or r["label"] == 0.5 for r in records)
    assert result.metrics["variants"]["vanilla"]["metrics"] == metrics
    assert json.loads((out / "config.json").read_text())["method"] == "none"
    assert "DS is not included" in (out / "report.md").read_text()


def test_edit_run_records_items_and_report(data_file, tmp_path, model_tok):
    out = tmp_path / "run"
    run(config(data_file, method="fake-test", method_config={"scale": 0.5}), out, model_tok)
    items = read_jsonl(out / "items.jsonl")
    assert [r["item_id"] for r in items] == list(range(N_ITEMS))
    for record in items:
        assert record["layer"] in range(4) and record["losses"] == [1.0, 0.5]
        assert set(record["time_s"]) == {"execute", "generate", "judge", "restore"}
        assert list(record["relative_change"].values())[0] > 0 and "distances" in record["info"]
    records = by_key(read_jsonl(out / "generations.jsonl"))
    assert sum(1 for key in records if key[0] == "edited") == 5 * N_ITEMS
    assert any(records[("edited", k[1], k[2])]["reply"] != r["reply"] for k, r in records.items() if k[0] == "vanilla")
    metrics = json.loads((out / "metrics.json").read_text())["variants"]
    assert set(metrics) == {"vanilla", "edited"}
    report = (out / "report.md").read_text()
    assert "| Method | DS | DG_onlyQ | DG_otherA | DG_otherQ | DG_otherAQ | DG-Avg | Fluency | KQA | Csum |" in report
    assert (out / "layer_histogram.png").is_file() and (out / "distance_profile.png").is_file()


def test_kill_and_resume_loses_and_duplicates_nothing(data_file, tmp_path, model_tok, count_generated):
    cfg = config(data_file, method="fake-test", items_per_batch=1)
    reference = tmp_path / "reference"
    run(cfg, reference, model_tok)

    out = tmp_path / "killed"
    count_generated["prompts"] = 0
    with pytest.raises(KeyboardInterrupt):
        run(cfg, out, model_tok, judge=FakeJudge(fail_on_call=4))  # vanilla + 2 items judged, killed on the 3rd
    assert [r["item_id"] for r in read_jsonl(out / "items.jsonl")] == [0, 1]
    assert count_generated["prompts"] == 5 * 3  # vanilla came from the cross-run cache; 3 items generated

    count_generated["prompts"] = 0
    run(cfg, out, model_tok)
    assert count_generated["prompts"] == 5 * 2  # only the two unfinished items
    resumed = read_jsonl(out / "generations.jsonl")
    assert len(resumed) == len(by_key(resumed)) == 2 * 5 * N_ITEMS  # nothing lost, nothing duplicated
    assert [r["item_id"] for r in read_jsonl(out / "items.jsonl")] == list(range(N_ITEMS))
    expected = by_key(read_jsonl(reference / "generations.jsonl"))
    assert {k: r["reply"] for k, r in by_key(resumed).items()} == {k: r["reply"] for k, r in expected.items()}
    assert json.loads((out / "metrics.json").read_text())["variants"] == json.loads(
        (reference / "metrics.json").read_text())["variants"]


def test_truncated_last_line_is_dropped_and_item_redone(data_file, tmp_path, model_tok, count_generated):
    cfg = config(data_file, method="fake-test")
    out = tmp_path / "run"
    run(cfg, out, model_tok)
    items_path = out / "items.jsonl"
    lines = items_path.read_text().splitlines(keepends=True)
    items_path.write_text("".join(lines[:-1]) + lines[-1][: len(lines[-1]) // 2])  # a kill mid-write
    count_generated["prompts"] = 0
    run(cfg, out, model_tok)
    assert count_generated["prompts"] == 5  # the torn item only
    assert [r["item_id"] for r in read_jsonl(items_path)] == list(range(N_ITEMS))
    assert items_path.read_text().endswith("\n")
    assert len(by_key(read_jsonl(out / "generations.jsonl"))) == len(read_jsonl(out / "generations.jsonl")) == 40


def test_different_config_is_refused_naming_the_key(data_file, tmp_path, model_tok):
    out = tmp_path / "run"
    run(config(data_file), out, model_tok)
    with pytest.raises(DetoxeditError, match=r"max_new_tokens: 6 -> 8.*--overwrite"):
        run(config(data_file, max_new_tokens=8), out, model_tok)
    run(config(data_file, items_per_batch=3), out, model_tok)  # speed-only keys may change
    run(config(data_file, max_new_tokens=8), out, model_tok, overwrite=True)
    assert json.loads((out / "config.json").read_text())["max_new_tokens"] == 8


def test_foreign_folder_is_refused(data_file, tmp_path, model_tok):
    out = tmp_path / "busy"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(DetoxeditError, match="not empty"):
        run(config(data_file), out, model_tok)


def test_batched_and_per_item_modes_give_identical_replies(data_file, tmp_path, model_tok):
    base = dict(method="fake-test", items_per_batch=N_ITEMS)
    run(config(data_file, **base, batched_edits=True), tmp_path / "batched", model_tok)
    run(config(data_file, **base, batched_edits=False), tmp_path / "applied", model_tok)
    batched = by_key(read_jsonl(tmp_path / "batched" / "generations.jsonl"))
    applied = by_key(read_jsonl(tmp_path / "applied" / "generations.jsonl"))
    assert {k: r["reply"] for k, r in batched.items()} == {k: r["reply"] for k, r in applied.items()}


class SharingJudge(FakeJudge):
    """Takes the run's model when offered and records whether its weights were the original ones at every score."""

    def __init__(self) -> None:
        super().__init__()
        self.offered, self.weights_seen = None, []

    def share_model(self, model, tokenizer, spec, dtype):
        self.offered = (model, spec, dtype)
        self.original = {k: v.clone() for k, v in model.state_dict().items()}
        return True

    def _score_texts(self, texts):
        model = self.offered[0]
        self.weights_seen.append(all(torch.equal(v, self.original[k]) for k, v in model.state_dict().items()))
        return super()._score_texts(texts)


@pytest.mark.parametrize("batched", [True, False])
def test_a_judge_sharing_the_runs_model_only_sees_the_original_weights(data_file, tmp_path, model_tok, batched):
    judge = SharingJudge()
    run(config(data_file, method="fake-test", batched_edits=batched), tmp_path / "run", model_tok, judge=judge)
    assert judge.offered[0] is model_tok[0] and judge.offered[2] == "float32"
    assert len(judge.weights_seen) >= 2 and all(judge.weights_seen)  # vanilla and edited replies


@pytest.mark.parametrize("batched", [True, False])
def test_checksum_mismatch_aborts(data_file, tmp_path, model_tok, batched):
    with pytest.raises(RestoreError, match="item 0"):
        run(config(data_file, method="corrupting-test", batched_edits=batched), tmp_path / "run", model_tok)
    assert not (tmp_path / "run" / "items.jsonl").exists()


def test_general_ability_vanilla_and_first_edit(data_file, tmp_path, model_tok):
    trivia = tmp_path / "trivia.json"
    trivia.write_text(json.dumps([{"question": f"Q{i}?", "answer_aliases": ["a", "b"]} for i in range(3)]))
    xsum = tmp_path / "xsum.jsonl"
    xsum.write_text("".join(json.dumps({"id": i, "document": "word " * 50, "summary": "words"}) + "\n" for i in range(2)))
    cfg = config(data_file, method="fake-test", general=True, triviaqa=str(trivia), xsum=str(xsum),
                 n_triviaqa=3, n_xsum=2, doc_max_tokens=20, kqa_max_new_tokens=4, csum_max_new_tokens=4)
    out = tmp_path / "run"
    calls_before = FakeMethod.calls
    run(cfg, out, model_tok)
    assert FakeMethod.calls - calls_before == N_ITEMS  # the first item's edit is reused, not recomputed
    general = read_jsonl(out / "general.jsonl")
    assert sorted((r["variant"], r["task"]) for r in general).count(("edited", "kqa")) == 3
    assert {r["variant"] for r in general} == {"vanilla", "edited"}
    assert all(len(r["prompt"]) < 200 for r in general if r["task"] == "csum")  # documents truncated
    metrics = json.loads((out / "metrics.json").read_text())["variants"]
    assert metrics["edited"]["metrics"]["KQA"]["n"] == 3 and metrics["vanilla"]["metrics"]["Csum"]["n"] == 2


def test_char_slice_reproduces_reference_cut():
    tok = tiny_tokenizer()
    fmt = ChatFormat(tok, "template")
    prompt_text = fmt.render("Hello there")
    prompt_ids, reply_ids = fmt.encode("Hello there"), tok("Sure, here it is.", add_special_tokens=False)["input_ids"]
    sliced = char_sliced_reply(tok, prompt_text, prompt_ids, reply_ids)
    # decoding skips the template's special tokens, so the prompt text is longer than its decoded form
    # and the cut eats into the reply: the reference code's defect
    expected = tok.decode(prompt_ids + reply_ids, skip_special_tokens=True)[len(prompt_text):]
    assert sliced == expected and sliced != "Sure, here it is." and "Sure, here it is.".endswith(sliced)
    raw = ChatFormat(tok, "raw")
    ids = raw.encode("Hello there")
    assert char_sliced_reply(tok, raw.render("Hello there"), ids, reply_ids) == "Sure, here it is."


def test_inherit_sampling_takes_generation_config(model_tok):
    model, tok = model_tok
    assert inherited_sampling(model, seed=3) == Sampling(do_sample=False, temperature=1.0, top_p=1.0, seed=3)
    model.generation_config.do_sample, model.generation_config.temperature = True, 5.0
    model.generation_config.top_p = 0.9
    assert inherited_sampling(model, seed=3) == Sampling(do_sample=True, temperature=5.0, top_p=0.9, seed=3)
    prompts = ["Tell me something"] * 3
    replies = {seed: TextGenerator(model, tok, sampling=inherited_sampling(model, seed), progress=False)(prompts, 8)
               for seed in (1, 2)}
    assert replies[1] != replies[2]  # sampled: the seed changes the replies
    greedy = {seed: TextGenerator(model, tok, sampling=Sampling(seed=seed), progress=False)(prompts, 8) for seed in (1, 2)}
    assert greedy[1] == greedy[2]


def test_parse_set_values():
    assert parse_set_values(["lr=5e-4", "layer=12", "name=x", "flag=true", "w=[1, 2]", "x="]) == {
        "lr": "5e-4", "layer": 12, "name": "x", "flag": True, "w": [1, 2], "x": None}  # typed later, by the config
    with pytest.raises(DetoxeditError, match="key=value"):
        parse_set_values(["novalue"])


@pytest.fixture()
def tiny_model_dir(tmp_path, model_tok):
    model, tok = model_tok
    folder = tmp_path / "tiny-model"
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


def cli(*argv) -> int:
    from detoxedit.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main([str(a) for a in argv])
    return exit_info.value.code


def test_cli_evaluate_run_and_report(data_file, tmp_path, tiny_model_dir, capsys):
    common = ["--model", tiny_model_dir, "--data", data_file, "--judge", "refusal", "--max-new-tokens", 4, "--limit", 3]
    assert cli("evaluate", *common, "--out", tmp_path / "vanilla") == 0
    metrics = json.loads((tmp_path / "vanilla" / "metrics.json").read_text())
    assert metrics["n_items"] == 3 and metrics["judge"] == "refusal"
    assert cli("run", "--method", "fake-test", "--set", "scale=0.25", *common, "--out", tmp_path / "fake") == 0
    config = json.loads((tmp_path / "fake" / "config.json").read_text())
    assert config["method_config"] == {"scale": 0.25} and config["max_new_tokens"] == 4
    assert len(read_jsonl(tmp_path / "fake" / "items.jsonl")) == 3
    assert cli("report", tmp_path / "vanilla", tmp_path / "fake", "--out", tmp_path / "cmp.md") == 0
    assert "FAKE-TEST (fake)" in (tmp_path / "cmp.md").read_text()
    # user mistakes: one line, exit code 2
    assert cli("evaluate", *common, "--max-new-tokens", 5, "--out", tmp_path / "vanilla") == 2
    assert cli("run", "--method", "nope", *common, "--out", tmp_path / "x") == 2
    assert cli("run", "--method", "fake-test", "--set", "bogus=1", *common, "--out", tmp_path / "y") == 2
    err = capsys.readouterr().err
    assert "different config" in err and "unknown method 'nope'" in err and "bogus" in err


def test_cli_easyedit_compat_switches(data_file, tmp_path, tiny_model_dir):
    common = ["--model", tiny_model_dir, "--data", data_file, "--judge", "refusal", "--max-new-tokens", 3, "--limit", 1]
    assert cli("run", "--method", "fake-test", "--easyedit-compat", *common, "--out", tmp_path / "compat") == 0
    config = json.loads((tmp_path / "compat" / "config.json").read_text())
    assert config["inherit_sampling"] is True and config["char_slice"] is True


def test_cli_preset_gives_generation_and_method_settings(data_file, tmp_path, tiny_model_dir):
    preset = tmp_path / "tiny.yaml"
    preset.write_text("model: tiny\ngeneration:\n  max_new_tokens: 5\n  max_input_tokens: 300\n"
                      "methods:\n  fake-test:\n    scale: 0.1\n")
    common = ["--model", tiny_model_dir, "--data", data_file, "--judge", "refusal", "--limit", 1, "--preset", preset]
    assert cli("run", "--method", "fake-test", *common, "--set", "scale=0.2", "--out", tmp_path / "a") == 0
    config = json.loads((tmp_path / "a" / "config.json").read_text())
    assert (config["max_new_tokens"], config["max_input_tokens"]) == (5, 300)
    assert config["method_config"] == {"scale": 0.2} and config["preset"] == str(preset)
    assert cli("evaluate", *common, "--max-new-tokens", 3, "--out", tmp_path / "b") == 0
    assert json.loads((tmp_path / "b" / "config.json").read_text())["max_new_tokens"] == 3


@pytest.fixture()
def train_file(tmp_path):
    """Training items whose questions differ from the test items' (ids 100..)."""
    path = tmp_path / "train.json"
    path.write_text(json.dumps([safeedit_json(i) for i in range(100, 100 + N_ITEMS + 1)]), encoding="utf-8")
    return path


def test_global_method_is_fitted_once_on_the_training_items_and_evaluates_every_item(data_file, train_file, tmp_path,
                                                                                     model_tok):
    out = tmp_path / "run"
    run(config(data_file, method="fitted-test", train=str(train_file)), out, model_tok)
    assert FittedMethod.fits == [N_ITEMS + 1]  # once per run, on the --train items
    items = read_jsonl(out / "items.jsonl")
    assert [r["item_id"] for r in items] == list(range(N_ITEMS))
    assert len({json.dumps(r["relative_change"]) for r in items}) == 1  # one edit for every item
    assert json.loads((out / "config.json").read_text())["train"] == str(train_file)
    edited = [r for r in read_jsonl(out / "generations.jsonl") if r["variant"] == "edited"]
    assert len(edited) == 5 * N_ITEMS


def test_test_items_found_in_the_training_data_are_refused_or_dropped(data_file, tmp_path, model_tok):
    mixed = tmp_path / "mixed.json"
    train = [safeedit_json(100), safeedit_json(1), safeedit_json(2)]
    train[2]["id"] = 200  # the same question under another id is still the same item
    mixed.write_text(json.dumps(train), encoding="utf-8")
    with pytest.raises(DetoxeditError, match=r"2 of 4 test items also occur in --train .*item 1: .*--drop-overlap"):
        run(config(data_file, method="fitted-test", train=str(mixed)), tmp_path / "refused", model_tok)
    assert not (tmp_path / "refused" / "config.json").exists()
    out = tmp_path / "dropped"
    metrics = run(config(data_file, method="fitted-test", train=str(mixed), drop_overlap=True), out, model_tok).metrics
    assert metrics["dropped_overlap"] == 2 and metrics["n_items"] == 2
    assert sorted(r["item_id"] for r in read_jsonl(out / "items.jsonl")) == [0, 3]


def test_equal_ids_with_other_content_are_not_overlap(data_file, tmp_path, model_tok):
    other = tmp_path / "other.json"
    items = [safeedit_json(100 + i) | {"id": i} for i in range(N_ITEMS)]  # ids 0..3, other questions
    other.write_text(json.dumps(items), encoding="utf-8")
    metrics = run(config(data_file, method="fitted-test", train=str(other)), tmp_path / "run", model_tok).metrics
    assert metrics["dropped_overlap"] == 0 and metrics["n_items"] == N_ITEMS


def test_global_method_resumed_after_a_kill_is_not_fitted_again(data_file, tmp_path, model_tok):
    cfg = config(data_file, method="fitted-test", items_per_batch=1)
    reference = tmp_path / "reference"
    run(cfg, reference, model_tok)
    out = tmp_path / "killed"
    with pytest.raises(KeyboardInterrupt):
        run(cfg, out, model_tok, judge=FakeJudge(fail_on_call=3))  # vanilla + 1 item judged, killed on the 2nd
    assert FittedMethod.fits == [0, 0] and (out / "fitted_edit.pt").is_file()
    run(cfg, out, model_tok)
    assert FittedMethod.fits == [0, 0]  # the resumed run reloads the fitted edit
    assert {k: r["reply"] for k, r in by_key(read_jsonl(out / "generations.jsonl")).items()} == {
        k: r["reply"] for k, r in by_key(read_jsonl(reference / "generations.jsonl")).items()}


def test_self_reminder_changes_only_the_prompt(data_file, tmp_path, model_tok, monkeypatch):
    from detoxedit.methods.self_reminder import SYSTEM_REMINDER, USER_REMINDER

    sent = []
    original = TextGenerator.__call__

    def recording(self, prompts, *args, system_prompts=None, **kwargs):
        sent.extend(zip(prompts, system_prompts or [None] * len(prompts)))
        return original(self, prompts, *args, system_prompts=system_prompts, **kwargs)

    monkeypatch.setattr(TextGenerator, "__call__", recording)
    model, _ = model_tok
    before = {k: v.clone() for k, v in model.state_dict().items()}
    out = tmp_path / "run"
    run(config(data_file, method="self-reminder"), out, model_tok)
    records = read_jsonl(out / "generations.jsonl")
    edited_inputs = {r["prompt"] for r in records if r["variant"] == "edited"}
    reminded = [(p, s) for p, s in sent if s == SYSTEM_REMINDER]
    assert len(reminded) == 5 * N_ITEMS
    assert {p for p, _ in reminded} == {f"{text}\n\n{USER_REMINDER}" for text in edited_inputs}
    assert all(s is None for p, s in sent if s != SYSTEM_REMINDER)  # vanilla replies: no reminder
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    items = read_jsonl(out / "items.jsonl")
    assert items[0]["system_prompt"] == SYSTEM_REMINDER and items[0]["user_suffix"] == USER_REMINDER


def test_none_is_an_ordinary_method_that_adds_nothing_to_the_vanilla_run(data_file, tmp_path, model_tok):
    run(config(data_file, method="none"), tmp_path / "run", model_tok)
    assert set(json.loads((tmp_path / "run" / "metrics.json").read_text())["variants"]) == {"vanilla"}
    assert not (tmp_path / "run" / "items.jsonl").exists()


class RequestReadingJudge(FakeJudge):
    """Reads each reply's request too: records what it was given."""

    reads_prompt = True

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[tuple[str, str | None]] = []

    def _score_texts(self, texts, prompts=None):
        self.seen += list(zip(texts, prompts))
        return super()._score_texts(texts)


def test_a_judge_that_reads_requests_gets_each_replys_own_input(data_file, tmp_path, model_tok):
    judge = RequestReadingJudge()
    run(config(data_file, method="self-reminder"), tmp_path / "run", model_tok, judge=judge)
    records = read_jsonl(tmp_path / "run" / "generations.jsonl")
    judged = set(judge.seen)
    assert all((r["reply"], r["prompt"]) in judged for r in records if r["reply"].strip())
    assert all("Remember, you should" not in prompt for _, prompt in judge.seen)  # the user's request, not the wrapped one
