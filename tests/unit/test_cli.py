"""The CLI: help everywhere, one-line errors with a non-zero exit, generate/info on a local tiny model."""

from __future__ import annotations

import json

import pytest
from tiny import tiny_model, tiny_tokenizer

from detoxedit.cli import main


def run_cli(args: list[str]) -> int:
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    return exit_info.value.code


@pytest.fixture()
def tiny_dir(tmp_path):
    tiny_model("llama").save_pretrained(tmp_path / "m")
    tiny_tokenizer().save_pretrained(tmp_path / "m")
    return tmp_path / "m"


def test_help_exits_zero(capsys) -> None:
    assert run_cli(["--help"]) == 0
    assert "generate" in capsys.readouterr().out
    for command in ("generate", "info"):
        assert run_cli([command, "--help"]) == 0


def test_generate_without_prompts_fails_with_one_line(capsys) -> None:
    assert run_cli(["generate", "--model", "default"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "--prompt" in err and len(err.splitlines()) == 1


def test_bad_model_path_fails_cleanly(capsys, tmp_path) -> None:
    assert run_cli(["info", "--model", str(tmp_path / "missing")]) == 2
    assert "not found" in capsys.readouterr().err


def test_unknown_option_is_a_usage_error() -> None:
    assert run_cli(["generate", "--no-such-flag"]) == 2


def test_generate_from_file_writes_jsonl(tiny_dir, tmp_path, capsys) -> None:
    prompts = tmp_path / "p.txt"
    prompts.write_text("first prompt\n\nsecond prompt\n")
    out = tmp_path / "out.jsonl"
    code = run_cli(["generate", "--model", str(tiny_dir), "--file", str(prompts), "--max-new-tokens", "4",
                    "--output", str(out)])
    assert code == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["prompt"] for r in rows] == ["first prompt", "second prompt"]
    assert "> first prompt" in capsys.readouterr().out


def test_bad_jsonl_prompt_file_names_the_line(tiny_dir, tmp_path, capsys) -> None:
    prompts = tmp_path / "p.jsonl"
    prompts.write_text('{"prompt": "ok"}\n{"oops": 1}\n')
    assert run_cli(["generate", "--model", str(tiny_dir), "--file", str(prompts)]) == 2
    assert "p.jsonl:2" in capsys.readouterr().err


def test_info_shows_mapping(tiny_dir, capsys) -> None:
    assert run_cli(["info", "--model", str(tiny_dir)]) == 0
    out = capsys.readouterr().out
    assert "mlp.down_proj" in out and "LlamaForCausalLM" in out
