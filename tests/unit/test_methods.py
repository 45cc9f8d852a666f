"""Single-layer edit methods (DINM, FT-L) and the cached-prefix forward they use, on tiny models."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from tiny import tiny_item, FAMILIES, tiny_model, tiny_tokenizer

import detoxedit.methods._tuning as tuning

from detoxedit.errors import ConfigError, DetoxeditError
from detoxedit.locate import Localisation
from detoxedit.methods import METHODS, applied, apply_deltas, build_method, restore_weights
from detoxedit.methods.base import GLOBAL, SCOPES, Edit
from detoxedit.methods._tuning import Objective, encode_example, frozen
from detoxedit.methods.base import weight_checksum
from detoxedit.methods.dinm import REFERENCE_SUFFIX, DINMConfig
from detoxedit.models import ChatFormat, generate_ids, get_adapter
from detoxedit.models.suffix import SuffixForward, layers_replaced

FAST = {"steps": 3, "lr": 1e-2, "max_input_tokens": 64}


make_item = tiny_item


def checksums(model: torch.nn.Module) -> dict[str, str]:
    return {name: weight_checksum(p) for name, p in model.state_dict().items()}


def quick(name: str, **extra) -> object:
    """A registered method with few steps when its config has the knobs (so new methods plug in)."""
    fields = {f.name for f in dataclasses.fields(METHODS.get(name).config_class)}
    values = {k: v for k, v in {**FAST, **extra}.items() if k in fields}
    return build_method(name, values)


# ------------------------------------------------------------------ invariants, every method


def produce(method, model, tok, item) -> Edit:
    """The method's edit through its lifecycle: `execute` per item, or `fit` on training items (global scope)."""
    method.prepare(model, tok, [item])
    return method.fit(model, tok, [item]) if method.scope == GLOBAL else method.execute(model, tok, item)


@pytest.mark.parametrize("name", METHODS.names())
@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_execute_leaves_every_weight_bit_identical(name, family):
    model, tok = tiny_model(family), tiny_tokenizer()
    before = checksums(model)
    grad_flags = [p.requires_grad for p in model.parameters()]
    edit = produce(quick(name), model, tok, make_item())
    assert checksums(model) == before
    assert [p.requires_grad for p in model.parameters()] == grad_flags
    assert all(p.grad is None for p in model.parameters())
    writable = set(quick(name).writes(model))
    assert set(edit.deltas) <= writable  # a method writes only where it declares (what the runner checksums)


@pytest.mark.parametrize("name", METHODS.names())
def test_every_method_declares_a_known_scope(name):
    cls = METHODS.get(name)
    assert cls.scope in SCOPES
    assert METHODS.canonical(cls.name) == name


@pytest.mark.parametrize("name", ["dinm", "ft-l"])
def test_apply_changes_only_the_target_matrix_and_restore_is_exact(name, tiny_llama):
    model, tok = tiny_llama
    edit = quick(name).execute(model, tok, make_item())
    (target,) = edit.deltas
    assert target == get_adapter(model).down_proj_name(edit.layer)
    assert edit.deltas[target].abs().max() > 0
    before = checksums(model)
    originals = apply_deltas(model, edit.deltas)
    after = checksums(model)
    assert {k for k in before if before[k] != after[k]} == {target}
    restore_weights(model, originals)
    assert checksums(model) == before


def test_record_has_layer_losses_and_info(tiny_llama):
    model, tok = tiny_llama
    edit = quick("dinm").execute(model, tok, make_item())
    assert len(edit.losses) == FAST["steps"] == edit.info["steps_run"]
    assert edit.losses[-1] < edit.losses[0]
    assert set(edit.info["loss_parts"][0]) == {"nll", "kl", "loss"}
    assert len(edit.info["distances"]) == get_adapter(model).num_layers
    assert edit.info["seconds"] > 0


# ------------------------------------------------------------------ the KL term


def _objective(model, tok, layer: int, kl_grad: bool) -> Objective:
    fmt, item = ChatFormat(tok), make_item()
    edit = encode_example(fmt, item.adversarial_prompt, item.safe_generation, 64, "edit")
    kc = encode_example(fmt, item.knowledge_constraint.prompt, item.knowledge_constraint.answer, 64, "kl")
    return Objective(model, get_adapter(model).down_proj_name(layer), layer, edit, kc, 0.1, 1.0, kl_grad)


