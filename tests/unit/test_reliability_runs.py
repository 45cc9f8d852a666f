"""Issue 15's faults of runs and saved models, each reproduced through the CLI on a tiny model.

Rows: 1 (--save into a non-empty folder), 3 (changed inputs on resume), 5 (read-only / full disk,
damaged metrics.json), 7 (bad --set values before model work), 8 (--trust-remote-code on every
command), 9 (judge checked before model work), 10 (delta applied twice; provenance); and the
smaller points: a silent prompt cut, a kill losing a batch of edits, an edited checkpoint
labelled "Vanilla".
"""

from __future__ import annotations

import errno
import json
import shutil

import pytest
from tiny import cli, safeedit_json, save_tiny_chat_model

import detoxedit.models as models_module
from detoxedit.evaluation.records import read_jsonl
from detoxedit.methods.base import METHODS

N_ITEMS = 4  # the items of the `data_file` fixture (tests/unit/conftest.py)


@pytest.fixture()
def model_dir(tmp_path):
    return save_tiny_chat_model(tmp_path / "tiny-model")


@pytest.fixture()
def no_model_load(monkeypatch):
    """Fails the test if any model is loaded: the fault must be caught before model work."""
    def refuse(*args, **kwargs):
        raise AssertionError("a model was loaded before the bad input was refused")

    monkeypatch.setattr(models_module, "load_model", refuse)


def common(model_dir, data_file, *extra):
    return ["--model", model_dir, "--data", data_file, "--judge", "refusal", "--max-new-tokens", 4, *extra]


def dinm_edit(model_dir, data_file, save, *extra) -> int:
    return cli("edit", "--item", f"{data_file}:1", "--save", save, "--model", model_dir,
               "--set", "steps=2", "--set", "layer=1", *extra)


# ---------------------------------------------------------------- row 1: --save into a non-empty folder


def test_save_into_a_run_folder_is_refused_and_the_run_survives(model_dir, data_file, tmp_path, capsys):
    run = tmp_path / "run"
    assert cli("evaluate", *common(model_dir, data_file), "--limit", 1, "--out", run) == 0
    config_before = (run / "config.json").read_bytes()
    assert dinm_edit(model_dir, data_file, run) == 2
    assert "not empty" in capsys.readouterr().err
    assert (run / "config.json").read_bytes() == config_before
    assert cli("report", run) == 0 and "tiny-model" in capsys.readouterr().out

    edited = tmp_path / "edited"
    assert dinm_edit(model_dir, data_file, edited) == 0
    assert cli("apply-delta", "--delta", edited, "--save", run, "--model", model_dir) == 2
    assert (run / "config.json").read_bytes() == config_before
    assert cli("apply-delta", "--delta", edited, "--save", run, "--model", model_dir, "--overwrite") == 0
    assert not (run / "metrics.json").exists() and (run / "model.safetensors").is_file()  # replaced whole
    assert not list(tmp_path.glob(".*staging*")) and not list(tmp_path.glob(".*replaced*"))


# ---------------------------------------------------------------- row 3: changed inputs are not resumed


def test_a_changed_item_is_refused_by_name_and_a_copy_elsewhere_resumes(model_dir, data_file, tmp_path, capsys):
    run = tmp_path / "run"
    assert cli("evaluate", *common(model_dir, data_file), "--out", run) == 0
    copy = tmp_path / "elsewhere" / "same.json"
    copy.parent.mkdir()
    shutil.copy(data_file, copy)
    assert cli("evaluate", *common(model_dir, copy), "--out", run) == 0  # the same file by another path
    capsys.readouterr()

    items = json.loads(data_file.read_text())
    items[2] = safeedit_json(2, prompt="A new prompt?", category="physical harm")
    data_file.write_text(json.dumps(items), encoding="utf-8")
    assert cli("evaluate", *common(model_dir, data_file), "--out", run) == 2
    err = capsys.readouterr().err
    assert "1 item(s) changed (2)" in err and "stale" in err
    assert all(r["prompt"] != "A new prompt?" for r in read_jsonl(run / "generations.jsonl"))


