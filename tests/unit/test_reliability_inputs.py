"""User inputs under faults: non-UTF-8 files, ids that collide as text, --version, the benchmark's arguments."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest
from tiny import tiny_item, tiny_model, tiny_tokenizer

import detoxedit
from detoxedit.data.schema import DataError
from detoxedit.errors import DetoxeditError

LATIN1 = "caf\u00e9 cr\u00e8me".encode("latin-1")  # 0xe9 at offset 3: not UTF-8
BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_runner.py"


def cli(*argv) -> int:
    from detoxedit.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main([str(a) for a in argv])
    return exit_info.value.code


@pytest.fixture()
def tiny_dir(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("DETOXEDIT_CACHE", str(tmp_path / "cache"))
    tiny_model("llama").save_pretrained(tmp_path / "m")
    tiny_tokenizer().save_pretrained(tmp_path / "m")
    return tmp_path / "m"


def _one_line_naming(err: str, path: Path, offset: int) -> None:
    err = " ".join(err.split())  # rich wraps long lines
    assert err.startswith("error:") and str(path) in err and f"offset {offset}" in err, err
    assert "Traceback" not in err and "UnicodeDecodeError" not in err


# ---------------------------------------------------------------- non-UTF-8 files (issue 15 row 6)


def test_generate_file_with_a_bad_byte_is_one_line(tmp_path, tiny_dir, capsys) -> None:
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"hello\n" + LATIN1 + b"\n")
    assert cli("generate", "--file", bad, "--model", tiny_dir) == 2
    _one_line_naming(capsys.readouterr().err, bad, 6 + 3)


def test_latin1_data_file_fails_before_the_model_loads(tmp_path, tiny_dir, monkeypatch, capsys) -> None:
    import detoxedit.models

    def no_model(*args, **kwargs):
        raise AssertionError("the model loaded before the data file was read")

    monkeypatch.setattr(detoxedit.models, "load_model", no_model)
    item = tiny_item(0, prompt="Be evil. Caf\u00e9?").to_json()
    bad = tmp_path / "bad.json"
    bad.write_bytes(json.dumps([item], ensure_ascii=False).encode("latin-1"))
    offset = bad.read_bytes().index(b"\xe9")
    assert cli("evaluate", "--data", bad, "--model", tiny_dir, "--out", tmp_path / "out", "--judge", "refusal") == 2
    _one_line_naming(capsys.readouterr().err, bad, offset)


def _readers():
    """(name, function of a path) for every reader of a user's text file in the data and judge code."""
    from detoxedit.cli.judge_cmds import read_texts
    from detoxedit.cli.models_cmds import read_prompt_file
    from detoxedit.data import load_safeedit, load_triviaqa, load_xsum
    from detoxedit.data.xstest import load_xstest_completions, load_xstest_prompts
    from detoxedit.judges.labels import load_labelled_replies
    from detoxedit.judges.training import examples_from_labels

    return {
        "safeedit": load_safeedit, "triviaqa": load_triviaqa, "xsum": load_xsum,
        "xstest-prompts": load_xstest_prompts, "xstest-completions": load_xstest_completions,
        "labels": examples_from_labels, "labelled-replies": load_labelled_replies,
        "judge-texts": read_texts, "prompts-jsonl": read_prompt_file,
    }


@pytest.mark.parametrize("reader", list(_readers()))
def test_every_user_text_file_reader_names_file_and_offset(tmp_path, reader) -> None:
    bad = tmp_path / ("bad.jsonl" if reader != "xstest-prompts" else "bad.csv")
    bad.write_bytes(b'{"text": "ok"}\n' + LATIN1)
    with pytest.raises(DetoxeditError) as info:
        _readers()[reader](bad)
    message = str(info.value)
    assert str(bad) in message and f"offset {15 + 3}" in message and "line 2" in message


def test_data_readers_keep_raising_data_error(tmp_path) -> None:
    """`DataError` is also a ValueError, which callers such as `detoxedit build` catch."""
    from detoxedit.data import load_safeedit

    bad = tmp_path / "bad.json"
    bad.write_bytes(LATIN1)
    with pytest.raises(DataError):
        load_safeedit(bad)


def test_xstest_csv_still_parses_quoted_newlines(tmp_path) -> None:
    from detoxedit.data.xstest import load_xstest_prompts

    path = tmp_path / "xstest_prompts.csv"
    path.write_text('id,prompt,type,label\r\n1,"two\nlines \u00e9",homonyms,safe\r\n', encoding="utf-8")
    (prompt,) = load_xstest_prompts(path)
    assert prompt.prompt == "two\nlines \u00e9" and prompt.label == "safe"


