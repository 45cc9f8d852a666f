"""The hook utility: traces equal a hand-written hook's reading, and no hook outlives its block."""

from __future__ import annotations

import pytest
import torch
from tiny import tiny_model

from detoxedit.models import get_adapter
from detoxedit.models.hooks import hooked, run_until, trace, trace_all


def hook_count(model: torch.nn.Module) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


@pytest.fixture()
def model():
    return tiny_model("llama")


def inputs() -> dict:
    ids = torch.tensor([[5, 6, 7, 8, 9]])
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}


def test_trace_equals_a_plain_forward_hook(model):
    layer = get_adapter(model).layers[1]
    seen_by_hand = []
    handle = layer.register_forward_hook(lambda m, a, out: seen_by_hand.append((a[0].clone(), out)))
    with torch.no_grad(), trace(layer) as seen:
        model(**inputs())
    handle.remove()
    by_hand_input, by_hand_output = seen_by_hand[0]
    first = lambda out: out[0] if isinstance(out, tuple) else out  # noqa: E731
    assert torch.equal(seen.input, by_hand_input) and torch.equal(first(seen.output), first(by_hand_output))
    assert hook_count(model) == 0


def test_trace_all_and_run_until_match_the_full_forward(model):
    layers = list(get_adapter(model).layers)
    with torch.no_grad():
        model(**inputs(), output_hidden_states=True)  # transformers may install its own output recorders once
    before = hook_count(model)
    with torch.no_grad(), trace_all(layers) as seen:
        full = model(**inputs(), output_hidden_states=True)
    first = lambda out: out[0] if isinstance(out, tuple) else out  # noqa: E731
    for index in range(len(layers) - 1):  # the last entry of hidden_states has the final norm applied
        assert torch.equal(first(seen[index].output), full.hidden_states[index + 1])
    calls = []
    with hooked(layers[-1], forward=lambda m, a, out: calls.append(1)):
        stopped = run_until(model, layers[1], inputs())
    assert torch.equal(first(stopped), first(seen[1].output)) and calls == []  # layers above never ran
    assert hook_count(model) == before


def test_no_hook_outlives_its_block_even_on_an_error(model):
    layer = get_adapter(model).layers[0]

    def broken(module, args, output):
        raise ValueError("boom")

    with pytest.raises(ValueError, match="boom"), trace(layer), hooked(layer, forward=broken, pre=lambda m, a: None):
        model(**inputs())
    assert hook_count(model) == 0
    with pytest.raises(RuntimeError, match="never called"):
        run_until(model, torch.nn.Linear(2, 2), inputs())
    assert hook_count(model) == 0


def test_hooked_can_change_a_modules_output(model):
    adapter = get_adapter(model)
    with torch.no_grad():
        plain = model(**inputs()).logits
        with hooked(adapter.down_proj(0).module, forward=lambda m, a, out: out * 0):
            zeroed = model(**inputs()).logits
        again = model(**inputs()).logits
    assert not torch.equal(plain, zeroed) and torch.equal(plain, again)


def test_the_adapter_is_resolved_once_per_model(model, monkeypatch):
    import detoxedit.models.adapter as adapter_module

    first = get_adapter(model)
    monkeypatch.setattr(adapter_module, "discover_architecture", lambda m: pytest.fail("discovered again"))
    assert get_adapter(model) is first