def test_inputs_json_records_file_and_item_digests(model_dir, data_file, tmp_path):
    run = tmp_path / "run"
    assert cli("evaluate", *common(model_dir, data_file), "--limit", 2, "--out", run) == 0
    inputs = json.loads((run / "inputs.json").read_text())
    assert len(inputs["data"]["sha256"]) == 64 and len(inputs["data"]["items"]) == 2


# ---------------------------------------------------------------- row 5: read-only folder, full disk, damaged files


def test_read_only_out_folder_fails_in_one_line_before_the_model_loads(model_dir, data_file, tmp_path, monkeypatch,
                                                                       capsys, no_model_load):
    import detoxedit.files as files

    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(files.tempfile, "mkstemp", read_only)  # root ignores chmod, so the fault is injected
    assert cli("evaluate", *common(model_dir, data_file), "--out", tmp_path / "run") == 2
    err = capsys.readouterr().err
    assert "read-only" in err and "Traceback" not in err
    assert not (tmp_path / "run" / "config.json").exists()


def test_a_full_disk_at_metrics_keeps_no_empty_file_and_resumes(model_dir, data_file, tmp_path, monkeypatch, capsys):
    import detoxedit.files as files

    run = tmp_path / "run"
    real_fsync = files.os.fsync

    def full_at_metrics(fd):
        if files.os.readlink(f"/proc/self/fd/{fd}").split("/")[-1].startswith(".metrics.json"):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_fsync(fd)

    monkeypatch.setattr(files.os, "fsync", full_at_metrics)
    assert cli("evaluate", *common(model_dir, data_file), "--out", run) == 2
    err = capsys.readouterr().err
    assert "disk is full" in err and "Traceback" not in err
    assert not (run / "metrics.json").exists() and not list(run.glob(".*tmp"))
    monkeypatch.setattr(files.os, "fsync", real_fsync)
    assert cli("evaluate", *common(model_dir, data_file), "--out", run) == 0
    assert json.loads((run / "metrics.json").read_text())["n_items"] == N_ITEMS


def test_report_on_an_empty_metrics_file_is_one_line(model_dir, data_file, tmp_path, capsys):
    run = tmp_path / "run"
    assert cli("evaluate", *common(model_dir, data_file), "--limit", 1, "--out", run) == 0
    (run / "metrics.json").write_text("")  # what an older version left after a full disk
    assert cli("report", run) == 2
    assert "metrics.json is empty or damaged" in capsys.readouterr().err


# ---------------------------------------------------------------- row 7: typed --set values before model work


def test_a_fractional_step_count_is_refused_before_the_model_loads(data_file, tmp_path, capsys, no_model_load):
    code = cli("edit", "--item", f"{data_file}:1", "--save", tmp_path / "x", "--set", "steps=1.5")
    assert code == 2 and "steps must be a whole number" in capsys.readouterr().err


# ---------------------------------------------------------------- row 8: loading options on every command


@pytest.mark.parametrize("command", [["evaluate"], ["run"], ["build"], ["edit"], ["apply-delta"], ["chat"],
                                     ["generate"], ["info"], ["judge", "score"], ["judge", "eval"]])
def test_every_command_that_loads_a_model_takes_trust_remote_code(command, capsys):
    """`demo` and `judge train` load only the embedded default model, whose code transformers has; they take none."""
    assert cli(*command, "--help") == 0
    assert "--trust-remote-code" in capsys.readouterr().out


# ---------------------------------------------------------------- row 9: the judge is checked first


@pytest.mark.parametrize("judge", ["bogus", "hf:/nonexistent/classifier"])
def test_a_bad_judge_fails_before_any_model_work_and_leaves_no_config(judge, model_dir, data_file, tmp_path, capsys,
                                                                      monkeypatch):
    run = tmp_path / "run"
    loads = []
    real_load = models_module.load_model
    monkeypatch.setattr(models_module, "load_model", lambda *a, **k: loads.append(a) or real_load(*a, **k))
    args = ["--model", model_dir, "--data", data_file, "--max-new-tokens", 4, "--out", run]
    assert cli("evaluate", *args, "--judge", judge) == 2
    assert not loads and not (run / "config.json").exists()
    assert "Traceback" not in capsys.readouterr().err
    assert cli("evaluate", *args, "--judge", "refusal") == 0  # the corrected command is not blocked