def test_kl_term_has_a_gradient_in_faithful_mode_and_none_in_compat_mode(tiny_llama):
    model, tok = tiny_llama
    name = get_adapter(model).down_proj_name(2)
    torch.manual_seed(1)
    weight = dict(model.named_parameters())[name].detach() + 0.05 * torch.randn(32, 64)  # away from the KL minimum
    weight.requires_grad_(True)
    with frozen(model):
        faithful = _objective(model, tok, 2, kl_grad=True).parts(weight)
        (grad,) = torch.autograd.grad(faithful["kl"], [weight])
        assert faithful["kl"] > 0 and grad.abs().max() > 0
        compat = _objective(model, tok, 2, kl_grad=False).parts(weight)
    assert compat["kl"] == pytest.approx(faithful["kl"].item(), rel=1e-5)
    assert not compat["kl"].requires_grad  # computed under no_grad: it cannot move the weights


def test_kl_is_zero_before_the_first_step(tiny_llama):
    model, tok = tiny_llama
    edit = quick("dinm").execute(model, tok, make_item())
    assert edit.info["loss_parts"][0]["kl"] == pytest.approx(0.0, abs=1e-6)
    assert edit.info["loss_parts"][-1]["kl"] > 0


# ------------------------------------------------------------------ layer choice


@pytest.fixture()
def fake_locate(monkeypatch):
    """Localisation that returns item.id % num_layers, counting its calls."""
    calls = []

    def locate(model, tokenizer, item, *, variant, chat, max_input_tokens, keep_safe_row=False):
        calls.append((item.id, variant))
        n = get_adapter(model).num_layers
        return Localisation(int(item.id) % n, [float(i == int(item.id) % n) for i in range(n)], variant)

    monkeypatch.setattr(tuning, "locate_toxic_layer", locate)
    return calls


def test_faithful_mode_locates_each_item(tiny_llama, fake_locate):
    model, tok = tiny_llama
    method = quick("dinm")
    method.prepare(model, tok)
    layers = [method.execute(model, tok, make_item(i)).layer for i in (1, 2, 3)]
    assert layers == [1, 2, 3]
    assert [c[0] for c in fake_locate] == [1, 2, 3]


def test_compat_mode_reuses_the_first_items_layer_until_prepare(tiny_llama, fake_locate):
    model, tok = tiny_llama
    method = quick("dinm", easyedit_compat=True)
    method.prepare(model, tok)
    layers = [method.execute(model, tok, make_item(i)).layer for i in (1, 2, 3)]
    assert layers == [1, 1, 1]
    assert fake_locate == [(1, "easyedit")]
    method.prepare(model, tok)
    assert method.execute(model, tok, make_item(2)).layer == 2


def test_compat_mode_resumed_run_keeps_its_first_items_layer(tiny_llama, fake_locate):
    """A killed and resumed compat run must not re-locate on the first item it has left."""
    model, tok = tiny_llama
    method = quick("dinm", easyedit_compat=True)
    method.prepare(model, tok, finished=[{"item_id": 1, "layer": 1}, {"item_id": 2, "layer": 1}])
    assert method.execute(model, tok, make_item(3)).layer == 1
    assert fake_locate == []
    faithful = quick("dinm")
    faithful.prepare(model, tok, finished=[{"item_id": 1, "layer": 1}])
    assert faithful.execute(model, tok, make_item(3)).layer == 3


def test_compat_mode_uses_raw_prompts_and_the_reference_suffix(tiny_llama):
    model, tok = tiny_llama
    edit = quick("dinm", easyedit_compat=True).execute(model, tok, make_item())
    assert edit.info["chat_format"] == "raw"
    assert edit.info["suffix_system_prompt"] == REFERENCE_SUFFIX
    assert edit.info["easyedit_compat"] is True


def test_fixed_layer_skips_localisation_and_is_checked(tiny_llama, fake_locate):
    model, tok = tiny_llama
    assert quick("ft-l", layer=3).execute(model, tok, make_item(1)).layer == 3
    assert fake_locate == []
    with pytest.raises(DetoxeditError, match="layer 9 does not exist"):
        quick("dinm", layer=9).execute(model, tok, make_item())


# ------------------------------------------------------------------ errors and config


def test_nan_loss_names_item_and_step(tiny_llama):
    model, tok = tiny_llama
    before = checksums(model)
    with pytest.raises(DetoxeditError, match=r"item 7: loss is nan at step 1"):
        quick("dinm", lr=float("inf")).execute(model, tok, make_item(7))
    assert checksums(model) == before


