"""The real embedded default model: cached loading, generation quality and batching invariance."""

from __future__ import annotations

import pytest
import torch

from detoxedit.models import Batching, generate, get_adapter, load_model
from detoxedit.models import loading

pytestmark = pytest.mark.slow

PROMPTS = [
    "What is the capital of France?",
    "Write one sentence about the sea.",
    "How do I boil an egg?",
    "Name three primary colours.",
    "Explain photosynthesis briefly.",
    "Who wrote Romeo and Juliet?",
]


def test_default_is_smollm2_with_30_layers(default_model) -> None:
    model, tok = default_model
    assert type(model).__name__ == "LlamaForCausalLM" and get_adapter(model).num_layers == 30
    assert next(model.parameters()).dtype == torch.float32
    assert tok.chat_template and "<|im_start|>" in tok.chat_template


def test_capital_of_france_names_paris(default_model) -> None:
    model, tok = default_model
    assert "Paris" in generate(model, tok, ["What is the capital of France?"], 24, progress=False)[0]


def test_batched_replies_equal_one_at_a_time(default_model) -> None:
    model, tok = default_model
    batched = generate(model, tok, PROMPTS, 40, batching=Batching(max_batch_size=6), progress=False)
    single = [generate(model, tok, [p], 40, progress=False)[0] for p in PROMPTS]
    assert batched == single


def test_cache_is_built_once_then_reused(monkeypatch, tmp_path, default_model) -> None:
    monkeypatch.setenv("DETOXEDIT_CACHE", str(tmp_path))
    first, _ = load_model("default")
    (folder,) = (tmp_path / "models").iterdir()
    assert (folder / "model.safetensors").is_file() and (folder / "detoxedit-cache.json").is_file()

    def must_not_dequantize(*args, **kwargs):
        raise AssertionError("a cached load must not dequantize again")

    rebuild = loading._write_dequantized
    monkeypatch.setattr(loading, "_write_dequantized", must_not_dequantize)
    second, _ = load_model("default")
    for (name, a), (_, b) in zip(first.state_dict().items(), second.state_dict().items()):
        assert torch.equal(a, b), name
    reference, _ = default_model
    assert torch.equal(reference.lm_head.weight, second.lm_head.weight)

    (folder / "model.safetensors").write_bytes(b"garbage")  # a damaged copy is rebuilt from the GGUF (issue 15)
    monkeypatch.setattr(loading, "_write_dequantized", rebuild)
    third, _ = load_model("default")
    assert torch.equal(reference.lm_head.weight, third.lm_head.weight)