# ---------------------------------------------------------------- row 10: provenance, a delta applied twice


def test_a_delta_is_not_applied_twice_and_every_saved_model_records_its_provenance(model_dir, data_file, tmp_path,
                                                                                   capsys):
    edited = tmp_path / "edited"
    assert dinm_edit(model_dir, data_file, edited) == 0
    record = json.loads((edited / "detoxedit.json").read_text())
    assert record["base_model"]["spec"] == str(model_dir) and len(record["base_model"]["sha256"]) == 64
    (edit,) = record["edits"]
    assert edit["method"] == "dinm" and str(edit["item_id"]) == "1" and edit["layer"] == 1
    assert edit["method_config"]["steps"] == 2 and len(edit["item_file_sha256"]) == 64
    assert "dinm" in (edited / "README.md").read_text()

    capsys.readouterr()
    assert cli("apply-delta", "--model", edited, "--delta", edited, "--save", tmp_path / "twice") == 2
    assert "already has this delta applied" in capsys.readouterr().err
    assert not (tmp_path / "twice").exists()
    assert cli("apply-delta", "--model", edited, "--delta", edited, "--save", tmp_path / "twice", "--force") == 0
    assert len(json.loads((tmp_path / "twice" / "detoxedit.json").read_text())["edits"]) == 2

    assert cli("apply-delta", "--model", model_dir, "--delta", edited, "--save", tmp_path / "shared") == 0
    shared = json.loads((tmp_path / "shared" / "detoxedit.json").read_text())
    assert shared["base_model"] == record["base_model"] and shared["edits"][0]["delta_sha256"] == edit["delta_sha256"]
    assert shared["edits"][0]["made_by"] == "apply-delta"


def test_a_delta_made_on_another_base_model_is_refused(model_dir, data_file, tmp_path, capsys):
    edited = tmp_path / "edited"
    assert dinm_edit(model_dir, data_file, edited) == 0
    other = save_tiny_chat_model(tmp_path / "other-base", seed=7)
    assert cli("apply-delta", "--model", other, "--delta", edited, "--save", tmp_path / "mixed") == 2
    assert "made on base model" in capsys.readouterr().err


# ---------------------------------------------------------------- smaller points


def test_an_edited_checkpoint_evaluated_alone_is_not_called_vanilla(model_dir, data_file, tmp_path, capsys):
    edited = tmp_path / "edited"
    assert dinm_edit(model_dir, data_file, edited) == 0
    capsys.readouterr()
    run = tmp_path / "run"
    assert cli("evaluate", "--model", edited, "--data", data_file, "--judge", "refusal", "--max-new-tokens", 4,
               "--limit", 1, "--out", run) == 0
    out = capsys.readouterr().out
    assert "Edited model (dinm; 1 edit)" in out and "Vanilla" not in out
    assert "Edited model (dinm; 1 edit)" in (run / "report.md").read_text()