@pytest.mark.parametrize("values", [{"steps": 0}, {"lr": -1.0}, {"locate_variant": "max"}, {"c_edit": 0.0},
                                    {"norm_constraint": 0.0}, {"chat_format": "fancy"}, {"layer": -1}, {"nope": 1}])
def test_bad_config_values_are_config_errors(values):
    with pytest.raises(ConfigError):
        build_method("dinm", values)


def test_config_fields_have_help():
    for cls in (DINMConfig, METHODS.get("ft-l").config_class):
        assert all(f.metadata.get("help") for f in dataclasses.fields(cls))


def test_norm_constraint_bounds_every_entry(tiny_llama):
    model, tok = tiny_llama
    edit = quick("ft-l", norm_constraint=1e-3, lr=1e-1).execute(model, tok, make_item())
    (delta,) = edit.deltas.values()
    assert delta.abs().max() <= 1e-3 + 1e-7
    assert delta.abs().max() >= 1e-3 * 0.99  # lr is large enough for the clamp to bind


def test_loss_threshold_stops_early(tiny_llama):
    model, tok = tiny_llama
    edit = quick("dinm", loss_threshold=1e9).execute(model, tok, make_item())
    assert edit.info["steps_run"] == 1 and not edit.deltas[next(iter(edit.deltas))].any()


# ------------------------------------------------------------------ cached-prefix forward