# ---------------------------------------------------------------- ids that collide as text (row 2)


def _write_items(path: Path, ids: list) -> Path:
    path.write_text(json.dumps([tiny_item(0) .to_json() | {"id": i} for i in ids]), encoding="utf-8")
    return path


def test_ids_that_differ_only_in_type_are_refused(tmp_path) -> None:
    from detoxedit.data import load_safeedit

    with pytest.raises(DataError) as info:
        load_safeedit(_write_items(tmp_path / "d.json", [0, 1, "0"]))
    message = str(info.value)
    assert "0 (item #0)" in message and "'0' (item #2)" in message and "as text" in message


def test_plain_duplicate_ids_are_still_refused(tmp_path) -> None:
    from detoxedit.data import load_safeedit

    with pytest.raises(DataError, match="duplicate id 7 at items #0, #1"):
        load_safeedit(_write_items(tmp_path / "d.json", [7, 7]))


def test_distinct_ids_load(tmp_path) -> None:
    from detoxedit.data import load_safeedit

    assert [i.id for i in load_safeedit(_write_items(tmp_path / "d.json", [0, "1", 2]))] == [0, "1", 2]


# ---------------------------------------------------------------- --version


def test_version_prints_and_exits_zero(capsys) -> None:
    assert cli("--version") == 0
    assert capsys.readouterr().out.strip() == f"detoxedit {detoxedit.__version__}"


# ---------------------------------------------------------------- benchmarks/bench_runner.py arguments (row 9)


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_runner_under_test", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture()
def data_file(tmp_path) -> Path:
    return _write_items(tmp_path / "dev.json", [0, 1])


@pytest.mark.parametrize("argv", [
    ["--items-long", "-1"], ["--items", "-2"], ["--max-new-tokens", "0"], ["--threads", "0"],
    ["--token-budget", "0"], ["--memory-items", "-1"], ["--gen-rows", "0", "--generation"],
    ["--gen-variants", "fastest", "--generation"], ["--judge", "no-such-judge"],
])
def test_bench_refuses_bad_arguments_before_any_work(bench, data_file, capsys, argv) -> None:
    with pytest.raises(SystemExit) as info:
        bench.parse_args(["--data", str(data_file), *argv])
    assert info.value.code == 2 and "error:" in capsys.readouterr().err


def test_bench_refuses_a_missing_data_file(bench, tmp_path) -> None:
    with pytest.raises(SystemExit) as info:
        bench.parse_args(["--data", str(tmp_path / "none.json")])
    assert info.value.code == 2


def test_bench_items_long_zero_skips_the_long_comparison(bench, data_file) -> None:
    args = bench.parse_args(["--data", str(data_file), "--items-long", "0", "--max-new-tokens", "128", "600"])
    assert bench.comparisons(args) == [(128, args.items)]
    args = bench.parse_args(["--data", str(data_file), "--items", "0", "--max-new-tokens", "128", "600"])
    assert bench.comparisons(args) == [(600, args.items_long)]


def test_bench_with_nothing_to_run_is_refused(bench, data_file) -> None:
    with pytest.raises(SystemExit):
        bench.parse_args(["--data", str(data_file), "--items", "0", "--items-long", "0", "--memory-items", "0"])


def _fake_way(way: str, n: int) -> dict:
    phases = [{p: 0.1 for p in ("localise", "edit", "generate", "judge", "restore")}] * n
    return {"way": way, "n_items": n, "phases": phases, "total_s": 1.0, "cpu_s": 1.0, "tokens": 10,
            "replies": {"0/adversarial": "no"}, "deltas": {}, "peak_rss_mb": 100.0}


def test_bench_failure_in_a_later_phase_keeps_finished_tables(bench, data_file, monkeypatch, capsys) -> None:
    def run_child(args, worker, n_items, max_new_tokens, folder):
        if max_new_tokens > 128:
            raise subprocess.CalledProcessError(1, ["child"])
        return _fake_way(worker, n_items)

    monkeypatch.setattr(bench, "run_child", run_child)
    code = bench.main(["--data", str(data_file), "--max-new-tokens", "128", "600", "--memory-items", "0"])
    out = capsys.readouterr().out
    assert code == 1
    assert "max_new_tokens=128" in out and "600" in out and "failed" in out


def test_bench_help_runs_without_work() -> None:
    done = subprocess.run([sys.executable, str(BENCH), "--help"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "--items-long" in done.stdout