def test_a_cut_prompt_is_reported_once_with_its_count(model_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("DETOXEDIT_CACHE", str(tmp_path / "cache"))
    data = tmp_path / "long.json"
    data.write_text(json.dumps([safeedit_json(0, prompt="word " * 300), safeedit_json(1)]), encoding="utf-8")
    run = tmp_path / "run"
    assert cli("evaluate", *common(model_dir, data), "--max-input-tokens", 200, "--out", run) == 0
    err = " ".join(capsys.readouterr().err.split())  # the CLI logs through rich, which wraps lines
    assert err.count("max_input_tokens=200") == 2  # once when the cut happens, once in the run's summary
    assert "1 of 10 prompts are longer" in err and "1 of 10 distinct inputs were longer" in err
    truncated = json.loads((run / "metrics.json").read_text())["truncated_inputs"]
    assert truncated["count"] == 1 and truncated["longest"] > 1500


class CountingDinm:
    """Counts `execute` calls of the real DINM, and can stop the run after N of them (a kill)."""

    def __init__(self, monkeypatch, stop_after: int | None) -> None:
        self.calls = 0
        cls = METHODS.get("dinm")
        real = cls.execute

        def execute(method, model, tokenizer, item):
            self.calls += 1
            edit = real(method, model, tokenizer, item)
            if stop_after is not None and self.calls >= stop_after:
                monkeypatch.setattr(cls, "execute", real)
                raise KeyboardInterrupt("killed after the edit was computed")
            return edit

        monkeypatch.setattr(cls, "execute", execute)


def test_a_kill_mid_batch_loses_no_finished_edit(model_dir, data_file, tmp_path, monkeypatch):
    args = ["run", "--method", "dinm", "--set", "steps=2", "--set", "layer=1", *common(model_dir, data_file),
            "--items-per-batch", 4]
    killed = CountingDinm(monkeypatch, stop_after=3)  # three edits of a batch of four are done, none evaluated
    assert cli(*args, "--out", tmp_path / "run") == 130
    assert killed.calls == 3 and len(list((tmp_path / "run" / "pending").glob("*.pt"))) == 2
    resumed = CountingDinm(monkeypatch, stop_after=None)
    assert cli(*args, "--out", tmp_path / "run") == 0
    assert resumed.calls == 2  # the two kept edits are reused; only the third (killed) and the fourth are computed
    assert not (tmp_path / "run" / "pending").exists()

    fresh = CountingDinm(monkeypatch, stop_after=None)
    assert cli(*args, "--out", tmp_path / "fresh") == 0 and fresh.calls == N_ITEMS
    assert _same_items(tmp_path / "run", tmp_path / "fresh")
    assert _replies(tmp_path / "run") == _replies(tmp_path / "fresh")


def _same_items(a, b) -> bool:
    keep = ("item_id", "layer", "losses", "relative_change")
    return [{k: r[k] for k in keep} for r in read_jsonl(a / "items.jsonl")] == \
        [{k: r[k] for k in keep} for r in read_jsonl(b / "items.jsonl")]


def _replies(folder) -> dict:
    return {(r["variant"], str(r["item_id"]), r["kind"]): r["reply"] for r in read_jsonl(folder / "generations.jsonl")}


# ---------------------------------------------------------------- the review's findings (one test each)


def test_a_model_changed_in_place_is_not_resumed(data_file, tmp_path, capsys):
    model = save_tiny_chat_model(tmp_path / "m")
    run = tmp_path / "run"
    args = ["evaluate", "--model", model, "--data", data_file, "--judge", "refusal", "--max-new-tokens", 4,
            "--limit", 2, "--out", run]
    assert cli(*args) == 0
    save_tiny_chat_model(model, seed=7)  # other weights, same path
    assert cli(*args) == 2
    assert "--model file contents changed" in capsys.readouterr().err


def test_two_commands_never_write_one_run_folder(model_dir, data_file, tmp_path, capsys, no_model_load):
    from detoxedit.runner import run_lock

    run = tmp_path / "run"
    run.mkdir()
    with run_lock(run):  # another command holds the folder
        assert cli("evaluate", *common(model_dir, data_file), "--out", run) == 2
    assert "being written by another detoxedit command" in capsys.readouterr().err


def test_general_ability_files_are_read_before_model_work(data_file, tmp_path, capsys, no_model_load):
    assert cli("evaluate", "--data", data_file, "--judge", "refusal", "--general", "--triviaqa", tmp_path / "nope.json",
               "--xsum", tmp_path / "nope.jsonl", "--out", tmp_path / "run") == 2
    assert "nope.json" in capsys.readouterr().err and not (tmp_path / "run" / "config.json").exists()


def test_overwrite_never_discards_a_folder_that_is_not_a_run(model_dir, data_file, tmp_path, capsys):
    target = save_tiny_chat_model(tmp_path / "a-model")
    before = (target / "config.json").read_bytes()
    assert cli("evaluate", *common(model_dir, data_file), "--out", target, "--overwrite") == 2
    assert "not a detoxedit run's" in capsys.readouterr().err
    assert (target / "config.json").read_bytes() == before


def test_save_follows_a_symlink_and_works_in_the_current_folder(model_dir, data_file, tmp_path, monkeypatch):
    edited = tmp_path / "edited"
    assert dinm_edit(model_dir, data_file, edited) == 0
    (tmp_path / "disk").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "disk")
    assert cli("apply-delta", "--model", model_dir, "--delta", edited, "--save", tmp_path / "link") == 0
    assert (tmp_path / "link").is_symlink() and (tmp_path / "disk" / "model.safetensors").is_file()
    (tmp_path / "here").mkdir()
    monkeypatch.chdir(tmp_path / "here")
    assert cli("apply-delta", "--model", model_dir, "--delta", edited, "--save", ".") == 0
    assert (tmp_path / "here" / "detoxedit.json").is_file() and not list((tmp_path / "here").glob(".*staging*"))