@pytest.mark.parametrize("family", FAMILIES)
def test_cached_prefix_loss_and_gradient_equal_the_full_model(family):
    model, tok = tiny_model(family), tiny_tokenizer()
    layer = 2
    name = get_adapter(model).down_proj_name(layer)
    torch.manual_seed(0)
    weight = (dict(model.named_parameters())[name].detach() * 1.1).requires_grad_(True)
    results = []
    with frozen(model):
        for fast in (True, False):
            objective = _objective(model, tok, layer, kl_grad=True)
            objective = dataclasses.replace(objective, fast_prefix=fast)
            parts = objective.parts(weight)
            (grad,) = torch.autograd.grad(parts["loss"], [weight])
            results.append((parts["loss"].detach(), grad))
    (fast_loss, fast_grad), (full_loss, full_grad) = results
    torch.testing.assert_close(fast_loss, full_loss, rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(fast_grad, full_grad, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("family", FAMILIES)
def test_fast_prefix_gives_the_same_deltas(family):
    model, tok = tiny_model(family), tiny_tokenizer()
    deltas = [quick("dinm", fast_prefix=fast, layer=2).execute(model, tok, make_item()).deltas for fast in (True, False)]
    (name,) = deltas[0]
    assert deltas[0][name].abs().max() > 0
    # The cached edited layer adds x @ (W' - W) to its cached output instead of summing afresh: equal
    # up to float rounding, which Adam's sign-like first steps can amplify in a few near-zero entries.
    assert relative_difference(deltas[0][name], deltas[1][name]) < 1e-4


def relative_difference(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / a.norm())


@pytest.mark.parametrize("family", FAMILIES)
def test_the_edited_layer_is_cached_when_it_is_additive(family):
    model, _ = tiny_model(family), tiny_tokenizer()
    ids = torch.tensor([[5, 6, 7, 8, 9]])
    name = get_adapter(model).down_proj_name(2)
    run = SuffixForward(model, 2, {"input_ids": ids, "attention_mask": torch.ones_like(ids)}, param_name=name)
    assert run.edited is not None  # every family here adds the MLP output to the residual stream
    weight = dict(model.named_parameters())[name].detach() * 1.3
    with torch.no_grad():
        full = SuffixForward(model, 2, {"input_ids": ids, "attention_mask": torch.ones_like(ids)}, enabled=False,
                             param_name=name).logits(3, weight)
        torch.testing.assert_close(run.logits(3, weight), full, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(run.logits(3), model(input_ids=ids).logits[:, -3:], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("family", FAMILIES)
def test_the_last_layers_mlp_runs_only_where_logits_are_kept(family):
    model = tiny_model(family)
    adapter = get_adapter(model)
    ids = torch.tensor([[5, 6, 7, 8, 9, 10, 11]])
    inputs = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    name = adapter.down_proj_name(1)
    weight = dict(model.named_parameters())[name].detach() * 1.3
    seen: list[int] = []
    handle = adapter.mlp(adapter.num_layers - 1).register_forward_hook(lambda m, a, out: seen.append(a[0].shape[1]))
    try:
        with torch.no_grad():
            got = SuffixForward(model, 1, inputs, param_name=name).predicting_logits(3, weight)
    finally:
        handle.remove()
    with torch.no_grad():
        full = SuffixForward(model, 1, inputs, enabled=False, param_name=name)
        full._keep_supported = False  # the plain path: every position through every layer
        expected = full.predicting_logits(3, weight)
    assert seen == [3]  # the three positions that predict the last three tokens
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)


def test_a_layer_with_a_norm_after_the_mlp_runs_whole():
    """Gemma 2 normalises the MLP output before adding it: not additive, so no edited-layer cache."""
    from transformers import Gemma2Config, Gemma2ForCausalLM

    torch.manual_seed(0)
    config = Gemma2Config(vocab_size=262, hidden_size=32, intermediate_size=64, num_hidden_layers=4, num_attention_heads=4,
                          num_key_value_heads=2, head_dim=8, max_position_embeddings=512)
    model = Gemma2ForCausalLM(config).eval()
    ids = torch.tensor([[5, 6, 7, 8, 9]])
    inputs = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    name = get_adapter(model).down_proj_name(2)
    run = SuffixForward(model, 2, inputs, param_name=name)
    assert run.edited is None and run.cached is not None  # the layers below are still cached
    weight = dict(model.named_parameters())[name].detach() * 1.3
    with torch.no_grad():
        full = SuffixForward(model, 2, inputs, enabled=False, param_name=name).logits(3, weight)
        torch.testing.assert_close(run.logits(3, weight), full, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", ["dinm", "ft-l"])
def test_reusing_the_localisation_pass_gives_bit_identical_deltas(name, tiny_llama, monkeypatch):
    model, tok = tiny_llama
    reused = quick(name).execute(model, tok, make_item())
    calls = []
    real = tuning.locate_toxic_layer

    def locate_without_states(*args, **kwargs):
        calls.append(kwargs.get("keep_safe_row"))
        return dataclasses.replace(real(*args, **kwargs), safe_row=None)

    monkeypatch.setattr(tuning, "locate_toxic_layer", locate_without_states)
    fresh = quick(name).execute(model, tok, make_item())
    assert calls == [True] and reused.layer == fresh.layer > 0
    (param,) = reused.deltas
    assert torch.equal(reused.deltas[param], fresh.deltas[param])


def test_the_localisation_pass_is_reused_only_for_the_same_sequence(tiny_llama):
    model, tok = tiny_llama
    from detoxedit.locate import locate_toxic_layer

    found = locate_toxic_layer(model, tok, make_item(), keep_safe_row=True)
    row = torch.tensor([found.safe_row.input_ids])
    assert found.safe_row.prefix_for(row, 2) is found.safe_row.layer_outputs[1]
    assert found.safe_row.prefix_for(row[:, :-1], 2) is None
    assert found.safe_row.prefix_for(row, 0) is None
    assert locate_toxic_layer(model, tok, make_item()).safe_row is None  # not kept unless asked


def test_real_layers_come_back_even_on_error(tiny_llama):
    model, _ = tiny_llama
    layers = get_adapter(model).layers
    originals = list(layers)
    with pytest.raises(RuntimeError, match="boom"):
        with layers_replaced(layers, 3, torch.zeros(1)):
            assert layers[0] is not originals[0]
            raise RuntimeError("boom")
    assert list(layers) == originals


def test_suffix_forward_at_layer_zero_is_the_full_forward(tiny_llama):
    model, _ = tiny_llama
    ids = torch.tensor([[5, 6, 7, 8]])
    inputs = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    with torch.no_grad():
        expected = model(**inputs).logits[:, -2:]
        got = SuffixForward(model, 0, inputs).logits(2)
    torch.testing.assert_close(got, expected)


# ------------------------------------------------------------------ GPT-2 (Conv1D) end to end


def test_gpt2_conv1d_end_to_end():
    model, tok = tiny_model("gpt2"), tiny_tokenizer()
    item = make_item()
    edit = quick("dinm", lr=5e-2, steps=5).execute(model, tok, item)
    (name,) = edit.deltas
    assert name.endswith("mlp.c_proj.weight")
    assert edit.deltas[name].shape == dict(model.named_parameters())[name].shape  # Conv1D layout (in, out)
    prompt = ChatFormat(tok).encode(item.adversarial_prompt)
    before = generate_ids(model, tok, [prompt], 8, progress=False)
    with applied(model, edit.deltas):
        after = generate_ids(model, tok, [prompt], 8, progress=False)
    assert generate_ids(model, tok, [prompt], 8, progress=False) == before
    assert after != before or edit.losses[-1] < edit.losses[0]
