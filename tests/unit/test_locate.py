"""Toxic-layer localisation: a pure function over one batched forward pass."""

from __future__ import annotations

import pytest
import torch
from tiny import tiny_item, FAMILIES, tiny_model, tiny_tokenizer


from detoxedit.errors import DetoxeditError
from detoxedit.locate import LOCATE_VARIANTS, locate_toxic_layer
from detoxedit.methods.base import weight_checksum
from detoxedit.models import ChatFormat, get_adapter


def make_item(item_id: int = 0, **kwargs):
    return tiny_item(item_id, kc_answer="Paris.", **kwargs)


def hook_counts(model: torch.nn.Module) -> list[tuple[int, int]]:
    return [(len(m._forward_hooks), len(m._forward_pre_hooks)) for m in model.modules()]


@pytest.mark.parametrize("variant", LOCATE_VARIANTS)
@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_profile_has_one_distance_per_layer_and_argmax_is_the_layer(family, variant):
    model, tok = tiny_model(family), tiny_tokenizer()
    found = locate_toxic_layer(model, tok, make_item(), variant=variant)
    assert len(found.distances) == get_adapter(model).num_layers
    assert found.layer == max(range(len(found.distances)), key=found.distances.__getitem__)
    assert found.variant == variant
    assert all(d >= 0 for d in found.distances)


def test_normalized_differs_from_raw(tiny_llama):
    model, tok = tiny_llama
    raw = locate_toxic_layer(model, tok, make_item(), variant="mean")
    norm = locate_toxic_layer(model, tok, make_item(), variant="normalized")
    assert raw.distances != pytest.approx(norm.distances)
    # the normalisation is per layer: the ratio raw/normalized is each layer's mean hidden-state norm (> 0)
    assert all(r > 0 and n > 0 for r, n in zip(raw.distances, norm.distances))


@pytest.mark.parametrize("family", FAMILIES)
def test_does_not_mutate_the_model(family):
    model, tok = tiny_model(family), tiny_tokenizer()
    before = {name: weight_checksum(p) for name, p in model.state_dict().items()}
    config_before = model.config.to_dict()
    with torch.no_grad():  # transformers installs its own output-capturing hooks on first use; not ours
        model(input_ids=torch.tensor([[1, 2, 3]]), output_hidden_states=True)
    hooks_before = hook_counts(model)
    for variant in LOCATE_VARIANTS:
        locate_toxic_layer(model, tok, make_item(), variant=variant)
    assert {name: weight_checksum(p) for name, p in model.state_dict().items()} == before
    assert model.config.to_dict() == config_before
    assert not model.training
    assert hook_counts(model) == hooks_before


def test_easyedit_variant_matches_the_reference_procedure(tiny_llama):
    """Reference: replies alone as a padded pair, torch.dist over hidden_states[1:], winning index - 1."""
    model, tok = tiny_llama
    item = make_item(safe="No.", unsafe="Sure, here is a long and detailed plan.")
    batch = tok([item.safe_generation, item.unsafe_generation], return_tensors="pt", padding=True, truncation=True)
    with torch.no_grad():
        states = model(**batch, output_hidden_states=True).hidden_states
    best, best_value = None, float("-inf")
    for index in range(1, len(states)):
        value = torch.dist(states[index][0], states[index][1], p=2).item()
        if value > best_value:
            best, best_value = index, value
    found = locate_toxic_layer(model, tok, item, variant="easyedit")
    assert found.layer == best - 1
    assert found.distances[found.layer] == pytest.approx(best_value)


def test_layer_depends_on_the_item_not_on_earlier_calls(tiny_llama):
    model, tok = tiny_llama
    a = locate_toxic_layer(model, tok, make_item(0))
    locate_toxic_layer(model, tok, make_item(1, safe="No way.", unsafe="Yes: first, second, third."))
    assert locate_toxic_layer(model, tok, make_item(0)) == a


def test_unknown_variant_and_empty_reply_are_clear_errors(tiny_llama):
    model, tok = tiny_llama
    with pytest.raises(DetoxeditError, match="unknown localisation variant"):
        locate_toxic_layer(model, tok, make_item(), variant="max")
    empty = make_item()
    object.__setattr__(empty, "safe_generation", "")
    with pytest.raises(DetoxeditError, match="item 0"):
        locate_toxic_layer(model, tok, empty)


def test_normalized_scores_the_last_layer_before_the_final_norm(tiny_llama):
    """hidden_states[-1] is post-final-norm in HF; `normalized` must use the last layer's own output."""
    model, tok = tiny_llama
    item = make_item()
    fmt = ChatFormat(tok)
    prompt = fmt.encode(item.adversarial_prompt)
    pooled, norms = [], []
    for reply in (item.safe_generation, item.unsafe_generation):
        ids = torch.tensor([prompt + fmt.encode_reply(reply)])
        captured = []
        hook = get_adapter(model).layers[-1].register_forward_hook(lambda m, a, out: captured.append(out))
        with torch.no_grad():
            model(input_ids=ids)
        hook.remove()
        states = captured[0][0, len(prompt):]  # (reply, hidden)
        pooled.append(states.mean(0))
        norms.append(states.norm(dim=-1).mean())
    expected = float((pooled[0] - pooled[1]).norm() / ((norms[0] + norms[1]) / 2))
    found = locate_toxic_layer(model, tok, item, variant="normalized")
    assert found.distances[-1] == pytest.approx(expected, rel=1e-4)