def test_a_full_disk_while_saving_a_model_is_one_line(model_dir, data_file, tmp_path, monkeypatch, capsys):
    import transformers.modeling_utils

    def full(*args, **kwargs):
        raise RuntimeError("Error while serializing: IoError(Os { code: 28, message: \"No space left on device\" })")

    monkeypatch.setattr(transformers.modeling_utils, "safe_save_file", full, raising=False)
    monkeypatch.setattr("detoxedit.persist.save_file", full)
    assert dinm_edit(model_dir, data_file, tmp_path / "edited") == 2
    assert "the disk is full" in capsys.readouterr().err
    assert not (tmp_path / "edited").exists() and not list(tmp_path.glob(".*staging*"))


def test_a_delta_made_on_an_edited_model_needs_that_models_edits(model_dir, data_file, tmp_path, capsys):
    first, second = tmp_path / "e1", tmp_path / "e2"
    assert dinm_edit(model_dir, data_file, first) == 0
    assert cli("edit", "--item", f"{data_file}:2", "--save", second, "--model", first, "--set", "steps=2",
               "--set", "layer=1") == 0
    assert cli("apply-delta", "--model", model_dir, "--delta", second, "--save", tmp_path / "chain") == 2
    assert "made on a model carrying 1 earlier edit" in capsys.readouterr().err
    assert cli("apply-delta", "--model", model_dir, "--delta", first, "--save", tmp_path / "again") == 0
    assert cli("apply-delta", "--model", tmp_path / "again", "--delta", second, "--save", tmp_path / "chain") == 0
    record = json.loads((tmp_path / "chain" / "detoxedit.json").read_text())
    assert [e["method"] for e in record["edits"]] == ["dinm", "dinm"]


def test_save_may_not_be_the_commands_own_input(model_dir, data_file, tmp_path, capsys):
    edited = tmp_path / "edited"
    assert dinm_edit(model_dir, data_file, edited) == 0
    assert cli("apply-delta", "--model", model_dir, "--delta", edited, "--save", edited, "--overwrite") == 2
    assert dinm_edit(model_dir, data_file, model_dir, "--overwrite") == 2
    assert capsys.readouterr().err.count("is where this command reads") == 2
    assert (edited / "delta.safetensors").is_file() and (model_dir / "model.safetensors").is_file()


def test_a_run_folder_delta_keeps_the_base_it_was_made_on(data_file, tmp_path, monkeypatch):
    save_tiny_chat_model(tmp_path / "work" / "model")
    train = tmp_path / "train.json"
    train.write_text(json.dumps([safeedit_json(i) for i in range(100, 103)]), encoding="utf-8")
    monkeypatch.chdir(tmp_path / "work")
    assert cli("run", "--method", "dinm-global", "--model", "model", "--data", data_file, "--train", train,
               "--judge", "refusal", "--max-new-tokens", 4, "--set", "steps=2", "--set", "layer=1",
               "--overrefusal", "none", "--out", tmp_path / "run") == 0
    monkeypatch.chdir(tmp_path)  # "model" now names nothing; the run recorded its base's hash
    assert cli("apply-delta", "--model", tmp_path / "work" / "model", "--delta", tmp_path / "run",
               "--save", tmp_path / "saved") == 0
    other = save_tiny_chat_model(tmp_path / "other", seed=7)
    assert cli("apply-delta", "--model", other, "--delta", tmp_path / "run", "--save", tmp_path / "wrong") == 2


def test_a_folder_from_an_older_version_resumes(model_dir, data_file, tmp_path, caplog):
    run = tmp_path / "run"
    assert cli("evaluate", *common(model_dir, data_file), "--out", run) == 0
    config = json.loads((run / "config.json").read_text())
    for key in ("drop_overlap", "trust_remote_code", "overrefusal", "n_overrefusal", "overrefusal_max_new_tokens"):
        config.pop(key)
    (run / "config.json").write_text(json.dumps(config))
    (run / "inputs.json").unlink()
    assert cli("evaluate", *common(model_dir, data_file), "--out", run) == 0


def test_results_are_readable_by_colleagues(model_dir, data_file, tmp_path):
    import os

    umask = os.umask(0o022)
    try:
        assert cli("evaluate", *common(model_dir, data_file), "--limit", 1, "--out", tmp_path / "run") == 0
    finally:
        os.umask(umask)
    for name in ("config.json", "inputs.json", "metrics.json", "report.md"):
        assert (tmp_path / "run" / name).stat().st_mode & 0o777 == 0o644


def test_damaged_files_are_one_line(model_dir, data_file, tmp_path, capsys):
    run = tmp_path / "run"
    assert cli("evaluate", *common(model_dir, data_file), "--out", run) == 0
    lines = (run / "generations.jsonl").read_text().splitlines()
    (run / "generations.jsonl").write_text("\n".join([lines[0], "{oops", *lines[1:]]) + "\n")
    assert cli("evaluate", *common(model_dir, data_file), "--out", run) == 2
    assert "generations.jsonl:2: not valid JSON" in capsys.readouterr().err
    edited = tmp_path / "edited"
    assert dinm_edit(model_dir, data_file, edited) == 0
    (edited / "delta.json").write_text("{bad")
    assert cli("apply-delta", "--model", model_dir, "--delta", edited, "--save", tmp_path / "x") == 2
    preset = tmp_path / "p.yaml"
    preset.write_bytes("steps: 2 # caf\xe9\n".encode("latin-1"))
    assert cli("edit", "--item", f"{data_file}:1", "--save", tmp_path / "y", "--preset", preset) == 2
    assert cli("evaluate", *common(model_dir, data_file), "--device", "cuda:0", "--out", tmp_path / "z") == 2
    err = capsys.readouterr().err
    assert "delta's metadata) is not valid JSON" in err and "not UTF-8" in err and "CUDA" in err
    assert "Traceback" not in err


def test_a_damaged_generation_cache_is_set_aside(model_dir, data_file, tmp_path):
    assert cli("evaluate", *common(model_dir, data_file), "--out", tmp_path / "a") == 0
    cache_files = list((tmp_path / "cache" / "generations").glob("*.jsonl"))
    for cache_file in cache_files:
        lines = cache_file.read_text().splitlines()
        cache_file.write_text("\n".join(["{oops", *lines]) + "\n")
    assert cli("evaluate", *common(model_dir, data_file), "--out", tmp_path / "b") == 0
    assert all(f.with_name(f.name + ".damaged").is_file() for f in cache_files)
    assert _replies(tmp_path / "a") == _replies(tmp_path / "b")


def test_printing_a_report_writes_nothing_into_the_run(model_dir, data_file, tmp_path):
    run = tmp_path / "run"
    assert cli("run", "--method", "dinm", "--set", "steps=2", "--set", "layer=1", *common(model_dir, data_file),
               "--out", run) == 0
    for png in run.glob("*.png"):
        png.unlink()
    assert cli("report", run) == 0
    assert not list(run.glob("*.png"))


def test_instances_check_the_data_before_loading_a_model(data_file, tmp_path, capsys, no_model_load):
    assert cli("run", "--method", "dinm-global", "--instances", 2, "--data", data_file, "--train", data_file,
               "--judge", "refusal", "--out", tmp_path / "x") == 2
    assert "also occur in --train" in capsys.readouterr().err


def test_a_users_own_temp_file_is_never_deleted(model_dir, data_file, tmp_path):
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / ".notes.tmp").write_text("keep me")
    (folder / "f").write_text("x")
    assert cli("evaluate", *common(model_dir, data_file), "--out", folder) == 2
    assert (folder / ".notes.tmp").read_text() == "keep me"
